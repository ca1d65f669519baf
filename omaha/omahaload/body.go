package omahaload

import (
	"bytes"
	"encoding/xml"
	"strconv"

	"github.com/twinslot/twinslot/omaha"
)

// updaterVersion is what simulated hosts claim to be, as Flatcar's update_engine does.
const updaterVersion = "update_engine-0.4.10"

// writeRequest appends a request of kind k from host h, built the way update_engine builds
// it: string concatenation, four-space indentation, every <app> attribute present.
func writeRequest(b *bytes.Buffer, h omaha.Host, k kind) {
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<request protocol="3.0" version="` + updaterVersion + `" updaterversion="` + updaterVersion +
		`" installsource="scheduler" ismachine="1">` + "\n" +
		`    <os version="Chateau" platform="CoreOS" sp="`)
	attr(b, h.Version+"_"+h.Arch)
	b.WriteString(`"></os>` + "\n" + `    <app appid="`)
	attr(b, omaha.FormatAppID(h.AppID))
	for _, a := range [...]struct{ name, value string }{
		{"version", h.Version}, {"track", h.Track}, {"bootid", "{" + h.BootID + "}"}, {"oem", h.OEM},
		{"oemversion", h.OEMVersion}, {"alephversion", h.AlephVersion}, {"machineid", h.MachineID},
		{"machinealias", h.MachineAlias}, {"lang", "en-US"}, {"board", h.Board}, {"hardware_class", ""},
	} {
		b.WriteString(`" ` + a.name + `="`)
		attr(b, a.value)
	}
	b.WriteString(`" delta_okay="false" >` + "\n")
	switch k {
	case kindCheck:
		b.WriteString(`        <ping active="1"></ping>` + "\n" + `        <updatecheck></updatecheck>` + "\n" +
			`        <event eventtype="3" eventresult="2" previousversion=""></event>` + "\n")
	case kindRollbackCheck:
		b.WriteString(`        <ping active="1"></ping>` + "\n" + `        <updatecheck></updatecheck>` + "\n" +
			`        <event eventtype="3" eventresult="0" errorcode="44"></event>` + "\n")
	case kindPing:
		b.WriteString(`        <ping active="1"></ping>` + "\n")
	case kindDownloadStarted:
		b.WriteString(`        <event eventtype="13" eventresult="1"></event>` + "\n")
	case kindDownloaded:
		b.WriteString(`        <event eventtype="14" eventresult="1"></event>` + "\n")
	case kindInstalled:
		b.WriteString(`        <event eventtype="3" eventresult="1"></event>` + "\n")
	case kindFailed:
		code := omaha.ErrorCodePostinstallRunnerError | omaha.ErrorCodeFlagTestOmahaURL
		b.WriteString(`        <event eventtype="3" eventresult="0" errorcode="` +
			strconv.FormatUint(uint64(code), 10) + `"></event>` + "\n")
	}
	b.WriteString("    </app>\n</request>\n")
}

func attr(b *bytes.Buffer, s string) {
	if isPlain(s) {
		b.WriteString(s)
		return
	}
	_ = xml.EscapeText(b, []byte(s)) // writes to a bytes.Buffer cannot fail
}

// isPlain reports whether s needs no escaping in a double-quoted attribute.
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '&' || c == '<' || c == '>' || c < 0x20 || c >= 0x80:
			return false
		}
	}
	return true
}
