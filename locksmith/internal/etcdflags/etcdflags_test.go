package etcdflags

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o644)
	for _, tc := range []struct {
		name string
		f    Flags
		want string
	}{
		{"password without user", Flags{Password: "p"}, "without -etcd-username"},
		{"cert without key", Flags{CertFile: "c.pem"}, "together"},
		{"bad endpoint", Flags{Endpoints: Endpoints{list: []string{"127.0.0.1:2379"}}}, "not an http"},
		{"TLS files with http", Flags{CAFile: notPEM}, "plain http"},
		{"CA file missing", Flags{Endpoints: Endpoints{list: []string{"https://127.0.0.1:1"}}, CAFile: filepath.Join(dir, "nope")}, "read -etcd-cafile"},
		{"CA file not PEM", Flags{Endpoints: Endpoints{list: []string{"https://127.0.0.1:1"}}, CAFile: notPEM}, "no PEM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.f.Config(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	f := Flags{Endpoints: Endpoints{list: []string{"https://127.0.0.1:1"}}}
	cfg, err := f.Config()
	if err != nil || cfg.TLS == nil || cfg.TLS.RootCAs != nil {
		t.Fatalf("https without a CA must use the system roots: %+v %v", cfg.TLS, err)
	}
}

func TestFlagsAndEnv(t *testing.T) {
	var f Flags
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs)
	if err := fs.Parse([]string{"-endpoint", "http://a:1,http://b:2", "-endpoint=http://c:3", "-etcd-username", "cli"}); err != nil {
		t.Fatal(err)
	}
	env := []string{"LOCKSMITHCTL_ENDPOINT=http://env:1", "LOCKSMITHCTL_ETCD_USERNAME=envuser", "LOCKSMITHCTL_ETCD_PASSWORD=pw", "OTHER_ETCD_CAFILE=x"}
	if err := SetFromEnv(fs, "LOCKSMITHCTL_", env); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Endpoints.List(), " "); got != "http://a:1 http://b:2 http://c:3" {
		t.Errorf("endpoints %q: the command line must win over the environment", got)
	}
	if f.Username != "cli" || f.Password != "pw" || f.CAFile != "" {
		t.Errorf("flags %+v", f)
	}
	var g Flags
	if got := g.Endpoints.List(); len(got) != 1 || got[0] != DefaultEndpoint {
		t.Errorf("default endpoints %v", got)
	}
}
