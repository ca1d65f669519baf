package etcdtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a running embedded etcd server.
type Etcd struct {
	// Endpoints are the client URLs ("http://127.0.0.1:PORT" or "https://…").
	Endpoints []string
	// Client is connected with whatever credentials the options require.
	Client *clientv3.Client

	// CAFile verifies the server (set with WithTLS or WithMTLS).
	CAFile string
	// CertFile and KeyFile are a client certificate the server accepts (set with WithMTLS).
	CertFile, KeyFile string
	// Username and Password are the credentials (set with WithAuth).
	Username, Password string

	e       *embed.Etcd
	mu      sync.Mutex
	clients []*clientv3.Client
	stopped bool
}

type options struct {
	tls, mtls  bool
	user, pass string
}

// Option configures New.
type Option func(*options)

// WithTLS serves clients over TLS; clients need only the CA file (CAFile) to connect.
func WithTLS() Option { return func(o *options) { o.tls = true } }

// WithMTLS serves clients over TLS and requires a client certificate signed by the test CA.
func WithMTLS() Option { return func(o *options) { o.tls, o.mtls = true, true } }

// WithAuth enables etcd authentication with a root user of that name and password.
func WithAuth(user, password string) Option {
	return func(o *options) { o.user, o.pass = user, password }
}

// New starts an embedded etcd and returns it once it serves. It stops with the test.
func New(t testing.TB, opts ...Option) *Etcd {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	dir := t.TempDir()
	cfg := config(dir)
	scheme := "http"
	x := &Etcd{Username: o.user, Password: o.pass}
	if o.tls {
		scheme = "https"
		ca := newCA(t)
		x.CAFile = ca.write(t, dir, "ca.pem")
		cert, key := ca.issue(t, dir, "server", true)
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = cert, key
		if o.mtls {
			cfg.ClientTLSInfo.TrustedCAFile = x.CAFile
			cfg.ClientTLSInfo.ClientCertAuth = true
			x.CertFile, x.KeyFile = ca.issue(t, dir, "client", false)
		}
	}
	if err := x.start(cfg, scheme); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.Stop)
	if o.user != "" {
		x.enableAuth(t)
	}
	x.Client = x.NewClient(t)
	return x
}

// Start starts a plain-HTTP embedded etcd keeping its data in dir, with New's settings, for
// programs that are not tests (the fleet demo). Its Client is connected; Stop stops it.
func Start(dir string) (*Etcd, error) {
	x := &Etcd{}
	if err := x.start(config(dir), "http"); err != nil {
		return nil, err
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: x.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		x.Stop()
		return nil, fmt.Errorf("etcdtest: connect: %w", err)
	}
	x.clients = append(x.clients, c)
	x.Client = c
	return x, nil
}

// config is the embedded server's configuration: one member on 127.0.0.1 with ephemeral ports
// and fast elections, data in dir.
func config(dir string) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = filepath.Join(dir, "data")
	cfg.TickMs, cfg.ElectionMs = 10, 100
	cfg.BcryptCost = 4 // bcrypt's minimum: password checks stay fast under -race
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	return cfg
}

// start starts the server with client URLs of scheme and waits until it serves.
func (x *Etcd) start(cfg *embed.Config, scheme string) error {
	peer, _ := url.Parse("http://127.0.0.1:0")
	client, _ := url.Parse(scheme + "://127.0.0.1:0")
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcdtest: start embedded etcd: %w", err)
	}
	x.e = e
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcdtest: embedded etcd failed: %w", err)
	case <-time.After(30 * time.Second):
		e.Close()
		return errors.New("etcdtest: embedded etcd not ready after 30s")
	}
	for _, l := range e.Clients {
		x.Endpoints = append(x.Endpoints, scheme+"://"+l.Addr().String())
	}
	return nil
}

// ClientConfig returns a client config with the endpoints and every credential the server needs.
func (x *Etcd) ClientConfig(t testing.TB) clientv3.Config {
	t.Helper()
	cfg := clientv3.Config{
		Endpoints:   x.Endpoints,
		DialTimeout: 5 * time.Second,
		Username:    x.Username,
		Password:    x.Password,
		Logger:      zap.NewNop(),
	}
	if x.CAFile != "" {
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(x.CAFile)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			t.Fatalf("etcdtest: load CA %s: %v", x.CAFile, err)
		}
		cfg.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if x.CertFile != "" {
			kp, err := tls.LoadX509KeyPair(x.CertFile, x.KeyFile)
			if err != nil {
				t.Fatalf("etcdtest: load client certificate: %v", err)
			}
			cfg.TLS.Certificates = []tls.Certificate{kp}
		}
	}
	return cfg
}

// NewClient connects another client; it is closed before the server stops.
func (x *Etcd) NewClient(t testing.TB) *clientv3.Client {
	t.Helper()
	return x.Connect(t, x.ClientConfig(t))
}

// Connect opens a client with cfg (for tests that vary credentials); it is closed before the
// server stops.
func (x *Etcd) Connect(t testing.TB, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcdtest: connect: %v", err)
	}
	x.mu.Lock()
	x.clients = append(x.clients, c)
	x.mu.Unlock()
	return c
}

// Stop closes every client made here, then the server. It is safe to call more than once; tests
// call it to make etcd unreachable.
func (x *Etcd) Stop() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.stopped {
		return
	}
	x.stopped = true
	for _, c := range x.clients {
		c.Close()
	}
	x.e.Close()
}

func (x *Etcd) enableAuth(t testing.TB) {
	t.Helper()
	c, err := clientv3.New(x.ClientConfigNoAuth(t))
	if err != nil {
		t.Fatalf("etcdtest: connect to enable auth: %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := c.RoleAdd(ctx, "root"); err != nil {
		t.Fatalf("etcdtest: add root role: %v", err)
	}
	if _, err := c.UserAdd(ctx, x.Username, x.Password); err != nil {
		t.Fatalf("etcdtest: add user %s: %v", x.Username, err)
	}
	if _, err := c.UserGrantRole(ctx, x.Username, "root"); err != nil {
		t.Fatalf("etcdtest: grant root to %s: %v", x.Username, err)
	}
	if x.Username != "root" {
		if _, err := c.UserAdd(ctx, "root", x.Password); err != nil {
			t.Fatalf("etcdtest: add user root: %v", err)
		}
		if _, err := c.UserGrantRole(ctx, "root", "root"); err != nil {
			t.Fatalf("etcdtest: grant root: %v", err)
		}
	}
	if _, err := c.AuthEnable(ctx); err != nil {
		t.Fatalf("etcdtest: enable auth: %v", err)
	}
}

// Unreachable returns a client whose only endpoint is a loopback port nobody listens on, for
// tests of what happens when etcd cannot be reached. It is closed with the test.
func Unreachable(t testing.TB) *clientv3.Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + addr}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcdtest: client for %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ClientConfigNoAuth is ClientConfig without the user name and password.
func (x *Etcd) ClientConfigNoAuth(t testing.TB) clientv3.Config {
	cfg := x.ClientConfig(t)
	cfg.Username, cfg.Password = "", ""
	return cfg
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "etcdtest CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, der: der}
}

func (ca *testCA) write(t testing.TB, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// issue makes a leaf certificate (server: for 127.0.0.1 and localhost) and returns its files.
func (ca *testCA) issue(t testing.TB, dir, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
