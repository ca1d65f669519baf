package locksmith_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
)

// client connects to endpoints with cfg's credentials and closes with the test.
func client(t *testing.T, cfg clientv3.Config, endpoints ...string) *clientv3.Client {
	t.Helper()
	cfg.Endpoints, cfg.DialTimeout, cfg.Logger = endpoints, time.Second, zap.NewNop()
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// silent listens on loopback and accepts connections without ever answering, as a member
// stopped with SIGSTOP does (the kernel completes the TCP handshake for it).
func silent(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + l.Addr().String()
}

// Each fault gives an *EtcdError naming the operation, the group and the cause, and the TLS or
// auth hint only where TLS or auth is the problem.
func TestEtcdErrorsSayWhatHappened(t *testing.T) {
	tlsEtcd := etcdtest.New(t, etcdtest.WithTLS())
	authEtcd := etcdtest.New(t, etcdtest.WithAuth("locksmith", "s3cret"))
	stopped := etcdtest.New(t)
	stoppedEP := stopped.Endpoints[0]
	stopped.Stop()
	plain := strings.Replace(tlsEtcd.Endpoints[0], "https://", "http://", 1)
	// A user without a role: clientv3.New authenticates it, then every request is denied (a
	// wrong password fails in clientv3.New already, before a store exists).
	if _, err := authEtcd.Client.UserAdd(t.Context(), "nobody", "pw"); err != nil {
		t.Fatal(err)
	}
	noRole := authEtcd.ClientConfig(t)
	noRole.Username, noRole.Password = "nobody", "pw"

	for _, tc := range []struct {
		name  string
		cli   func(t *testing.T) *clientv3.Client
		cause locksmith.Cause
		want  []string
		not   []string
	}{
		{"stopped etcd", func(t *testing.T) *clientv3.Client { return client(t, clientv3.Config{}, stoppedEP) },
			locksmith.CauseUnreachable, []string{"etcd unreachable at " + stoppedEP, "is etcd running"}, []string{"TLS", "password"}},
		{"silent member", func(t *testing.T) *clientv3.Client { return client(t, clientv3.Config{}, silent(t)) },
			locksmith.CauseTimeout, []string{"did not complete the request in time"}, []string{"TLS", "password"}},
		{"https without the CA", func(t *testing.T) *clientv3.Client { return client(t, clientv3.Config{}, tlsEtcd.Endpoints[0]) },
			locksmith.CauseTLS, []string{"TLS with etcd at " + tlsEtcd.Endpoints[0] + " failed", "-etcd-cafile"}, []string{"password"}},
		{"http to a TLS member", func(t *testing.T) *clientv3.Client { return client(t, clientv3.Config{}, plain) },
			locksmith.CauseTLS, []string{"TLS with etcd at " + plain, "https://"}, []string{"password"}},
		{"user without a role", func(t *testing.T) *clientv3.Client { return client(t, noRole, authEtcd.Endpoints[0]) },
			locksmith.CauseAuth, []string{"refused the credentials", "-etcd-password"}, []string{"TLS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := locksmith.NewStore(tc.cli(t), "", nil)
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			_, err := s.TryLock(ctx, "web", locksmith.Holder{ID: "m1"})
			var ee *locksmith.EtcdError
			if !errors.As(err, &ee) {
				t.Fatalf("TryLock: %v (%T), want an *EtcdError", err, err)
			}
			msg := err.Error()
			if ee.Cause != tc.cause || ee.Group != "web" || ee.Op == "" || !strings.Contains(msg, `group "web": `+ee.Op) {
				t.Fatalf("cause %v op %q group %q, want %v:\n%s", ee.Cause, ee.Op, ee.Group, tc.cause, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q:\n%s", w, msg)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(msg, w) {
					t.Errorf("message has the unlikely hint %q:\n%s", w, msg)
				}
			}
		})
	}
}

// A wait for a free slot that runs out says the group stayed full, not that etcd failed.
func TestLockGivesUpNamingTheGroup(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.TryLock(t.Context(), "g", holder("a")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := s.Lock(ctx, "g", holder("b"))
	var ee *locksmith.EtcdError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ee) || !strings.Contains(err.Error(), `group "g": gave up waiting for a free slot (1 of max 1 held`) {
		t.Fatalf("Lock on a full group until the deadline: %v", err)
	}
}
