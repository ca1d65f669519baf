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
	code := locksmithctl.Main(t.Context(), args, env, strings.NewReader(""), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func expect(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code || !strings.Contains(r.stdout+r.stderr, want) {
		t.Fatalf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", r.code, code, want, r.stdout, r.stderr)
	}
}

func TestCommands(t *testing.T) {
	e := etcdtest.New(t)
	ep := "-endpoint=" + strings.Join(e.Endpoints, ",")
	expect(t, run(t, nil, "set-max", "x", ep), 2, "want a number")
	expect(t, run(t, nil, "status", "-o", "yaml", ep), 2, "want text or json")
	expect(t, run(t, nil, "frobnicate"), 2, `unknown command "frobnicate"`)
	expect(t, run(t, nil, "--help"), 0, "send-need-reboot")
	expect(t, run(t, nil, "unlock", "--help"), 0, "--force")

	expect(t, run(t, nil, "set-max", "2", ep), 0, "Old-Max: 1\nMax: 2")
	expect(t, run(t, nil, "lock", "--id", "a", ep), 0, "Locked slot 0 of group default for a")
	expect(t, run(t, nil, ep, "lock", "--id=b"), 0, "Locked slot 1") // global flags before the command
	expect(t, run(t, nil, "lock", "--id", "c", ep), 1, "all reboot slots are taken")
	expect(t, run(t, nil, "lock", "--id", "a", ep), 0, "Locked slot 0") // re-lock by the holder

	r := run(t, nil, "status", ep)
	expect(t, r, 0, "Available: 0\nMax: 2")
	if !strings.Contains(r.stdout, "locksmithctl lock") || !strings.Contains(r.stdout, " b ") {
		t.Fatalf("status text:\n%s", r.stdout)
	}
	r = run(t, nil, "status", "-o", "json", ep)
	var st locksmithctl.StatusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Max != 2 || len(st.Holders) != 2 || st.Holders[0].ID != "a" || st.Holders[0].State != "locked" {
		t.Fatalf("status json %v: %s", err, r.stdout)
	}

	expect(t, run(t, nil, "unlock", "--id", "c", ep), 1, "c holds no slot")
	expect(t, run(t, nil, "unlock", "b", "--id", "c", ep), 1, "unlock --force b")
	expect(t, run(t, nil, "unlock", "--force", "b", "--id", "operator", ep), 0, "Unlocked b")
	expect(t, run(t, nil, "unlock", "--id", "a", ep), 0, "Unlocked a")
	expect(t, run(t, nil, "set-policy", "--lease-ttl", "90s", "--stale", "expire", ep), 0, "Lease-TTL: 1m30s\nStale: expire")
	expect(t, run(t, nil, "set-policy", "--stale", "expire", ep), 1, "needs a lease TTL")

	// Another group, chosen by flag or by the environment, is independent.
	expect(t, run(t, nil, "lock", "--id", "c", "-group", "lb", ep), 0, "group lb")
	env := []string{"LOCKSMITHCTL_ENDPOINT=" + e.Endpoints[0], "LOCKSMITHCTL_GROUP=lb", "LOCKSMITHCTL_ID=d"}
	expect(t, run(t, env, "lock"), 1, "all reboot slots are taken")
	expect(t, run(t, env, "lock", "-group", "default"), 0, "group default for d")
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
	cmd := "locksmithctl -endpoint " + e.Endpoints[0] + " -group default unlock --force gone-host"
	expect(t, r, 0, "1 holder(s) not seen for longer than 1h0m0s (--stale-after)")
	for _, want := range []string{"locked (STALE)", "Nothing frees a slot on its own", "\n  " + cmd + "\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Count(r.stdout, "(STALE)") != 1 {
		t.Errorf("want only gone-host flagged:\n%s", r.stdout)
	}
	var st locksmithctl.StatusJSON
	r = run(t, nil, "status", "-o", "json", ep)
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Holders) != 2 || st.StaleAfterSeconds != 3600 {
		t.Fatalf("status json %v: %s", err, r.stdout)
	}
	for _, h := range st.Holders {
		if stale := h.ID == "gone-host"; h.Stale != stale || (h.UnlockCommand == cmd) != stale || (h.UnseenSeconds >= 7200) != stale {
			t.Errorf("holder %s: stale %v unseen %ds command %q", h.ID, h.Stale, h.UnseenSeconds, h.UnlockCommand)
		}
	}
	expect(t, run(t, nil, "status", "--stale-after", "0", ep), 0, "Max: 2")
	if r := run(t, nil, "status", "--stale-after", "0", ep); strings.Contains(r.stdout, "STALE") {
		t.Errorf("--stale-after 0 still flags:\n%s", r.stdout)
	}
	expect(t, run(t, nil, "status", "--stale-after", "-1s", ep), 2, "want 0 or more")

	// Flagging freed nothing; the printed command does.
	args := strings.Fields(strings.TrimPrefix(cmd, "locksmithctl "))
	expect(t, run(t, nil, append(args, "--id", "operator")...), 0, "Unlocked gone-host")
	expect(t, run(t, nil, "status", ep), 0, "Available: 1")
}
