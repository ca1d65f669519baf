package omaha

import (
	"bytes"
	"encoding/xml"
	"fmt"
)

// Protocol is the only Omaha protocol version spoken: the protocol attribute of <request>
// and <response>.
const Protocol = "3.0"

// ContentType is the Content-Type of requests and responses.
const ContentType = "text/xml; charset=utf-8"

// Request is one request document a host POSTs to the server. Decoding keeps every attribute
// update_engine sends; encoding writes them the way update_engine does (see Marshal).
type Request struct {
	XMLName        xml.Name `xml:"request"`
	Protocol       string   `xml:"protocol,attr"`       // always "3.0"
	Version        string   `xml:"version,attr"`        // client name-version, e.g. update_engine-0.4.10
	UpdaterVersion string   `xml:"updaterversion,attr"` // same as Version for update_engine
	InstallSource  string   `xml:"installsource,attr"`  // "scheduler" or "ondemandupdate"
	IsMachine      int      `xml:"ismachine,attr"`      // always 1
	OS             *OS      `xml:"os"`
	Apps           []*App   `xml:"app"`
}

// Values of Request.InstallSource.
const (
	InstallSourceScheduler = "scheduler"      // a periodic check
	InstallSourceOnDemand  = "ondemandupdate" // asked for via D-Bus or the CLI
)

// OS describes the host's operating system. update_engine sends version="Chateau",
// platform="CoreOS" and sp="<version>_<uname -m>"; it sends no arch.
type OS struct {
	Version     string `xml:"version,attr"`
	Platform    string `xml:"platform,attr"`
	ServicePack string `xml:"sp,attr"`
	Arch        string `xml:"arch,attr,omitempty"`
}

// App is one <app> element. The same type serves both directions: a request fills the host
// identity attributes (AppID … DeltaOK) and its children say what kind of request it is
// (update check = Ping + UpdateCheck + one Event; ping-only = Ping; event = one Event); a
// response fills AppID, Status and acknowledges each child with a status.
type App struct {
	AppID string `xml:"appid,attr"` // with braces, e.g. {e96281a6-d1af-4bde-9a0a-97b76e56dc57}

	// Request attributes (update_engine sends all of them, possibly empty).
	Version       string `xml:"version,attr,omitempty"`        // running version, e.g. 4081.2.0
	Track         string `xml:"track,attr,omitempty"`          // group: channel name, group id or group name
	BootID        string `xml:"bootid,attr,omitempty"`         // boot id in braces
	OEM           string `xml:"oem,attr,omitempty"`            // ID= of oem-release
	OEMVersion    string `xml:"oemversion,attr,omitempty"`     // VERSION_ID= of oem-release
	AlephVersion  string `xml:"alephversion,attr,omitempty"`   // version first installed
	MachineID     string `xml:"machineid,attr,omitempty"`      // /etc/machine-id: 32 lowercase hex, no braces
	MachineAlias  string `xml:"machinealias,attr,omitempty"`   // MACHINE_ALIAS from update.conf
	Lang          string `xml:"lang,attr,omitempty"`           // en-US
	Board         string `xml:"board,attr,omitempty"`          // e.g. amd64-usr
	HardwareClass string `xml:"hardware_class,attr,omitempty"` // always empty from update_engine
	DeltaOK       bool   `xml:"delta_okay,attr,omitempty"`     // always false from update_engine

	// Response attribute.
	Status Status `xml:"status,attr,omitempty"`

	Ping        *Ping        `xml:"ping"`
	UpdateCheck *UpdateCheck `xml:"updatecheck"`
	Events      []*Event     `xml:"event"`
}

// Ping is <ping>: active="1" in a request, status="ok" in a response.
type Ping struct {
	Active int    `xml:"active,attr,omitempty"`
	Status Status `xml:"status,attr,omitempty"`
}

// Event is <event>. In a request it reports progress or failure (see EventType, EventResult,
// ErrorCode); in a response it carries only status="ok".
type Event struct {
	Type      EventType   `xml:"eventtype,attr"`
	Result    EventResult `xml:"eventresult,attr"`
	ErrorCode ErrorCode   `xml:"errorcode,attr,omitempty"`
	// PreviousVersion is the version the host ran before the update it now reports complete
	// (3/2 only); "" on ordinary checks, "0.0.0.0" when unknown.
	PreviousVersion string `xml:"previousversion,attr,omitempty"`
	Status          Status `xml:"status,attr,omitempty"`
}

// UpdateCheck is <updatecheck>: empty in a request; in a response it carries the status and,
// for StatusOK, the download URLs and the manifest.
type UpdateCheck struct {
	Status Status `xml:"status,attr,omitempty"`
	// PollInterval (seconds) overrides the host's next check interval when > 0.
	PollInterval int       `xml:"PollInterval,attr,omitempty"`
	URLs         []URL     `xml:"urls>url"`
	Manifest     *Manifest `xml:"manifest"`
}

// URL is a codebase: a base URL to which the package name is appended (a "/" is added
// between them when missing). The host tries them in order.
type URL struct {
	Codebase string `xml:"codebase,attr"`
}

// Manifest describes the offered version. update_engine uses only the first package and the
// postinstall action.
type Manifest struct {
	Version  string    `xml:"version,attr"`
	Packages []Package `xml:"packages>package"`
	Actions  []Action  `xml:"actions>action"`
}

// Package is one downloadable file.
type Package struct {
	Name     string `xml:"name,attr"`
	SHA1     string `xml:"hash,attr,omitempty"`        // base64 of the SHA-1 of the file
	SHA256   string `xml:"hash_sha256,attr,omitempty"` // hex of the SHA-256 of the file
	Size     int64  `xml:"size,attr"`
	Required bool   `xml:"required,attr"`
}

// ActionPostinstall is the Action.Event update_engine requires.
const ActionPostinstall = "postinstall"

// Action is <action>. The postinstall action carries the integrity check update_engine uses.
type Action struct {
	Event string `xml:"event,attr"`
	// SHA256 is base64 of the SHA-256 of the whole payload file (postinstall only).
	SHA256                string `xml:"sha256,attr,omitempty"`
	DisablePayloadBackoff bool   `xml:"DisablePayloadBackoff,attr,omitempty"`
	MaxFailureCountPerURL int    `xml:"MaxFailureCountPerUrl,attr,omitempty"`
	IsDeltaPayload        bool   `xml:"IsDeltaPayload,attr,omitempty"`
}

// Response is one response document.
type Response struct {
	XMLName  xml.Name  `xml:"response"`
	Protocol string    `xml:"protocol,attr"`
	Server   string    `xml:"server,attr,omitempty"`
	DayStart *DayStart `xml:"daystart"`
	Apps     []*App    `xml:"app"`
}

// DayStart is <daystart>; servers in this family send elapsed_seconds="0".
type DayStart struct {
	ElapsedSeconds int `xml:"elapsed_seconds,attr"`
}

// The wire shapes below fix the attribute set and the child order of each direction: a
// request app carries every host attribute even when empty and lists ping, updatecheck,
// event (update_engine's order); a response app carries appid and status and lists event,
// ping, updatecheck (Nebraska's order).

type wireRequest struct {
	XMLName        xml.Name `xml:"request"`
	Protocol       string   `xml:"protocol,attr"`
	Version        string   `xml:"version,attr"`
	UpdaterVersion string   `xml:"updaterversion,attr"`
	InstallSource  string   `xml:"installsource,attr"`
	IsMachine      int      `xml:"ismachine,attr"`
	OS             *OS      `xml:"os"`
	Apps           []wireRequestApp
}

type wireRequestApp struct {
	XMLName       xml.Name  `xml:"app"`
	AppID         string    `xml:"appid,attr"`
	Version       string    `xml:"version,attr"`
	Track         string    `xml:"track,attr"`
	BootID        string    `xml:"bootid,attr"`
	OEM           string    `xml:"oem,attr"`
	OEMVersion    string    `xml:"oemversion,attr"`
	AlephVersion  string    `xml:"alephversion,attr"`
	MachineID     string    `xml:"machineid,attr"`
	MachineAlias  string    `xml:"machinealias,attr"`
	Lang          string    `xml:"lang,attr"`
	Board         string    `xml:"board,attr"`
	HardwareClass string    `xml:"hardware_class,attr"`
	DeltaOK       bool      `xml:"delta_okay,attr"`
	Ping          *Ping     `xml:"ping"`
	UpdateCheck   *struct{} `xml:"updatecheck"`
	Events        []wireRequestEvent
}

type wireRequestEvent struct {
	XMLName         xml.Name    `xml:"event"`
	Type            EventType   `xml:"eventtype,attr"`
	Result          EventResult `xml:"eventresult,attr"`
	ErrorCode       optAttr     `xml:"errorcode,attr"`
	PreviousVersion optAttr     `xml:"previousversion,attr"`
}

// optAttr is an attribute that is either absent or present with a value, possibly empty.
type optAttr struct {
	set   bool
	value string
}

func (o optAttr) MarshalXMLAttr(name xml.Name) (xml.Attr, error) {
	if !o.set {
		return xml.Attr{}, nil // the zero Attr is omitted
	}
	return xml.Attr{Name: name, Value: o.value}, nil
}

type wireResponse struct {
	XMLName  xml.Name  `xml:"response"`
	Protocol string    `xml:"protocol,attr"`
	Server   string    `xml:"server,attr,omitempty"`
	DayStart *DayStart `xml:"daystart"`
	Apps     []wireResponseApp
}

type wireResponseApp struct {
	XMLName     xml.Name `xml:"app"`
	AppID       string   `xml:"appid,attr"`
	Status      Status   `xml:"status,attr"`
	Events      []wireResponseEvent
	Ping        *wireStatusOnly  `xml:"ping"`
	UpdateCheck *wireUpdateCheck `xml:"updatecheck"`
}

// wireUpdateCheck is UpdateCheck without an empty <urls> element: a noupdate or error answer
// is a bare <updatecheck status="…">, as Nebraska writes it.
type wireUpdateCheck struct {
	Status       Status    `xml:"status,attr,omitempty"`
	PollInterval int       `xml:"PollInterval,attr,omitempty"`
	URLs         *wireURLs `xml:"urls"`
	Manifest     *Manifest `xml:"manifest"`
}

type wireURLs struct {
	URLs []URL `xml:"url"`
}

func (uc *UpdateCheck) wire() *wireUpdateCheck {
	if uc == nil {
		return nil
	}
	w := &wireUpdateCheck{Status: uc.Status, PollInterval: uc.PollInterval, Manifest: uc.Manifest}
	if len(uc.URLs) > 0 {
		w.URLs = &wireURLs{URLs: uc.URLs}
	}
	return w
}

type wireResponseEvent struct {
	XMLName xml.Name `xml:"event"`
	Status  Status   `xml:"status,attr"`
}

type wireStatusOnly struct {
	Status Status `xml:"status,attr"`
}

func (e *Event) wireRequest() wireRequestEvent {
	w := wireRequestEvent{Type: e.Type, Result: e.Result}
	// update_engine: errorcode only when the result is not a success; previousversion only
	// on the 3/2 event of an update check, where it is present even when empty.
	if e.Result.hasErrorCode() || e.ErrorCode != 0 {
		w.ErrorCode = optAttr{true, e.ErrorCode.signed()}
	}
	if (e.Type == EventTypeUpdateComplete && e.Result == EventResultSuccessReboot) || e.PreviousVersion != "" {
		w.PreviousVersion = optAttr{true, e.PreviousVersion}
	}
	return w
}

// MarshalXML encodes the request in update_engine's shape: every <app> attribute present,
// children in the order ping, updatecheck, event.
func (r *Request) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	w := wireRequest{
		Protocol: r.Protocol, Version: r.Version, UpdaterVersion: r.UpdaterVersion,
		InstallSource: r.InstallSource, IsMachine: r.IsMachine, OS: r.OS,
	}
	for _, a := range r.Apps {
		if a == nil {
			continue
		}
		wa := wireRequestApp{
			AppID: a.AppID, Version: a.Version, Track: a.Track, BootID: a.BootID, OEM: a.OEM,
			OEMVersion: a.OEMVersion, AlephVersion: a.AlephVersion, MachineID: a.MachineID,
			MachineAlias: a.MachineAlias, Lang: a.Lang, Board: a.Board,
			HardwareClass: a.HardwareClass, DeltaOK: a.DeltaOK, Ping: a.Ping,
		}
		if a.UpdateCheck != nil {
			wa.UpdateCheck = &struct{}{}
		}
		for _, ev := range a.Events {
			if ev != nil {
				wa.Events = append(wa.Events, ev.wireRequest())
			}
		}
		w.Apps = append(w.Apps, wa)
	}
	return e.EncodeElement(w, xml.StartElement{Name: xml.Name{Local: "request"}})
}

// MarshalXML encodes the response: <app> with appid and status, children in the order
// event, ping, updatecheck, each acknowledged by status.
func (r *Response) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	w := wireResponse{Protocol: r.Protocol, Server: r.Server, DayStart: r.DayStart}
	for _, a := range r.Apps {
		if a == nil {
			continue
		}
		wa := wireResponseApp{AppID: a.AppID, Status: a.Status, UpdateCheck: a.UpdateCheck.wire()}
		for _, ev := range a.Events {
			if ev != nil {
				wa.Events = append(wa.Events, wireResponseEvent{Status: ev.Status})
			}
		}
		if a.Ping != nil {
			wa.Ping = &wireStatusOnly{Status: a.Ping.Status}
		}
		w.Apps = append(w.Apps, wa)
	}
	return e.EncodeElement(w, xml.StartElement{Name: xml.Name{Local: "response"}})
}

// Marshal returns the request as a complete XML document (declaration, two-space indent).
func (r *Request) Marshal() ([]byte, error) { return marshalDoc(r, "request") }

// Marshal returns the response as a complete XML document (declaration, two-space indent).
func (r *Response) Marshal() ([]byte, error) { return marshalDoc(r, "response") }

func marshalDoc(v any, what string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(xml.Header)
	enc := xml.NewEncoder(&b)
	enc.Indent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("omaha: marshal %s: %w", what, err)
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}
