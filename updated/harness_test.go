package updated_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/slotrelease"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/updated"
	"github.com/twinslot/twinslot/updated/clock"
)

// The harness: a small GPT disk image whose slots hold a 4 KiB release header followed by
// image-like bytes; a host that boots it with partition.NextBoot (GRUB's gptprio.next); and a
// small Omaha server built on the omaha wire package that offers one payload and records what
// hosts send. Full cycles with real ext4 images and the real update server are in
// testimages/simhost.

const (
	slotSize   = 3 << 20
	imageSize  = 1 << 20
	headerSize = 4096
	board      = "amd64-usr"
)

// image returns a slot image for version: a release header, then content seeded by version.
func image(version string, broken bool) []byte {
	hdr := fmt.Sprintf("ID=twinslot\nVERSION=%s\nBOARD=%s\n", version, board)
	if broken {
		hdr += "BROKEN=1\n"
	}
	img := make([]byte, imageSize)
	copy(img, hdr)
	seed := uint64(0)
	for _, c := range version {
		seed = seed*31 + uint64(c)
	}
	copy(img[headerSize:], payloadtest.Image(imageSize-headerSize, seed))
	return img
}

// newDiskWith writes a disk with two slots of slot bytes, USR-A holding img (P=1 S=1) and an
// empty USR-B.
func newDiskWith(t *testing.T, path string, slot int64, img []byte) {
	t.Helper()
	size := 3<<20 + 2*slot
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	lba := func(b uint64) uint64 { return b / 512 }
	parts := []*gpt.Partition{
		{Index: 1, Start: lba(1 << 20), Size: 1 << 20, Type: gpt.EFISystemPartition, Name: "EFI-SYSTEM", GUID: "11111111-1111-4111-8111-111111111111"},
		{Index: 3, Start: lba(2 << 20), Size: uint64(slot), Type: gpt.Type(partition.TypeUSR), Name: "USR-A", GUID: "7130C94A-213A-4E5A-8E26-6CCE9662F132",
			Attributes: uint64(partition.Attributes(0).WithPriority(1).WithSuccessful(true))},
		{Index: 4, Start: lba(2<<20 + uint64(slot)), Size: uint64(slot), Type: gpt.Type(partition.TypeUSR), Name: "USR-B", GUID: "E03DD35C-7C2D-4A47-B3FE-27F15780A57C"},
	}
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: "00000000-0000-4000-8000-000000000001", Partitions: parts}
	if err := tbl.Write(f, size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(img, 2<<20); err != nil {
		t.Fatal(err)
	}
}

// host is a simulated machine for the agent.
type host struct {
	t         *testing.T
	dir       string
	disk      string
	esp       string // the ESP mount point; the layout exists only where a test makes it
	machineID string
	clk       *clock.Fake
	tpm       transport.TPM

	mu       sync.Mutex
	bootID   string
	slot     string
	rel      updated.Release
	broken   bool
	boots    int
	reboots  int
	rebootCh chan struct{}
}

func newHost(t *testing.T, version string) *host {
	return newHostWith(t, slotSize, image(version, false))
}

// newHostWith is newHost on a disk with slots of slot bytes, USR-A holding img.
func newHostWith(t *testing.T, slot int64, img []byte) *host {
	dir := t.TempDir()
	h := &host{t: t, dir: dir, disk: filepath.Join(dir, "disk.img"), esp: filepath.Join(dir, "boot"), machineID: randHex(16),
		clk: clock.NewFake(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)), rebootCh: make(chan struct{}, 16)}
	newDiskWith(t, h.disk, slot, img)
	for _, d := range []string{"state", "etc/health.d"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	h.boot()
	return h
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func uuid() string {
	h := randHex(16)
	return h[:8] + "-" + h[8:12] + "-4" + h[13:16] + "-8" + h[17:20] + "-" + h[20:]
}

// boot emulates the boot loader: gptprio.next on the disk, then read the chosen slot's release
// (from its ext4 filesystem when it holds one, else from the release header).
func (h *host) boot() {
	h.t.Helper()
	d, err := partition.Open(h.disk)
	if err != nil {
		h.t.Fatal(err)
	}
	defer d.Close()
	s, err := d.NextBoot()
	if err != nil {
		h.t.Fatalf("boot: %v (the disk has no bootable slot!)", err)
	}
	hdr := make([]byte, headerSize)
	if _, err := d.SlotReader(s).ReadAt(hdr, 0); err != nil {
		h.t.Fatal(err)
	}
	rel, err := updated.ParseRelease(s.Label, bytes.TrimRight(hdr, "\x00"))
	broken := bytes.Contains(hdr, []byte("BROKEN=1"))
	if fsRel, ferr := slotrelease.Read(d.SlotReader(s), s.Size); ferr == nil {
		rel, err = updated.Release{ID: fsRel.ID, Version: fsRel.Version, Board: fsRel.Board}, nil
		broken = fsRel.Broken
	}
	if err != nil {
		h.t.Fatalf("boot %s: %v", s.Label, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.boots++
	h.bootID, h.slot, h.rel = uuid(), s.Label, rel
	h.broken = broken
}

func (h *host) OpenDisk() (*partition.Disk, error) { return partition.Open(h.disk) }

func (h *host) Booted(_ context.Context, d *partition.Disk) (partition.Slot, updated.Release, error) {
	h.mu.Lock()
	label, rel := h.slot, h.rel
	h.mu.Unlock()
	s, err := d.SlotByLabel(label)
	return s, rel, err
}

func (h *host) Reboot(context.Context) error {
	h.mu.Lock()
	h.reboots++
	h.mu.Unlock()
	h.rebootCh <- struct{}{}
	return nil
}

func (h *host) SystemState(context.Context) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.broken {
		return "degraded", nil
	}
	return "running", nil
}

func (h *host) FailedUnits(ctx context.Context) ([]string, error) {
	if s, _ := h.SystemState(ctx); s == "degraded" {
		return []string{"app.service"}, nil
	}
	return nil, nil
}

func (h *host) running() (string, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.slot, h.rel.Version
}

// slots reads the disk's slots.
func (h *host) slots() map[string]partition.Slot {
	h.t.Helper()
	d, err := partition.Open(h.disk, partition.ReadOnly())
	if err != nil {
		h.t.Fatal(err)
	}
	defer d.Close()
	ss, err := d.Slots()
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]partition.Slot{}
	for _, s := range ss {
		out[s.Label] = s
	}
	return out
}

// checkBootable fails the test when the disk has no bootable slot.
func (h *host) checkBootable() {
	h.t.Helper()
	d, err := partition.Open(h.disk, partition.ReadOnly())
	if err != nil {
		h.t.Fatal(err)
	}
	defer d.Close()
	ss, err := d.Slots()
	if err != nil {
		h.t.Fatal(err)
	}
	if _, _, err := partition.Next(ss); err != nil {
		h.t.Fatalf("no bootable slot: %v", err)
	}
}

func (h *host) agentHost(serverURL string) updated.Host {
	h.mu.Lock()
	defer h.mu.Unlock()
	conf := filepath.Join(h.dir, "etc/update.conf")
	return updated.Host{
		Disk: h, Boot: h, Reboot: h, System: h, TPM: h.tpm, Clock: h.clk,
		Rand:      func(n int64) int64 { return n / 2 },
		MachineID: h.machineID, BootID: h.bootID,
		Paths: updated.Paths{
			StateDir: filepath.Join(h.dir, "state"), Config: []string{conf},
			TrustRoots: []string{filepath.Join(h.dir, "etc/trust.json")}, HealthDir: filepath.Join(h.dir, "etc/health.d"),
			ESPDir: h.esp,
		},
	}
}

func (h *host) writeConf(serverURL string, extra ...string) {
	h.t.Helper()
	c := "SERVER=" + serverURL + "\nGROUP=stable\n" + strings.Join(extra, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(h.dir, "etc/update.conf"), []byte(c), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// run is one agent process on the host.
type run struct {
	agent  *updated.Agent
	cancel context.CancelFunc
	done   chan error
	states chan updated.Record
}

// start runs an agent; every persisted record is sent on run.states. stopAt, when > 0, makes
// the stopAt-th persist of this run fail (a crash right after that state was persisted).
func (h *host) start(serverURL string, cfg updated.Config, stopAt int) *run {
	h.t.Helper()
	r := &run{done: make(chan error, 1), states: make(chan updated.Record, 256)}
	n := 0
	cfg.OnPersist = func(rec updated.Record) error {
		n++
		r.states <- rec
		if n == stopAt {
			return errCrash
		}
		return nil
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(h.t)
	}
	if cfg.HealthRetry == 0 {
		cfg.HealthRetry = time.Second
	}
	if cfg.HealthDeadline == 0 {
		cfg.HealthDeadline = 10 * time.Second
	}
	a, err := updated.New(h.agentHost(serverURL), cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.t.Context())
	r.agent, r.cancel = a, cancel
	go func() { r.done <- a.Run(ctx) }()
	h.t.Cleanup(func() { cancel(); <-r.done })
	return r
}

var errCrash = errors.New("simulated crash")

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// omahaServer is a minimal Omaha update server (on the real wire types) for agent tests.
type omahaServer struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	offer   string // version offered, "" none
	payload string // path of the payload file
	status  int    // HTTP status to answer with instead, 0 = normal
	garbage bool   // answer with a body that is not XML
	// appStatus, if set, is the <app> status of every answer, with updatecheck error-internal
	// (Nebraska's shape for an unknown group).
	appStatus omaha.Status
	// onDownload, if set, runs at each payload request, while the agent waits for the answer.
	onDownload func()
	// onRequest, if set, sees each app of an Omaha request as log() describes it ("event 3/1"),
	// while the agent waits for the answer.
	onRequest func(what string)
	requests  []*omaha.App
}

func newOmahaServer(t *testing.T) *omahaServer {
	s := &omahaServer{t: t}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/update/", s.update)
	mux.HandleFunc("GET /packages/", s.packages)
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *omahaServer) URL() string { return s.srv.URL + "/v1/update/" }

func (s *omahaServer) set(f func(s *omahaServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *omahaServer) update(w http.ResponseWriter, r *http.Request) {
	req, err := omaha.ParseRequest(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status != 0 {
		http.Error(w, "unavailable", s.status)
		return
	}
	if s.garbage {
		w.Write([]byte("<html>not omaha"))
		return
	}
	resp := omaha.NewResponse()
	for _, a := range req.Apps {
		if err := a.Validate(); err != nil {
			s.t.Errorf("invalid app from the agent: %v", err)
		}
		s.requests = append(s.requests, a)
		if s.onRequest != nil {
			s.onRequest(describe(a))
		}
		if s.appStatus != "" {
			if a.UpdateCheck != nil {
				resp.AddApp(a.AppID, s.appStatus).AddUpdateCheck(omaha.StatusInternalError)
			}
			continue
		}
		ra := resp.AddApp(a.AppID, omaha.StatusOK)
		ra.Acknowledge(a)
		if a.UpdateCheck == nil {
			continue
		}
		if s.offer == "" || s.offer == a.Version {
			ra.AddUpdateCheck(omaha.StatusNoUpdate)
			continue
		}
		data, err := os.ReadFile(s.payload)
		if err != nil {
			s.t.Error(err)
			return
		}
		u := omaha.Update{Version: s.offer, URLs: []string{s.srv.URL + "/packages/"}, PackageName: filepath.Base(s.payload),
			Size: int64(len(data)), SHA256: sha256.Sum256(data), SHA1: sha1.Sum(data)}
		if _, err := ra.AddUpdate(u); err != nil {
			s.t.Error(err)
		}
	}
	b, _ := resp.Marshal()
	w.Header().Set("Content-Type", omaha.ContentType)
	w.Write(b)
}

func (s *omahaServer) packages(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	p, hook := s.payload, s.onDownload
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	if filepath.Base(r.URL.Path) != filepath.Base(p) {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	defer f.Close()
	http.ServeContent(w, r, p, time.Time{}, f)
}

// log returns a compact description of every request: "check prev=X", "check rollback",
// "ping", "event 13/1", "event 3/0/1001".
func (s *omahaServer) log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, a := range s.requests {
		if d := describe(a); d != "" {
			out = append(out, d)
		}
	}
	return out
}

// describe is how log() names one app of a request; "" for a shape it does not know.
func describe(a *omaha.App) string {
	switch {
	case a.UpdateCheck != nil && len(a.Events) == 1 && a.Events[0].ErrorCode == omaha.ErrorCodeRollback:
		return "check rollback"
	case a.UpdateCheck != nil && len(a.Events) == 1:
		return "check prev=" + a.Events[0].PreviousVersion
	case a.UpdateCheck != nil:
		return "check"
	case a.Ping != nil && len(a.Events) == 0:
		return "ping"
	case len(a.Events) == 1:
		e := a.Events[0]
		if e.ErrorCode != 0 {
			return fmt.Sprintf("event %d/%d/%d", int(e.Type), int(e.Result), int(e.ErrorCode))
		}
		return fmt.Sprintf("event %d/%d", int(e.Type), int(e.Result))
	}
	return ""
}

// release is a signed payload of version for the host's trust root.
type release struct {
	key   *payloadtest.Key
	trust *payload.TrustRoot
}

func newRelease(t *testing.T, floor uint64) *release {
	k := payloadtest.NewKey(t, "")
	return &release{key: k, trust: payloadtest.TrustRoot(t, 1, floor, k)}
}

// build writes a payload of version (security version sv) into dir and returns its path.
func (r *release) build(t *testing.T, dir, version string, sv uint64, broken bool) string {
	p := filepath.Join(dir, "payload-"+version+".tsp")
	o := payloadtest.Options(version)
	o.SecurityVersion = sv
	payloadtest.BuildBytes(t, image(version, broken), p, o, r.key)
	return p
}

// buildImage writes a payload of img, which is version, into dir and returns its path.
func (r *release) buildImage(t *testing.T, dir, version string, img []byte) string {
	p := filepath.Join(dir, "payload-"+version+".tsp")
	payloadtest.BuildBytes(t, img, p, payloadtest.Options(version), r.key)
	return p
}

func (r *release) install(t *testing.T, h *host) {
	b, err := r.trust.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "etc/trust.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// scenario is a host on 1.0.0 trusting a new release key and a server offering 2.0.0 signed
// with it (security version sv; broken: its health check fails).
func scenario(t *testing.T, sv uint64, broken bool) (*host, *omahaServer) {
	t.Helper()
	h := newHost(t, "1.0.0")
	rel := newRelease(t, 0)
	rel.install(t, h)
	srv := newOmahaServer(t)
	p := rel.build(t, t.TempDir(), "2.0.0", sv, broken)
	srv.set(func(s *omahaServer) { s.offer, s.payload = "2.0.0", p })
	h.writeConf(srv.URL())
	return h, srv
}

// waitState reads persisted records until one satisfies ok, the run ends or a minute passes.
func waitState(t *testing.T, r *run, what string, ok func(updated.Record) bool) updated.Record {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case rec := <-r.states:
			if ok(rec) {
				return rec
			}
		case err := <-r.done:
			r.done <- err
			t.Fatalf("agent stopped (%v) before %s", err, what)
		case <-timeout:
			t.Fatalf("no %s within 2 minutes (a hang)", what)
		}
	}
}

func inState(s updated.State) func(updated.Record) bool {
	return func(r updated.Record) bool { return r.State == s }
}

// stop cancels the run and waits for it.
func (r *run) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(2 * time.Minute):
		t.Fatal("agent did not stop within 2 minutes")
	}
	return nil
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return [32]byte(h.Sum(nil))
}
