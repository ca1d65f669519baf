package omaha

import "runtime"

// Host is the identity a host reports in every request. The caller (the updated agent) reads
// it from the system; this package reads no files.
type Host struct {
	AppID        string // Omaha app id, bare UUID or in braces; sent in braces
	MachineID    string // /etc/machine-id: 32 lowercase hex
	BootID       string // /proc/sys/kernel/random/boot_id, bare UUID or in braces; sent in braces
	Version      string // running version, e.g. 4081.2.0
	Track        string // GROUP from update.conf: channel, group id or group name
	Board        string // e.g. amd64-usr
	OEM          string // ID= of oem-release
	OEMVersion   string // VERSION_ID= of oem-release
	AlephVersion string // version first installed
	MachineAlias string // MACHINE_ALIAS from update.conf
	// Arch is `uname -m` for the os sp attribute (Version + "_" + Arch); empty means the
	// architecture this program was built for.
	Arch string
}

// CheckOptions shape an update check.
type CheckOptions struct {
	// PreviousVersion goes into the 3/2 event: "" on ordinary checks, the version updated
	// from on the first check after an update, "0.0.0.0" when unknown (update_engine's rule).
	PreviousVersion string
	// Rollback sends 3/0 with errorcode 44 instead of 3/2: the host booted back into the
	// version it updated from.
	Rollback bool
	// Interactive marks a check asked for by a person (installsource="ondemandupdate").
	Interactive bool
}

// DefaultUpdaterVersion is the request version/updaterversion a Client sends unless told
// otherwise.
const DefaultUpdaterVersion = "twinslot-updated-0.1.0"

// UpdateCheckRequest builds an update check: ping + updatecheck + event 3/2 (or 3/0/44).
func (h Host) UpdateCheckRequest(updater string, opt CheckOptions) *Request {
	ev := &Event{Type: EventTypeUpdateComplete, Result: EventResultSuccessReboot, PreviousVersion: opt.PreviousVersion}
	if opt.Rollback {
		ev = &Event{Type: EventTypeUpdateComplete, Result: EventResultError, ErrorCode: ErrorCodeRollback}
	}
	r := h.request(updater, opt.Interactive)
	a := r.Apps[0]
	a.Ping = &Ping{Active: 1}
	a.UpdateCheck = &UpdateCheck{}
	a.Events = []*Event{ev}
	return r
}

// PingRequest builds a ping-only request (sent while an installed update waits for reboot).
func (h Host) PingRequest(updater string) *Request {
	r := h.request(updater, false)
	r.Apps[0].Ping = &Ping{Active: 1}
	return r
}

// EventRequest builds a request reporting one event.
func (h Host) EventRequest(updater string, ev Event) *Request {
	r := h.request(updater, false)
	ev.Status = ""
	r.Apps[0].Events = []*Event{&ev}
	return r
}

// ErrorEvent is the event update_engine reports for a failure with code: type 3, result
// error (or update deferred for 35, 36, 40), the code with its flags.
func ErrorEvent(code ErrorCode) Event {
	return Event{Type: EventTypeUpdateComplete, Result: code.EventResult(), ErrorCode: code}
}

func (h Host) request(updater string, interactive bool) *Request {
	if updater == "" {
		updater = DefaultUpdaterVersion
	}
	src := InstallSourceScheduler
	if interactive {
		src = InstallSourceOnDemand
	}
	arch := h.Arch
	if arch == "" {
		arch = unameArch(runtime.GOARCH)
	}
	return &Request{
		Protocol: Protocol, Version: updater, UpdaterVersion: updater, InstallSource: src, IsMachine: 1,
		OS: &OS{Version: "Chateau", Platform: "CoreOS", ServicePack: h.Version + "_" + arch},
		Apps: []*App{{
			AppID: braced(h.AppID), Version: h.Version, Track: h.Track, BootID: braced(h.BootID),
			OEM: h.OEM, OEMVersion: h.OEMVersion, AlephVersion: h.AlephVersion, MachineID: h.MachineID,
			MachineAlias: h.MachineAlias, Lang: "en-US", Board: h.Board,
		}},
	}
}

// braced wraps a bare UUID in braces as update_engine sends appid and bootid; other values
// (empty, or already braced) are left alone.
func braced(s string) string {
	if isUUID(s) {
		return "{" + s + "}"
	}
	return s
}

// unameArch maps a GOARCH to `uname -m`.
func unameArch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i686"
	}
	return goarch
}
