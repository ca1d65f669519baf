package realboot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/testimages/mkimage"
	"github.com/twinslot/twinslot/testimages/uefivm"
	"github.com/twinslot/twinslot/tools/payloadcmd"
	"github.com/twinslot/twinslot/tools/releasectl"
)

// The versions the walk builds, and their security versions (the anti-rollback floor).
const (
	V1, V2, V3       = "1.0.0", "1.0.1", "1.0.2"
	sec1, sec2, sec3 = 1, 2, 3
	// Group is the host's track on the server (a channel) and Lock its locksmith group.
	Group = "stable"
	Lock  = "e2e"
	// The guest reaches the server and etcd only through these guestfwd addresses.
	guestServer = "10.0.2.100:80"
	guestEtcd   = "10.0.2.101:2379"
)

// Options configure a walk.
type Options struct {
	// Dir keeps everything: images, the database, payloads, and every boot's console log.
	Dir string
	// Bin holds the guest's binaries (updated, updatectl, locksmithd, locksmithctl), static.
	Bin string
	// GrubEFI is the BOOTX64.EFI with the gptprio module (partition/grub/build.sh).
	GrubEFI string
	// Cache is where mkimage os keeps its bootstrap ("" = its default).
	Cache string
	// Filler is the size of v2's incompressible filler: what the cut download fetches.
	Filler int64
	// Rate limits payload bytes to the guest (bytes/s) so the power cut lands mid-download.
	Rate int64
	// BootTimeout bounds each boot; Timeout the whole walk.
	BootTimeout, Timeout time.Duration
	// KVM uses /dev/kvm when it works.
	KVM bool
	// Out receives the progress of the walk (for people).
	Out io.Writer
}

func (o *Options) defaults() {
	if o.Filler == 0 {
		o.Filler = 96 << 20
	}
	if o.Rate == 0 {
		o.Rate = 6 << 20
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 12 * time.Minute
	}
	if o.Timeout == 0 {
		o.Timeout = 50 * time.Minute
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
}

// walk is one run.
type walk struct {
	o     Options
	start time.Time
	log   *slog.Logger

	etcd   *etcdtest.Etcd
	locks  *locksmith.Store
	admin  *admin.Client
	url    string // omahad, on the host
	token  string
	proxy  *proxy
	etcdFw *proxy

	disk, tpmDir string
	key, trust   string
	payloads     map[string]string // version → signed payload file
	usr          map[string]string // version → usr.img
	machineID    string

	boots  []*Boot
	checks []Check
}

// Run builds the images, starts omahad and etcd on loopback, and walks a UEFI VM through a
// cut download, an update, and a broken update that rolls back, checking each step from
// outside. The report says what happened; err is set only when the walk could not run.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	w := &walk{o: o, start: time.Now(), payloads: map[string]string{}, usr: map[string]string{}}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(o.Dir, "host.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	w.log = slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))

	if err := w.setup(ctx); err != nil {
		return nil, err
	}
	defer w.teardown()
	err = w.run(ctx)
	return w.report(err), nil
}

func (w *walk) say(format string, args ...any) {
	fmt.Fprintf(w.o.Out, "[%6s] %s\n", time.Since(w.start).Round(time.Second), fmt.Sprintf(format, args...))
}

// check records one verification made from outside the guest.
func (w *walk) check(step, what string, err error) error {
	c := Check{Step: step, What: what, OK: err == nil}
	if err != nil {
		c.Detail = err.Error()
		w.say("FAIL %s: %s: %v", step, what, err)
	} else {
		w.say("ok   %s: %s", step, what)
	}
	w.checks = append(w.checks, c)
	return err
}

func (w *walk) setup(ctx context.Context) error {
	w.say("omahad (SQLite) and etcd on 127.0.0.1; files in %s", w.o.Dir)
	var err error
	if w.etcd, err = etcdtest.Start(filepath.Join(w.o.Dir, "etcd")); err != nil {
		return err
	}
	w.locks = locksmith.NewStore(w.etcd.Client, "", nil)
	if err := w.startServer(ctx); err != nil {
		return err
	}
	etcdAddr := strings.TrimPrefix(w.etcd.Endpoints[0], "http://")
	if w.etcdFw, err = newProxy(etcdAddr); err != nil {
		return err
	}
	w.say("guest sees omahad at http://%s (→ %s) and etcd at http://%s (→ %s)", guestServer, w.proxy.Addr(), guestEtcd, etcdAddr)
	return nil
}

func (w *walk) teardown() {
	if w.proxy != nil {
		w.proxy.Close()
	}
	if w.etcdFw != nil {
		w.etcdFw.Close()
	}
	if w.etcd != nil {
		w.etcd.Stop()
	}
}

// startServer runs omahad in this process on SQLite; hosts are told to download from the
// guest-side address, which the proxy carries to it.
func (w *walk) startServer(ctx context.Context) error {
	db, err := store.Open(ctx, filepath.Join(w.o.Dir, "omahad.db"))
	if err != nil {
		return err
	}
	srv, err := server.New(ctx, server.Config{DB: db, StoreDir: filepath.Join(w.o.Dir, "payloads"),
		PublicURL: "http://" + strings.TrimSuffix(guestServer, ":80"), Logger: w.log.With("component", "omahad")})
	if err != nil {
		db.Close()
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.Serve(ctx, ln, 5*time.Second)
	w.url = "http://" + ln.Addr().String()
	if w.token, _, err = db.CreateToken(ctx, store.RoleAdmin, "e2e-boot", time.Now()); err != nil {
		return err
	}
	if w.admin, err = admin.NewClient(w.url, w.token, nil); err != nil {
		return err
	}
	w.proxy, err = newProxy(ln.Addr().String())
	return err
}

// run is the walk itself: steps a–d of the real-boot test.
func (w *walk) run(ctx context.Context) error {
	if err := w.build(ctx); err != nil {
		return err
	}
	if err := w.publish(ctx, V2); err != nil {
		return err
	}

	// a + b: v1 boots from USR-A; the host streams v2 into USR-B; the power is cut part-way.
	b1, err := w.boot(ctx, "v1 boots; v2 download cut by a power failure")
	if err != nil {
		return err
	}
	r, err := b1.con.waitReport(ctx, "v1 running with updated and locksmithd", b1.run.Done(), func(r map[string]string) bool {
		return r["updated"] == "active" && r["locksmithd"] == "active"
	})
	w.note(b1, r)
	w.check("a", "v1 boots from USR-A under our GRUB; updated and locksmithd active under systemd", all(err,
		expect("GRUB slot", b1.con.GrubSlot(), "a"), expect("version", r["version"], V1), expect("/usr", r["usr"], "/dev/vda3"),
		expect("/usr mount", r["usr_opts"], "ro"), expect("initrd marker", r["marker"], marker(V1))))
	if r != nil {
		w.machineID = r["machine"]
	}
	before := w.proxy.Down()
	w.proxy.SetRate(w.o.Rate)
	// The cut must land while v2's own bytes are being fetched and written: the install first
	// copies what USR-A already has (most of the image), then fetches the rest, mostly the
	// filler. Once the fetch is flowing (the proxy carried more than the envelope), the walk
	// waits until the agent reports cutStep percent more of the image in place than it did
	// then, so that fetched chunks are on the disk when the power goes. (The proxy's count
	// alone would not do: the sockets on the way buffer tens of MiB.)
	w.say("waiting until v2's fetch is under way and %.0f%% more of the image is in place, then cutting the power", cutStep)
	if err := w.proxy.waitDown(ctx, before+8<<20, b1.run.Done()); err != nil {
		return w.check("b", "the download of v2 is under way", err)
	}
	var p0 float64
	r, err = b1.con.waitReport(ctx, "a progress report once the fetch flows", b1.run.Done(), func(r map[string]string) bool {
		p, perr := strconv.ParseFloat(r["progress"], 64)
		p0 = p
		return perr == nil && r["op"] == "UPDATE_STATUS_DOWNLOADING"
	})
	if err == nil {
		r, err = b1.con.waitReport(ctx, "the fetch of v2 to progress", b1.run.Done(), func(r map[string]string) bool {
			p, _ := strconv.ParseFloat(r["progress"], 64)
			return r["op"] != "UPDATE_STATUS_DOWNLOADING" || p >= p0+cutStep
		})
	}
	if err == nil && r["op"] != "UPDATE_STATUS_DOWNLOADING" {
		err = fmt.Errorf("the install of v2 ended (%s) before the cut", r["op"])
	}
	if err != nil {
		return w.check("b", "the power cut lands mid-download", err)
	}
	cutAt := r["progress"]
	b1.run.Kill()
	<-b1.run.Done()
	b1.Fetched = w.proxy.Down() - before
	b1.Note = fmt.Sprintf("power cut at %s%% of v2's install", cutAt)
	w.finish(b1, "")
	w.check("b", "after the cut USR-A still boots next and USR-B is unbootable", w.expectSlots(
		slotWant{"USR-A", 1, -1, true}, slotWant{"USR-B", 0, -1, false}))

	// b (continued) + c: v1 again, the download resumes, the host takes the lock and reboots.
	b2, err := w.boot(ctx, "v1 again: the download resumes, v2 is installed, locksmithd reboots")
	if err != nil {
		return err
	}
	mark := w.proxy.Down()
	if err := w.waitExit(ctx, b2); err != nil {
		return err
	}
	b2.Fetched = w.proxy.Down() - mark
	w.finish(b2, "")
	w.check("b", "v1 booted again from USR-A", expect("GRUB slot", b2.con.GrubSlot(), "a"))
	full, ferr := w.freshFetch(ctx, V2)
	res, err := resumed(b2.con)
	if err == nil && ferr != nil {
		err = ferr
	}
	if err == nil && res.fetched > full-full/10 {
		err = fmt.Errorf("the resumed install fetched %d bytes, a fresh one fetches %d: what was fetched before the cut was lost", res.fetched, full)
	}
	b2.Note = fmt.Sprintf("resumed: kept %d MiB written before the cut, fetched %d MiB (a fresh install: %d MiB)",
		res.reusedTarget>>20, res.fetched>>20, full>>20)
	w.check("b", "the agent resumed the cut download (DOWNLOADING after the boot), kept what it had written and fetched only the rest", err)
	w.check("c", "v2 installed into USR-B (P=2 T=1 S=0), USR-A still the good fallback", w.expectSlots(
		slotWant{"USR-B", 2, 1, false}, slotWant{"USR-A", 1, 0, true}))
	w.check("c", "the ESP holds v2's kernel and initrd for slot b", w.expectESP("b", V2))
	w.check("c", "locksmithd holds the etcd reboot slot across the reboot", w.expectHolder(ctx, true, ""))

	b3, err := w.boot(ctx, "v2 from USR-B: health gate, commit, lock released")
	if err != nil {
		return err
	}
	// GRUB writes the decremented tries before it prints its line, and the agent can commit
	// (tries 0 as well) only after the system is up: read the bits as soon as GRUB has spoken.
	err = poll(ctx, 5*time.Minute, b3.run.Done(), "GRUB's line on the console", func() (bool, error) { return b3.con.GrubSlot() != "", nil })
	w.check("c", "GRUB used the try on disk before booting (USR-B T=1 → 0, not yet committed)", all(err,
		w.expectSlotsLive(slotWant{"USR-B", 2, 0, false})))
	r, err = b3.con.waitReport(ctx, "v2 running", b3.run.Done(), func(r map[string]string) bool { return r["version"] == V2 })
	w.note(b3, r)
	w.check("c", "GRUB chose USR-B and booted vmlinuz-b/initrd-b (the initrd marker is v2's)", all(err,
		expect("GRUB slot", b3.con.GrubSlot(), "b"), expect("/usr", r["usr"], "/dev/vda4"), expect("initrd marker", r["marker"], marker(V2))))
	err = w.waitEvent(ctx, b3, "3/2", func(e admin.Event) bool { return e.Type == 3 && e.Result == 2 && e.Version == V2 })
	w.check("c", "omahad received 3/2 for v2", err)
	w.check("c", "the slot is committed (USR-B S=1)", w.waitSlots(ctx, b3, slotWant{"USR-B", 2, 0, true}))
	w.check("c", "the etcd lock is released after the health gate", w.waitHolder(ctx, b3, false, ""))
	b3.Gate = "passed"

	// d: a broken v3 goes out; the host installs it into USR-A and reboots.
	if err := w.group(ctx, "update", Group, "--halt-on-failures", "1"); err != nil {
		return err
	}
	if err := w.publish(ctx, V3); err != nil {
		return err
	}
	if err := w.waitExit(ctx, b3); err != nil {
		return err
	}
	w.finish(b3, "")
	w.check("c", "the anti-rollback floor in the guest's TPM advanced to v2's security version", w.expectFloor(ctx, sec2))
	w.check("d", "v3 came by its delta section from v2, not by chunks", byDelta(b3.con, V3, V2))
	w.check("d", "v3 installed into USR-A (P=2 T=1 S=0), USR-B the committed fallback", w.expectSlots(
		slotWant{"USR-A", 2, 1, false}, slotWant{"USR-B", 1, 0, true}))

	b4, err := w.boot(ctx, "broken v3 from USR-A: the health gate fails, back to USR-B")
	if err != nil {
		return err
	}
	r, _ = b4.con.waitReport(ctx, "v3 running", b4.run.Done(), func(r map[string]string) bool { return r["version"] == V3 })
	w.note(b4, r)
	if err := w.waitExit(ctx, b4); err != nil {
		return err
	}
	w.finish(b4, "")
	w.check("d", "GRUB chose USR-A with v3's initrd", all(expect("GRUB slot", b4.con.GrubSlot(), "a"),
		expect("version", b4.Version, V3), expect("initrd marker", b4.Marker, marker(V3))))
	err = w.waitEvent(ctx, b4, "3/0/1001", func(e admin.Event) bool { return e.Type == 3 && e.Result == 0 && e.ErrorCode == 1001 })
	w.check("d", "omahad received 3/0 error 1001 (health gate failed)", err)
	b4.Gate = "failed"
	w.check("d", "v3 is marked bad (USR-A P=0) and the committed USR-B boots next (P=2)", w.expectSlots(
		slotWant{"USR-A", 0, -1, false}, slotWant{"USR-B", 2, 0, true}))

	b5, err := w.boot(ctx, "back on v2 from USR-B: rollback reported, lock kept, group halted")
	if err != nil {
		return err
	}
	r, err = b5.con.waitReport(ctx, "v2 running again", b5.run.Done(), func(r map[string]string) bool { return r["version"] == V2 })
	w.note(b5, r)
	w.check("d", "the host came back on USR-B (v2, v2's initrd)", all(err, expect("GRUB slot", b5.con.GrubSlot(), "b"),
		expect("initrd marker", r["marker"], marker(V2))))
	err = w.waitEvent(ctx, b5, "3/0/44", func(e admin.Event) bool { return e.Type == 3 && e.Result == 0 && e.ErrorCode == 44 })
	w.check("d", "omahad received 3/0 error 44 (rollback)", err)
	// locksmithd marks the slot once it reads the agent's boot status, which may come after the
	// agent's 3/0/44 reached omahad.
	w.check("d", "the host keeps its etcd lock (rolled-back)", w.waitHolder(ctx, b5, true, locksmith.HolderRolledBack))
	w.check("d", "the server halted the group", w.waitHalted(ctx))
	b5.Gate = "rolled back"
	b5.run.Kill()
	<-b5.run.Done()
	w.finish(b5, "stopped by the test")
	w.check("d", "the floor stayed at v2's security version", w.expectFloor(ctx, sec2))

	// e: a slot whose kernel does not come up at all. USR-A is made the slot on trial (as an
	// install leaves it) with an initrd that is garbage: the kernel panics, panic=10 reboots,
	// and GRUB, finding USR-A's one try used, boots USR-B again with no agent involved.
	if err := w.breakSlotA(); err != nil {
		return err
	}
	b6, err := w.boot(ctx, "USR-A on trial with an initrd that cannot boot: the kernel panics")
	if err != nil {
		return err
	}
	if err := w.waitExit(ctx, b6); err != nil {
		return err
	}
	w.finish(b6, "kernel panic, rebooted by panic=10")
	b6.Gate = "never ran"
	w.check("e", "GRUB tried USR-A, whose kernel never reached userspace", all(expect("GRUB slot", b6.con.GrubSlot(), "a"),
		expect("report lines", fmt.Sprint(b6.con.Report() != nil), "false")))
	w.check("e", "the try is used up on disk (USR-A T=0 S=0)", w.expectSlots(slotWant{"USR-A", 2, 0, false}, slotWant{"USR-B", 1, 0, true}))
	b7, err := w.boot(ctx, "GRUB falls back to USR-B by itself")
	if err != nil {
		return err
	}
	r, err = b7.con.waitReport(ctx, "v2 running", b7.run.Done(), func(r map[string]string) bool { return r["version"] == V2 })
	w.note(b7, r)
	w.check("e", "the next boot is USR-B with v2, chosen by the tries counter alone", all(err, expect("GRUB slot", b7.con.GrubSlot(), "b"),
		expect("initrd marker", r["marker"], marker(V2))))
	b7.run.Kill()
	<-b7.run.Done()
	w.finish(b7, "stopped by the test")
	return nil
}

// breakSlotA puts USR-A on trial (PrepareInstall: P=2 T=1 S=0) and replaces its initrd on the
// ESP with bytes no kernel can unpack, so that its boot panics before userspace.
func (w *walk) breakSlotA() error {
	d, err := partition.Open(w.disk)
	if err != nil {
		return err
	}
	a, err := d.SlotByLabel("USR-A")
	if err == nil {
		err = d.PrepareInstall(a)
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("put USR-A on trial: %w", err)
	}
	return w.writeESP("/twinslot/initrd-a", bytes.Repeat([]byte("not an initrd "), 4096))
}

// build makes the key, the three images and their payloads, and the app on the server.
func (w *walk) build(ctx context.Context) error {
	w.key, w.trust = filepath.Join(w.o.Dir, "release.key"), filepath.Join(w.o.Dir, "trust.json")
	base := filepath.Join(w.o.Dir, "release")
	if err := w.tool(ctx, "payload", "keygen", "-o", base); err != nil {
		return err
	}
	w.key = base + ".key"
	if err := w.tool(ctx, "payload", "trust", "init", "--key", base+".pub", "-o", w.trust); err != nil {
		return err
	}
	overlay := filepath.Join(w.o.Dir, "overlay")
	if err := writeOverlay(overlay); err != nil {
		return err
	}
	for _, v := range []struct {
		version string
		sec     int
		flags   []string
	}{
		{V1, sec1, []string{"--root-overlay", overlay}},
		{V2, sec2, []string{"--usr-only", "--filler", fmt.Sprint(w.o.Filler)}},
		{V3, sec3, []string{"--usr-only", "--broken"}},
	} {
		out := filepath.Join(w.o.Dir, "os-"+v.version)
		args := []string{"os", "-o", out, "--version", v.version, "--build-id", buildID(v.version), "--bin", w.o.Bin,
			"--grub-efi", w.o.GrubEFI, "--trust", w.trust, "--cache", w.o.Cache}
		w.say("mkimage %s", strings.Join(append(args, v.flags...), " "))
		var stderr bytes.Buffer
		if code := mkimage.Main(ctx, append(args, v.flags...), nil, io.Discard, &stderr); code != 0 {
			return fmt.Errorf("mkimage os %s: %s", v.version, strings.TrimSpace(stderr.String()))
		}
		w.usr[v.version] = filepath.Join(out, "usr.img")
		if v.version == V1 {
			w.disk = filepath.Join(out, "disk.img")
		}
		p := filepath.Join(w.o.Dir, v.version+".tsp")
		build := []string{"build", "--image", w.usr[v.version], "--version", v.version, "--board", Board,
			"--security-version", fmt.Sprint(v.sec), "-o", p}
		if v.version == V3 {
			// v3 carries a delta section from v2, the version the host runs when it is offered.
			build = append(build, "--delta-from", w.usr[V2]+"="+V2)
		}
		if err := w.tool(ctx, "payload", build...); err != nil {
			return err
		}
		if err := w.tool(ctx, "payload", "sign", "--key", w.key, p); err != nil {
			return err
		}
		w.payloads[v.version] = p
	}
	w.tpmDir = filepath.Join(w.o.Dir, "tpm")
	if err := os.MkdirAll(w.tpmDir, 0o700); err != nil {
		return err
	}
	if err := w.tool(ctx, "releasectl", "app", "create", "--name", "twinslot e2e-boot", "--trust", w.trust); err != nil {
		return err
	}
	if _, err := w.locks.SetMax(ctx, Lock, 1); err != nil {
		return err
	}
	return nil
}

// cutStep is how much of the image (percent) the fetch must have put in place before the
// walk cuts the power: about 19 MiB of v2's 640 MiB image, a fifth of its filler.
const cutStep = 3.0

// Board is the images' board.
const Board = "amd64-usr"

func buildID(v string) string { return "e2e-" + strings.ReplaceAll(v, ".", "") }

// marker is the initrd marker mkimage os bakes into a version's initrd by default.
func marker(v string) string { return v + "-" + buildID(v) }

func (w *walk) publish(ctx context.Context, v string) error {
	w.say("publish %s to alpha and promote it to %s", v, Group)
	if err := w.tool(ctx, "releasectl", "publish", "--channel", "alpha", w.payloads[v]); err != nil {
		return err
	}
	return w.tool(ctx, "releasectl", "promote", "--version", v, "--from", "alpha", "--to", Group)
}

func (w *walk) group(ctx context.Context, args ...string) error {
	return w.tool(ctx, "releasectl", append([]string{"group"}, args...)...)
}

// tool runs the payload or releasectl command in this process and fails when it does.
func (w *walk) tool(ctx context.Context, name string, args ...string) error {
	var out, errOut bytes.Buffer
	var code int
	switch name {
	case "payload":
		code = payloadcmd.Main(ctx, args, nil, &out, &errOut)
	case "releasectl":
		code = releasectl.Env{Server: w.url, Token: w.token}.Main(ctx, args, nil, &out, &errOut)
	default:
		return fmt.Errorf("unknown tool %s", name)
	}
	w.log.Info("tool", "cmd", name+" "+strings.Join(args, " "), "exit", code, "out", out.String(), "err", errOut.String())
	if code != 0 {
		return fmt.Errorf("%s %s: exit %d: %s", name, strings.Join(args, " "), code, strings.TrimSpace(errOut.String()))
	}
	return nil
}

// boot starts the next boot of the VM.
func (w *walk) boot(ctx context.Context, what string) (*Boot, error) {
	n := len(w.boots) + 1
	path := filepath.Join(w.o.Dir, fmt.Sprintf("boot-%d.console.log", n))
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	b := &Boot{N: n, What: what, ConsoleLog: path, started: time.Now(), con: newConsole(f), file: f}
	w.say("boot %d: %s", n, what)
	m := &uefivm.Machine{
		Disks: []string{w.disk}, MemoryMB: 1024, CPUs: 2, TPMState: w.tpmDir, KVM: w.o.KVM, Console: b.con,
		Forwards: []uefivm.Forward{{GuestAddr: guestServer, HostAddr: w.proxy.Addr()}, {GuestAddr: guestEtcd, HostAddr: w.etcdFw.Addr()}},
	}
	bctx, cancel := context.WithTimeout(ctx, w.o.BootTimeout)
	b.cancel = cancel
	run, err := m.Start(bctx)
	if err != nil {
		cancel()
		f.Close()
		return nil, err
	}
	b.run = run
	w.boots = append(w.boots, b)
	return b, nil
}

// waitExit waits for the guest to end the boot by itself (a reboot ends QEMU: -no-reboot).
func (w *walk) waitExit(ctx context.Context, b *Boot) error {
	select {
	case <-b.run.Done():
		return nil
	case <-ctx.Done():
		b.run.Kill()
		<-b.run.Done()
		w.finish(b, "killed: the walk timed out")
		return fmt.Errorf("boot %d did not end by itself: %w (console: %s)", b.N, ctx.Err(), b.ConsoleLog)
	}
}

func (w *walk) finish(b *Boot, note string) {
	if b.Took == 0 {
		b.Took = time.Since(b.started)
	}
	if note != "" {
		b.Note = note
	}
	if r := b.con.Report(); r != nil {
		w.note(b, r)
	}
	if s := b.con.GrubSlot(); s != "" {
		b.Slot = "USR-" + strings.ToUpper(s)
	}
	b.cancel()
	b.file.Close()
	if evs, err := w.admin.MachineEvents(context.Background(), payload.DefaultAppID, w.machineID, 100); err == nil {
		b.Events = nil
		for i := len(evs) - 1; i >= 0; i-- {
			e := evs[i]
			if e.At.Before(b.started) || e.At.After(time.Now()) {
				continue
			}
			s := fmt.Sprintf("%d/%d", e.Type, e.Result)
			if e.ErrorCode != 0 {
				s += fmt.Sprintf("/%d", e.ErrorCode)
			}
			b.Events = append(b.Events, s)
		}
	}
}

func (w *walk) note(b *Boot, r map[string]string) {
	if r == nil {
		return
	}
	b.Version, b.Marker = r["version"], r["marker"]
}

// waitEvent waits until omahad has an event of the machine, sent during boot b, matching ok.
func (w *walk) waitEvent(ctx context.Context, b *Boot, what string, ok func(admin.Event) bool) error {
	return poll(ctx, 3*time.Minute, b.run.Done(), "omahad to receive "+what, func() (bool, error) {
		evs, err := w.admin.MachineEvents(ctx, payload.DefaultAppID, w.machineID, 100)
		if err != nil {
			return false, err
		}
		for _, e := range evs {
			if !e.At.Before(b.started) && ok(e) {
				return true, nil
			}
		}
		return false, nil
	})
}

func (w *walk) waitHalted(ctx context.Context) error {
	return poll(ctx, time.Minute, nil, "the group to halt", func() (bool, error) {
		g, err := w.admin.Group(ctx, payload.DefaultAppID, Group)
		return err == nil && g.Policy.HaltedReason != "", err
	})
}

// expectHolder checks the etcd semaphore: held says whether the machine holds a slot, and
// state (when held and not "") its holder state.
func (w *walk) expectHolder(ctx context.Context, held bool, state locksmith.HolderState) error {
	st, err := w.locks.State(ctx, Lock)
	if err != nil {
		return err
	}
	for _, sl := range st.Slots {
		if sl.Holder.ID == w.machineID {
			if !held {
				return fmt.Errorf("%s still holds slot %d", w.machineID, sl.Index)
			}
			if state != "" && sl.Holder.State != state {
				return fmt.Errorf("holder state %q, want %q", sl.Holder.State, state)
			}
			return nil
		}
	}
	if held {
		return fmt.Errorf("machine %q holds no slot of group %s (holders: %d)", w.machineID, Lock, len(st.Slots))
	}
	return nil
}

// waitHolder polls expectHolder until it holds, for up to 3 minutes while boot b runs.
func (w *walk) waitHolder(ctx context.Context, b *Boot, held bool, state locksmith.HolderState) error {
	return poll(ctx, 3*time.Minute, b.run.Done(), "the etcd lock", func() (bool, error) {
		err := w.expectHolder(ctx, held, state)
		return err == nil, err
	})
}

// poll calls f every second until it says done, the time is up or gone closes.
func poll(ctx context.Context, limit time.Duration, gone <-chan struct{}, what string, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		ok, err := f()
		if ok {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-gone:
			gone = nil // one more look after the machine stopped
		case <-time.After(time.Second):
		}
	}
}

// slotWant is an expected slot state; -1 leaves tries unchecked.
type slotWant struct {
	label      string
	prio, try  int
	successful bool
}

func (s slotWant) check(sl partition.Slot) error {
	a := sl.Attr
	if a.Priority() != s.prio || (s.try >= 0 && a.Tries() != s.try) || a.Successful() != s.successful {
		return fmt.Errorf("%s is %v, want P=%d T=%d S=%v", s.label, a, s.prio, s.try, s.successful)
	}
	return nil
}

// expectSlots reads the GPT of the stopped machine's disk (both copies must be valid and in
// sync) and checks each slot; sgdisk -v cross-checks it when installed.
func (w *walk) expectSlots(want ...slotWant) error {
	d, err := partition.Open(w.disk, partition.ReadOnly())
	if err != nil {
		return err
	}
	defer d.Close()
	h, err := d.Health()
	if err != nil {
		return err
	}
	if h.PrimaryErr != nil || h.BackupErr != nil || !h.InSync {
		return fmt.Errorf("GPT copies: primary %v, backup %v, in sync %v", h.PrimaryErr, h.BackupErr, h.InSync)
	}
	if err := checkSlots(d, want); err != nil {
		return err
	}
	if _, err := exec.LookPath("sgdisk"); err == nil {
		if out, err := exec.Command("sgdisk", "-v", w.disk).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("No problems found")) {
			return fmt.Errorf("sgdisk -v: %v: %s", err, out)
		}
	}
	return nil
}

// expectSlotsLive reads the GPT while the guest runs: only GRUB wrote it since the boot began
// and the agent writes it only after its health gate, so a read right after the first report
// sees GRUB's write.
func (w *walk) expectSlotsLive(want ...slotWant) error {
	d, err := partition.Open(w.disk, partition.ReadOnly())
	if err != nil {
		return err
	}
	defer d.Close()
	return checkSlots(d, want)
}

// checkSlots checks each wanted slot's bits on d.
func checkSlots(d *partition.Disk, want []slotWant) error {
	for _, s := range want {
		sl, err := d.SlotByLabel(s.label)
		if err != nil {
			return err
		}
		if err := s.check(sl); err != nil {
			return err
		}
	}
	return nil
}

func (w *walk) waitSlots(ctx context.Context, b *Boot, want ...slotWant) error {
	var last error
	err := poll(ctx, 3*time.Minute, b.run.Done(), "the slot bits", func() (bool, error) {
		last = w.expectSlotsLive(want...)
		return last == nil, nil
	})
	if err != nil && last != nil {
		return last
	}
	return err
}

// byDelta checks, from the agent's log on the console, that version was installed by its
// payload's delta section from base, without falling back to the chunk path.
func byDelta(c *console, version, base string) error {
	lines := c.Grep(`msg="payload installed" version=` + version + " ")
	if len(lines) == 0 {
		return fmt.Errorf("no finished install of %s on the console", version)
	}
	switch l := lines[len(lines)-1]; {
	case strings.Contains(l, "delta_fallback="):
		return fmt.Errorf("the install fell back to the chunk path: %s", l)
	case !strings.Contains(l, " delta="+base):
		return fmt.Errorf("the install did not use the delta section from %s: %s", base, l)
	}
	return nil
}

// resumeFacts are what the agent said on the console about a resumed install.
type resumeFacts struct{ reusedTarget, reusedActive, fetched int64 }

var (
	resumeStart = regexp.MustCompile(`msg="agent starting" .*recorded_state=DOWNLOADING`)
	installDone = regexp.MustCompile(`msg="payload installed" .*reused_target=(\d+) reused_active=(\d+) fetched=(\d+)`)
)

// resumed checks, from the agent's log on the console, that it came up in DOWNLOADING and
// that the install kept what the cut attempt had written (it found it in the target slot and
// copied nothing from the active slot again).
func resumed(c *console) (resumeFacts, error) {
	var f resumeFacts
	if len(c.Grep(`msg="agent starting"`)) == 0 {
		return f, errors.New("the agent's start is not on the console")
	}
	starts := 0
	for _, l := range c.Grep(`msg="agent starting"`) {
		if resumeStart.MatchString(l) {
			starts++
		}
	}
	if starts == 0 {
		return f, errors.New("the agent did not come up in DOWNLOADING after the cut")
	}
	var done []string
	for _, l := range c.Grep(`msg="payload installed"`) {
		if m := installDone.FindStringSubmatch(l); m != nil {
			done = m
		}
	}
	if done == nil {
		return f, errors.New("no finished install on the console")
	}
	f.reusedTarget, _ = strconv.ParseInt(done[1], 10, 64)
	f.reusedActive, _ = strconv.ParseInt(done[2], 10, 64)
	f.fetched, _ = strconv.ParseInt(done[3], 10, 64)
	if f.reusedTarget == 0 || f.reusedActive != 0 {
		return f, fmt.Errorf("the resumed install kept %d bytes of the target and copied %d from the active slot again", f.reusedTarget, f.reusedActive)
	}
	return f, nil
}

// freshFetch is what a host on v1 that never started v2 would fetch: an install of v2's
// payload into an empty slot with v1 as the active one, here on the host.
func (w *walk) freshFetch(ctx context.Context, v string) (int64, error) {
	tr, err := os.ReadFile(w.trust)
	if err != nil {
		return 0, err
	}
	trust, err := payload.ParseTrustRoot(tr)
	if err != nil {
		return 0, err
	}
	active, err := os.Open(w.usr[V1])
	if err != nil {
		return 0, err
	}
	defer active.Close()
	st, err := active.Stat()
	if err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(w.o.Dir, "fresh-slot-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	size := int64(4 << 30)
	if err := tmp.Truncate(size); err != nil {
		return 0, err
	}
	pf, err := os.Open(w.payloads[v])
	if err != nil {
		return 0, err
	}
	defer pf.Close()
	pst, err := pf.Stat()
	if err != nil {
		return 0, err
	}
	res, err := payload.Install(ctx, payload.FromFile(pf, pst.Size()), payload.Target{Slot: fileSlot{tmp}, Size: size,
		Active: active, ActiveSize: st.Size()}, payload.InstallOptions{Trust: trust, Expect: payload.Expect{Board: Board}})
	if err != nil {
		return 0, err
	}
	return res.BytesFetched, nil
}

type fileSlot struct{ *os.File }

func (f fileSlot) Sync() error { return f.File.Sync() }

// expect compares one observed value.
func expect(what, got, want string) error {
	if got != want {
		return fmt.Errorf("%s is %q, want %q", what, got, want)
	}
	return nil
}

// all joins the errors (nil ones are skipped).
func all(errs ...error) error { return errors.Join(errs...) }
