package etcdflags

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultEndpoint is used when no endpoint is given.
const DefaultEndpoint = "http://127.0.0.1:2379"

// MaxUnaryRetries bounds how often the client retries a read that failed as unavailable (etcd's
// default is 100, which turns a member without a leader into a wait of many seconds); a few
// retries are enough for the balancer to move to another member.
const MaxUnaryRetries = 3

// Endpoints is a repeatable, comma-separated list flag.
type Endpoints struct {
	list []string
	set  bool
}

func (e *Endpoints) String() string { return strings.Join(e.List(), ",") }

// Set adds endpoints; the first call replaces the default.
func (e *Endpoints) Set(v string) error {
	if !e.set {
		e.list, e.set = nil, true
	}
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			e.list = append(e.list, p)
		}
	}
	return nil
}

// List returns the endpoints, or the default.
func (e *Endpoints) List() []string {
	if len(e.list) == 0 {
		return []string{DefaultEndpoint}
	}
	return e.list
}

// Flags are the etcd connection flags.
type Flags struct {
	Endpoints                 Endpoints
	CAFile, CertFile, KeyFile string
	Username, Password        string
	DialTimeout               time.Duration
}

// Register adds the flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.Var(&f.Endpoints, "endpoint", "etcd endpoint (repeatable or comma-separated; default "+DefaultEndpoint+")")
	fs.StringVar(&f.CAFile, "etcd-cafile", f.CAFile, "CA certificate file that verifies the etcd server (CA-only TLS)")
	fs.StringVar(&f.CertFile, "etcd-certfile", f.CertFile, "client certificate file for etcd (mTLS; with -etcd-keyfile)")
	fs.StringVar(&f.KeyFile, "etcd-keyfile", f.KeyFile, "client key file for etcd (mTLS; with -etcd-certfile)")
	fs.StringVar(&f.Username, "etcd-username", f.Username, "etcd user name (password auth)")
	fs.StringVar(&f.Password, "etcd-password", f.Password, "etcd password (password auth)")
}

// Config builds the client config.
func (f *Flags) Config() (clientv3.Config, error) {
	eps := f.Endpoints.List()
	cfg := clientv3.Config{Endpoints: eps, DialTimeout: f.DialTimeout, Username: f.Username, Password: f.Password,
		Logger: zap.NewNop(), DialKeepAliveTime: 30 * time.Second, DialKeepAliveTimeout: 10 * time.Second,
		MaxUnaryRetries: MaxUnaryRetries}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if f.Password != "" && f.Username == "" {
		return cfg, errors.New("-etcd-password given without -etcd-username")
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return cfg, errors.New("give -etcd-certfile and -etcd-keyfile together (or neither)")
	}
	anyHTTPS := false
	for _, ep := range eps {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return cfg, fmt.Errorf("etcd endpoint %q is not an http:// or https:// URL", ep)
		}
		if u.Scheme == "https" {
			anyHTTPS = true
		} else if f.CAFile != "" || f.CertFile != "" {
			return cfg, fmt.Errorf("etcd endpoint %s is plain http but TLS files were given; use https://", ep)
		}
	}
	if !anyHTTPS {
		return cfg, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return cfg, fmt.Errorf("read -etcd-cafile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("-etcd-cafile %s holds no PEM certificate", f.CAFile)
		}
		tc.RootCAs = pool
	}
	if f.CertFile != "" {
		kp, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return cfg, fmt.Errorf("load the etcd client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	cfg.TLS = tc
	return cfg, nil
}

// Client connects. The connection is lazy: an unreachable etcd shows up at the first request.
func (f *Flags) Client() (*clientv3.Client, error) {
	cfg, err := f.Config()
	if err != nil {
		return nil, err
	}
	c, err := clientv3.New(cfg)
	if errors.Is(err, rpctypes.ErrAuthFailed) {
		return nil, fmt.Errorf("connect to etcd %s as %q: %w; check -etcd-username and -etcd-password", strings.Join(cfg.Endpoints, ","), cfg.Username, err)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return c, nil
}

// SetFromEnv sets every flag of fs that was not given on the command line from PREFIX_NAME in
// environ (KEY=VALUE entries), NAME being the flag name upper-cased with '-' as '_'. Flags given
// to any of also (flag sets parsed earlier from the same command line) count as given.
func SetFromEnv(fs *flag.FlagSet, prefix string, environ []string, also ...*flag.FlagSet) error {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	given := map[string]bool{}
	for _, set := range append([]*flag.FlagSet{fs}, also...) {
		set.Visit(func(f *flag.Flag) { given[f.Name] = true })
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		key := prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := env[key]; ok && !given[f.Name] && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment %s=%q: %w", key, v, e)
			}
		}
	})
	return err
}
