package realboot

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// proxy is a TCP forwarder on 127.0.0.1 that counts the bytes it carries from the server to
// the guest and can slow them down, so that the walk can cut the power part-way through a
// download and see how much a resumed download fetched again.
type proxy struct {
	ln     net.Listener
	target string
	down   atomic.Int64 // bytes server → guest, all connections
	rate   atomic.Int64 // bytes per second server → guest per connection; 0: unlimited

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's "127.0.0.1:PORT".
func (p *proxy) Addr() string { return p.ln.Addr().String() }

// Down is the number of bytes carried to the guest so far.
func (p *proxy) Down() int64 { return p.down.Load() }

// SetRate limits each connection's server → guest bytes per second (0: no limit).
func (p *proxy) SetRate(bps int64) { p.rate.Store(bps) }

// Close stops accepting, cuts every connection and waits for the copiers.
func (p *proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
		}()
	}
}

func (p *proxy) handle(guest net.Conn) {
	defer guest.Close()
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	defer server.Close()
	p.track(guest, true)
	p.track(server, true)
	defer p.track(guest, false)
	defer p.track(server, false)
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(server, guest)
		if tc, ok := server.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		p.copyDown(guest, server)
		guest.Close()
		done <- struct{}{}
	}()
	<-done
	<-done
}

// copyDown copies server → guest in 32 KiB pieces, sleeping to keep to the rate.
func (p *proxy) copyDown(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	start, sent := time.Now(), int64(0)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			// Counted before the write, so Down never lags what the guest has.
			p.down.Add(int64(n))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
			if r := p.rate.Load(); r > 0 {
				due := time.Duration(float64(sent) / float64(r) * float64(time.Second))
				if wait := due - time.Since(start); wait > 0 {
					time.Sleep(wait)
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// waitDown waits until at least n bytes went to the guest.
func (p *proxy) waitDown(ctx context.Context, n int64, gone <-chan struct{}) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for p.Down() < n {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-gone:
			return errors.New("the machine stopped before the download got that far")
		case <-t.C:
		}
	}
	return nil
}
