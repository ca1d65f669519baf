package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/store"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// bound is how long a test waits for the server to act before it fails: far beyond every
// shortened limit, so a loaded machine does not fail a test, yet a test cannot hang.
const bound = 20 * time.Second

// serveLimited runs Serve on 127.0.0.1 with the limits l and the connection cap maxConns.
func serveLimited(t *testing.T, l limits, maxConns int) (addr string, s *Server) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(t.Context(), filepath.Join(dir, "omahad.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err = New(t.Context(), Config{DB: db, StoreDir: filepath.Join(dir, "payloads"), MaxConnsPerClient: maxConns})
	if err != nil {
		t.Fatal(err)
	}
	s.limits = l
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String(), s
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitClosed reads c until the server answers and closes it, or bound passes (a failure).
func waitClosed(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(bound))
	b, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still holds the connection after %v (read %q)", bound, b)
	}
	return string(b)
}

// TestSlowBodies: connections that send an Omaha request body a byte at a time are closed once
// ReadTimeout passes, every one of them.
func TestSlowBodies(t *testing.T) {
	l := defaultLimits()
	l.read = 300 * time.Millisecond
	addr, _ := serveLimited(t, l, 0)
	const n = 40
	var wg sync.WaitGroup
	for i := range n {
		c := dial(t, addr)
		if _, err := io.WriteString(c, "POST /v1/update/ HTTP/1.1\r\nHost: omahad\r\nContent-Type: text/xml\r\nContent-Length: 4000\r\n\r\n<?xml"); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		wg.Go(func() { // one byte every 50 ms: 4000 bytes would take 200 s
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := c.Write([]byte{' '}); err != nil {
					return
				}
			}
		})
		t.Run(fmt.Sprint("conn", i), func(t *testing.T) {
			t.Parallel()
			defer close(stop)
			waitClosed(t, c)
		})
	}
	t.Cleanup(wg.Wait)
}

// TestConnCap: one client address holds at most the cap of connections; one more is answered
// 503 at once, and a slot freed by a closed connection serves again.
func TestConnCap(t *testing.T) {
	const max = 3
	addr, _ := serveLimited(t, defaultLimits(), max)
	var held []net.Conn
	for range max {
		held = append(held, dial(t, addr)) // connected, silent: each holds a slot
	}
	// The server counts a connection when it accepts it; a request on the last one proves
	// all of them were accepted.
	if _, err := io.WriteString(held[max-1], "GET /healthz HTTP/1.1\r\nHost: omahad\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	held[max-1].SetReadDeadline(time.Now().Add(bound))
	if resp, err := http.ReadResponse(bufio.NewReader(held[max-1]), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a connection under the cap: %v %v", resp, err)
	}
	if got := waitClosed(t, dial(t, addr)); !strings.HasPrefix(got, "HTTP/1.1 503 ") || !strings.Contains(got, "too many connections") {
		t.Fatalf("a connection over the cap got %q", got)
	}

	held[0].Close()
	deadline := time.Now().Add(bound)
	for {
		c := dial(t, addr)
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: omahad\r\nConnection: close\r\n\r\n")
		got := waitClosed(t, c)
		if strings.HasPrefix(got, "HTTP/1.1 200 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection served after one of %d was closed: %q", max, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUploadLimits: a payload upload runs as long as it keeps moving, past ReadTimeout and
// WriteTimeout, and is cut once it stalls.
func TestUploadLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stall   time.Duration
		stallAt int    // the body stops after this many of its 10 bytes; -1 = never
		want    string // in the answer
		wantNot string
	}{
		{name: "stalled", stall: 300 * time.Millisecond, stallAt: 3, want: "reading the upload"},
		// The whole body arrived: the server judged it (not a payload) and answered.
		{name: "moving", stall: 5 * time.Second, stallAt: -1, want: "payload rejected", wantNot: "reading the upload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := defaultLimits()
			l.read, l.write, l.stall = 200*time.Millisecond, 200*time.Millisecond, tc.stall
			addr, s := serveLimited(t, l, 0)
			token := adminApp(t, s)
			c := dial(t, addr)
			fmt.Fprintf(c, "POST /api/v1/apps/%s/packages HTTP/1.1\r\nHost: omahad\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nConnection: close\r\nContent-Length: 10\r\n\r\n", payload.DefaultAppID, token)
			for i := range 10 { // 10 bytes over 1 s: five times ReadTimeout
				if i == tc.stallAt {
					break
				}
				time.Sleep(100 * time.Millisecond)
				if _, err := c.Write([]byte{'x'}); err != nil {
					t.Fatal(err)
				}
			}
			got := waitClosed(t, c)
			if !strings.Contains(got, tc.want) || tc.wantNot != "" && strings.Contains(got, tc.wantNot) {
				t.Fatalf("answer %q: want %q", got, tc.want)
			}
		})
	}
}

// adminApp creates the default app on s and returns an admin token.
func adminApp(t *testing.T, s *Server) string {
	t.Helper()
	token, _, err := s.db.CreateToken(t.Context(), store.RoleAdmin, "test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	trust, err := payloadtest.TrustRoot(t, 1, 0, payloadtest.NewKey(t, "")).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.CreateApp(t.Context(), store.App{ID: payload.DefaultAppID, Name: "test", Trust: trust}, time.Now()); err != nil {
		t.Fatal(err)
	}
	return token
}
