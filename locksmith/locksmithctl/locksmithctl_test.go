package locksmithctl_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
	"github.com/twinslot/twinslot/locksmith/locksmithctl"
	"github.com/twinslot/twinslot/locksmith/reboot"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/dbustest"
)

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := locksmithctl.Run(t.Context(), args, env, cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb})
	return result{code, out.String(), errb.String()}
}

func expect(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code || !strings.Contains(r.stdout+r.stderr, want) {
		t.Fatalf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", r.code, code, want, r.stdout, r.stderr)
	}
}

// TestCommands runs locksmithctl command lines, as CoreOS users type them, in order against one
// embedded etcd: each row is one invocation, its exit code and what it prints.
func TestCommands(t *testing.T) {
	e := etcdtest.New(t)
	eps := strings.Join(e.Endpoints, ",")
	ep := "-endpoint=" + eps
	// A dead endpoint first in the list: the client moves on to the live one.
	twoEps := "-endpoint=http://127.0.0.1:1," + eps
	envA := []string{"LOCKSMITHCTL_ENDPOINT=" + eps, "LOCKSMITHCTL_ID=a"}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		// stdout is the whole standard output when exact, else a part of stdout+stderr.
		stdout string
		exact  bool
	}{
		// Bad command lines change nothing and exit 2.
		{name: "set-max not a number", args: []string{"set-max", "x", ep}, code: 2, stdout: "want a number"},
		{name: "-o yaml", args: []string{"status", "-o", "yaml", ep}, code: 2, stdout: "want text or json"},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stdout: `unknown command "frobnicate"`},
		{name: "two ids", args: []string{"lock", "a", "b", ep}, code: 2, stdout: "at most one machine id"},
		{name: "unlock two ids", args: []string{"unlock", "a", "--force", "b", ep}, code: 2, stdout: "two machine ids"},
		{name: "bad env flag", env: []string{"LOCKSMITHCTL_TIMEOUT=soon"}, args: []string{"status"}, code: 2, stdout: "LOCKSMITHCTL_TIMEOUT"},

		{name: "help", args: []string{"--help"}, code: 0, stdout: "send-need-reboot"},
		{name: "-help after the command", args: []string{"unlock", "-help"}, code: 0, stdout: "Usage: locksmithctl unlock [ID]"},
		{name: "-version", args: []string{"-version"}, code: 0, stdout: "locksmithctl version "},
		{name: "-version after the command", args: []string{"status", "-version"}, code: 0, stdout: "locksmithctl version "},

		{name: "empty status", args: []string{"status", ep}, stdout: "Available: 1\nMax: 1\n", exact: true},
		{name: "set-max", args: []string{ep, "set-max", "2"}, stdout: "Old-Max: 1\nMax: 2\n", exact: true},
		{name: "lock another machine", args: []string{"-endpoint", eps, "lock", "b"}, stdout: "Locked slot 0 of group default for b"},
		{name: "lock this machine (environment)", env: envA, args: []string{"lock"}, stdout: "Locked slot 1 of group default for a"},
		{name: "group full", args: []string{"lock", "c", ep}, code: 1, stdout: "all reboot slots are taken"},
		{name: "re-lock by the holder", args: []string{"lock", ep, "--id", "a"}, stdout: "Locked slot 1"},
		{name: "status as CoreOS", args: []string{twoEps, "status"}, stdout: "Available: 0\nMax: 2\n\nMACHINE ID\na\nb\n", exact: true},
		{name: "status -debug", args: []string{"-debug", "status", ep}, stdout: "locksmithctl: debug: group \"default\", endpoints " + eps},
		{name: "status --long", args: []string{"status", "--long", ep}, stdout: "locksmithctl lock"},
		{name: "unlock a machine that holds nothing", args: []string{"unlock", "c", ep}, code: 1, stdout: "c holds no slot"},
		// An operator frees a dead host's slot by its id, as with CoreOS: no --force.
		{name: "unlock another machine", args: []string{"unlock", "b", ep, "--id", "operator"}, stdout: "Unlocked b in group default"},
		{name: "unlock this machine (environment)", env: envA, args: []string{"unlock"}, stdout: "Unlocked a"},
		{name: "unlock --force (deprecated spelling)", args: []string{"unlock", "--force", "a", ep}, code: 1, stdout: "a holds no slot"},
		{name: "set-policy", args: []string{"set-policy", "--lease-ttl", "90s", "--stale", "expire", ep}, stdout: "Lease-TTL: 1m30s\nStale: expire\n", exact: true},
		{name: "set-policy expire without a TTL", args: []string{"set-policy", "--stale", "expire", ep}, code: 1, stdout: "needs a lease TTL"},

		// Another group, by flag or by the environment, is independent.
		{name: "lock in group lb", args: []string{"-group", "lb", "lock", "c", ep}, stdout: "group lb"},
		{name: "group lb full (environment)", env: []string{"LOCKSMITHCTL_ENDPOINT=" + eps, "LOCKSMITHCTL_GROUP=lb"}, args: []string{"lock", "d"}, code: 1, stdout: "all reboot slots are taken"},
		{name: "the flag wins over the environment", env: []string{"LOCKSMITHCTL_ENDPOINT=" + eps, "LOCKSMITHCTL_GROUP=lb"}, args: []string{"lock", "d", "-group", "default"}, stdout: "group default for d"},
		{name: "status of lb", args: []string{"status", "-group=lb", ep}, stdout: "Available: 0\nMax: 1\n\nMACHINE ID\nc\n", exact: true},

		// --json, before or after the command, for every command that changes something.
		{name: "lock --json", args: []string{"--json", "lock", "e", ep}, stdout: "{\n  \"group\": \"default\",\n  \"id\": \"e\",\n  \"slot\": 1\n}\n", exact: true},
		{name: "unlock --json", args: []string{"unlock", "e", ep, "-json"}, stdout: `"id": "e"`},
		{name: "set-max --json", args: []string{"set-max", "3", "--json", ep}, stdout: `"old_max": 2`},
		{name: "-o json still works", args: []string{"status", "-o", "json", ep}, stdout: "-o json is deprecated; use --json"},
	} {
		r := run(t, tc.env, tc.args...)
		if tc.exact {
			if r.code != tc.code || r.stdout != tc.stdout {
				t.Errorf("%s: locksmithctl %q: exit %d, want %d\nstdout %q\nwant   %q\nstderr: %s", tc.name, tc.args, r.code, tc.code, r.stdout, tc.stdout, r.stderr)
			}
			continue
		}
		if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.stdout) {
			t.Errorf("%s: locksmithctl %q: exit %d, want %d with %q\nstdout: %s\nstderr: %s", tc.name, tc.args, r.code, tc.code, tc.stdout, r.stdout, r.stderr)
		}
	}

	// status --json, for scripts.
	r := run(t, nil, "status", "--json", ep)
	var st locksmithctl.StatusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Max != 3 || len(st.Holders) != 1 || st.Holders[0].ID != "d" || st.Holders[0].State != "locked" {
		t.Fatalf("status json %v: %s", err, r.stdout)
	}
}

func TestCredentialsEachOnTheirOwn(t *testing.T) {
	short := "-timeout=3s"
	t.Run("CA-only TLS", func(t *testing.T) {
		e := etcdtest.New(t, etcdtest.WithTLS())
		ep := "-endpoint=" + e.Endpoints[0]
		expect(t, run(t, nil, "status", ep, short), 1, "TLS with etcd at")
		expect(t, run(t, nil, "status", ep, "-etcd-cafile", e.CAFile), 0, "Max: 1")
		expect(t, run(t, []string{"LOCKSMITHCTL_ETCD_CAFILE=" + e.CAFile}, "lock", "--id", "a", ep), 0, "Locked")
	})
	t.Run("mTLS", func(t *testing.T) {
		e := etcdtest.New(t, etcdtest.WithMTLS())
		ep := "-endpoint=" + e.Endpoints[0]
		expect(t, run(t, nil, "status", ep, short, "-etcd-cafile", e.CAFile), 1, "TLS with etcd at")
		expect(t, run(t, nil, "status", ep, "-etcd-cafile", e.CAFile, "-etcd-certfile", e.CertFile), 1, "together")
		expect(t, run(t, nil, "status", ep, "-etcd-cafile", e.CAFile, "-etcd-certfile", e.CertFile, "-etcd-keyfile", e.KeyFile), 0, "Max: 1")
	})
	t.Run("password auth", func(t *testing.T) {
		e := etcdtest.New(t, etcdtest.WithAuth("locksmith", "s3cret"))
		ep := "-endpoint=" + e.Endpoints[0]
		expect(t, run(t, nil, "lock", "--id", "a", ep, short), 1, "")
		expect(t, run(t, nil, "lock", "--id", "a", ep, short, "-etcd-username", "locksmith", "-etcd-password", "wrong"), 1, "authentication failed")
		env := []string{"LOCKSMITHCTL_ETCD_USERNAME=locksmith", "LOCKSMITHCTL_ETCD_PASSWORD=s3cret"}
		expect(t, run(t, env, "lock", "--id", "a", ep), 0, "Locked")
	})
}

func TestSendNeedRebootAndReboot(t *testing.T) {
	bus := dbustest.New(t)
	env := []string{"DBUS_SYSTEM_BUS_ADDRESS=" + bus.Addr}
	// locksmithd's own subscription sees the signal.
	sub, err := reboot.UpdatedOverDBus(bus.Conn(t)).Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, run(t, env, "send-need-reboot"), 0, "Sent")
	select {
	case s := <-sub:
		if s.Status == nil || s.Status.CurrentOperation != dbusapi.OpUpdatedNeedReboot {
			t.Fatalf("signal %+v", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no StatusUpdate received")
	}

	e := etcdtest.New(t)
	ep := "-endpoint=" + e.Endpoints[0]
	fake := dbustest.ExportLogind(t, bus.Conn(t))
	store := locksmith.NewStore(e.Client, "", nil)

	fake.FailWith("org.freedesktop.DBus.Error.AccessDenied")
	expect(t, run(t, env, "reboot", "--id", "m1", ep), 1, "the slot was released")
	if st, _ := store.State(t.Context(), "default"); len(st.Slots) != 0 {
		t.Fatalf("slot kept after a refused reboot: %+v", st.Slots)
	}
	fake.FailWith("")
	expect(t, run(t, env, "reboot", "--id", "m1", ep), 0, "rebooting")
	if _, err := store.Held(t.Context(), "default", "m1"); err != nil || fake.Reboots() != 1 {
		t.Fatalf("after reboot: %v, %d reboots", err, fake.Reboots())
	}
	expect(t, run(t, env, "reboot", "--id", "m2", ep), 1, "all reboot slots are taken")
	if fake.Reboots() != 1 {
		t.Fatal("rebooted without a slot")
	}
}

// A holder not seen for longer than --stale-after is flagged with the exact command that frees
// it; nothing is freed on its own, and running the printed command frees it.
func TestStatusFlagsUnseenHolders(t *testing.T) {
	e := etcdtest.New(t)
	ep := "-endpoint=" + e.Endpoints[0]
	expect(t, run(t, nil, "set-max", "2", ep), 0, "Max: 2")
	twoHoursAgo := func() time.Time { return time.Now().Add(-2 * time.Hour) }
	if _, err := locksmith.NewStore(e.Client, "", twoHoursAgo).TryLock(t.Context(), "default", locksmith.Holder{ID: "gone-host"}); err != nil {
		t.Fatal(err)
	}
	expect(t, run(t, nil, "lock", "--id", "fresh", ep), 0, "Locked")

	r := run(t, nil, "status", ep)
	cmd := "locksmithctl -endpoint " + e.Endpoints[0] + " -group default unlock gone-host"
	expect(t, r, 0, "1 holder(s) not seen for longer than 1h0m0s (--stale-after)")
	// stdout stays CoreOS's; the warning and the command are on stderr.
	if r.stdout != "Available: 0\nMax: 2\n\nMACHINE ID\nfresh\ngone-host\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	for _, want := range []string{"Nothing frees a slot on its own", "\n  " + cmd + "\n"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("status lacks %q on stderr:\n%s", want, r.stderr)
		}
	}
	if r := run(t, nil, "status", "--long", ep); strings.Count(r.stdout, "(STALE)") != 1 || !strings.Contains(r.stdout, "locked (STALE)") {
		t.Errorf("want only gone-host flagged:\n%s", r.stdout)
	}
	var st locksmithctl.StatusJSON
	r = run(t, nil, "status", "--json", ep)
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Holders) != 2 || st.StaleAfterSeconds != 3600 {
		t.Fatalf("status json %v: %s", err, r.stdout)
	}
	for _, h := range st.Holders {
		if stale := h.ID == "gone-host"; h.Stale != stale || (h.UnlockCommand == cmd) != stale || (h.UnseenSeconds >= 7200) != stale {
			t.Errorf("holder %s: stale %v unseen %ds command %q", h.ID, h.Stale, h.UnseenSeconds, h.UnlockCommand)
		}
	}
	expect(t, run(t, nil, "status", "--stale-after", "0", ep), 0, "Max: 2")
	if r := run(t, nil, "status", "--long", "--stale-after", "0", ep); strings.Contains(r.stdout+r.stderr, "STALE") || r.stderr != "" {
		t.Errorf("--stale-after 0 still flags:\n%s", r.stdout)
	}
	expect(t, run(t, nil, "status", "--stale-after", "-1s", ep), 2, "want 0 or more")

	// Flagging freed nothing; the printed command does.
	args := strings.Fields(strings.TrimPrefix(cmd, "locksmithctl "))
	expect(t, run(t, nil, args...), 0, "Unlocked gone-host")
	expect(t, run(t, nil, "status", ep), 0, "Available: 1")
}
