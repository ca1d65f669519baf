package omahatest

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/twinslot/twinslot/omaha"
)

// Host is a minimal simulated host speaking Omaha to a Server the way update_engine does:
// an update check is ping + updatecheck + event 3/2; events are sent one per request.
type Host struct {
	s         *Server
	AppID     string // bare UUID
	MachineID string
	BootID    string
	Version   string
	Track     string
	Board     string
	Alias     string
	// PreviousVersion is sent on the next check's 3/2 event (then cleared), as update_engine
	// does after an update.
	PreviousVersion string
	// Credential, when set, is sent as "Authorization: Bearer …" (an enrolled twinslot agent).
	Credential string
	// Updater, when set, is the request's version/updaterversion (e.g. omaha.DefaultUpdaterVersion
	// for a twinslot agent); "" sends update_engine's.
	Updater string
}

// Host returns a host of s.App with a random machine id, on track at version, board amd64-usr.
func (s *Server) Host(t testing.TB, track, version string) *Host {
	return &Host{s: s, AppID: s.App, MachineID: NewMachineID(), BootID: "{" + newUUID() + "}",
		Version: version, Track: track, Board: "amd64-usr"}
}

func newUUID() string {
	id := NewMachineID()
	return id[0:8] + "-" + id[8:12] + "-4" + id[13:16] + "-8" + id[17:20] + "-" + id[20:32]
}

func (h *Host) app() *omaha.App {
	return &omaha.App{
		AppID: omaha.FormatAppID(h.AppID), Version: h.Version, Track: h.Track, BootID: h.BootID,
		MachineID: h.MachineID, MachineAlias: h.Alias, Board: h.Board, Lang: "en-US", OEM: "qemu",
	}
}

// Request wraps apps in a request document shaped like update_engine's.
func Request(apps ...*omaha.App) *omaha.Request {
	return &omaha.Request{
		Protocol: omaha.Protocol, Version: "update_engine-0.4.10", UpdaterVersion: "update_engine-0.4.10",
		InstallSource: omaha.InstallSourceScheduler, IsMachine: 1,
		OS:   &omaha.OS{Version: "Chateau", Platform: "CoreOS", ServicePack: "_x86_64"},
		Apps: apps,
	}
}

// Do posts a request made of app and returns the response's app, failing on anything but 200.
func (h *Host) Do(t testing.TB, app *omaha.App) *omaha.App {
	t.Helper()
	req := Request(app)
	if h.Updater != "" {
		req.Version, req.UpdaterVersion = h.Updater, h.Updater
	}
	body, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	code, out := h.s.PostAs(t, body, h.Credential)
	if code != http.StatusOK {
		t.Fatalf("omahatest: host %s: server answered %d: %s", h.MachineID, code, out)
	}
	resp, err := omaha.ParseResponse(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("omahatest: host %s: %v", h.MachineID, err)
	}
	ra := resp.App(app.AppID)
	if ra == nil {
		t.Fatalf("omahatest: host %s: no <app> in the response:\n%s", h.MachineID, out)
	}
	return ra
}

// Check sends an update check (ping + updatecheck + 3/2) and returns the offered update, or
// nil for noupdate. Any other status fails the test.
func (h *Host) Check(t testing.TB) *omaha.Update {
	t.Helper()
	a := h.app()
	a.Ping = &omaha.Ping{Active: 1}
	a.UpdateCheck = &omaha.UpdateCheck{}
	a.Events = []*omaha.Event{{Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultSuccessReboot, PreviousVersion: h.PreviousVersion}}
	h.PreviousVersion = ""
	return h.answer(t, h.Do(t, a))
}

// CheckAfterRollback sends the check update_engine sends after a rollback: ping + updatecheck
// + event 3/0 with error code 44.
func (h *Host) CheckAfterRollback(t testing.TB) *omaha.Update {
	t.Helper()
	a := h.app()
	a.Ping = &omaha.Ping{Active: 1}
	a.UpdateCheck = &omaha.UpdateCheck{}
	a.Events = []*omaha.Event{{Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultError, ErrorCode: omaha.ErrorCodeRollback | omaha.ErrorCodeFlagTestOmahaURL}}
	return h.answer(t, h.Do(t, a))
}

func (h *Host) answer(t testing.TB, ra *omaha.App) *omaha.Update {
	t.Helper()
	if ra.Status != omaha.StatusOK || ra.UpdateCheck == nil {
		t.Fatalf("omahatest: host %s: app status %q, updatecheck %v", h.MachineID, ra.Status, ra.UpdateCheck)
	}
	switch ra.UpdateCheck.Status {
	case omaha.StatusNoUpdate:
		return nil
	case omaha.StatusOK:
		u, err := ra.UpdateCheck.Update()
		if err != nil {
			t.Fatalf("omahatest: host %s: %v", h.MachineID, err)
		}
		return u
	}
	t.Fatalf("omahatest: host %s: updatecheck status %q", h.MachineID, ra.UpdateCheck.Status)
	return nil
}

// Ping sends a ping-only request (update_engine in UPDATED_NEED_REBOOT).
func (h *Host) Ping(t testing.TB) {
	t.Helper()
	a := h.app()
	a.Ping = &omaha.Ping{Active: 1}
	h.Do(t, a)
}

// Event sends one event.
func (h *Host) Event(t testing.TB, typ omaha.EventType, result omaha.EventResult, code omaha.ErrorCode) {
	t.Helper()
	a := h.app()
	a.Events = []*omaha.Event{{Type: typ, Result: result, ErrorCode: code}}
	h.Do(t, a)
}

// Install reports the update flow update_engine reports after an offer: 13/1, 14/1, 3/1.
func (h *Host) Install(t testing.TB) {
	t.Helper()
	h.Event(t, omaha.EventTypeUpdateDownloadStarted, omaha.EventResultSuccess, 0)
	h.Event(t, omaha.EventTypeUpdateDownloadFinished, omaha.EventResultSuccess, 0)
	h.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultSuccess, 0)
}

// Reboot makes the host run version, and its next check report the old one as previous.
func (h *Host) Reboot(version string) {
	h.PreviousVersion, h.Version = h.Version, version
}
