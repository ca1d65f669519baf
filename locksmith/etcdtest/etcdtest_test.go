package etcdtest_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/twinslot/twinslot/locksmith/etcdtest"
)

func TestCredentials(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []etcdtest.Option
		// strip removes one credential; the request must then fail.
		strip func(*clientv3.Config)
	}{
		{name: "tls without CA fails", opts: []etcdtest.Option{etcdtest.WithTLS()},
			strip: func(c *clientv3.Config) { c.TLS = &tls.Config{MinVersion: tls.VersionTLS12} }},
		{name: "mtls without client cert fails", opts: []etcdtest.Option{etcdtest.WithMTLS()},
			strip: func(c *clientv3.Config) { c.TLS.Certificates = nil }},
		{name: "auth with wrong password fails", opts: []etcdtest.Option{etcdtest.WithAuth("locksmith", "s3cret")},
			strip: func(c *clientv3.Config) { c.Password = "wrong" }},
		{name: "plain", strip: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := etcdtest.New(t, tc.opts...)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if _, err := e.Client.Put(ctx, "k", "v"); err != nil {
				t.Fatalf("put with full credentials: %v", err)
			}
			if tc.strip == nil {
				return
			}
			cfg := e.ClientConfig(t)
			tc.strip(&cfg)
			cfg.DialTimeout = time.Second
			c, err := clientv3.New(cfg)
			if err == nil {
				defer c.Close()
				sctx, scancel := context.WithTimeout(t.Context(), 2*time.Second)
				defer scancel()
				_, err = c.Get(sctx, "k")
			}
			if err == nil {
				t.Fatal("request without the credential succeeded")
			}
		})
	}
}

func TestStopTwice(t *testing.T) {
	e := etcdtest.New(t)
	e.Stop()
	e.Stop() // must not panic; cleanup calls it a third time
}

// TestStart: the starter for programs serves on loopback, keeps its data where it was told,
// and is unreachable after Stop.
func TestStart(t *testing.T) {
	dir := t.TempDir()
	e, err := etcdtest.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	if len(e.Endpoints) != 1 || !strings.HasPrefix(e.Endpoints[0], "http://127.0.0.1:") {
		t.Fatalf("endpoints %v, want one on http://127.0.0.1", e.Endpoints)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := e.Client.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "member")); err != nil {
		t.Fatalf("no data in %s: %v", dir, err)
	}
	e.Stop()
	e.Stop() // twice is fine
	c, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sctx, scancel := context.WithTimeout(t.Context(), time.Second)
	defer scancel()
	if _, err := c.Get(sctx, "k"); err == nil {
		t.Fatal("etcd still answers after Stop")
	}
}
