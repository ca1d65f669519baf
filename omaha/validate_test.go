package omaha

import (
	"errors"
	"strings"
	"testing"
)

func validApp() *App {
	return &App{
		AppID: "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}", Version: "4081.2.0", Track: "stable",
		BootID: "{60eb8c4b-919d-422f-9d4f-8fda10c50ab8}", OEM: "azure", OEMVersion: "2.9.1.1",
		AlephVersion: "3815.2.0", MachineID: "639c3d1041b94d7c915c18174eeeb154",
		MachineAlias: "worker-07", Lang: "en-US", Board: "amd64-usr",
		Events: []*Event{{Type: EventTypeUpdateComplete, Result: EventResultSuccessReboot, PreviousVersion: "0.0.0.0"}},
	}
}

func TestAppValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(a *App)
		field  string // "" = valid
	}{
		{"appid empty", func(a *App) { a.AppID = "" }, "appid"},
		{"appid not uuid", func(a *App) { a.AppID = "{flatcar}" }, "appid"},
		{"appid one brace", func(a *App) { a.AppID = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57" }, "appid"},
		{"machineid empty", func(a *App) { a.MachineID = "" }, "machineid"},
		{"machineid uppercase", func(a *App) { a.MachineID = "639C3D1041B94D7C915C18174EEEB154" }, "machineid"},
		{"machineid braces", func(a *App) { a.MachineID = "{639c3d1041b94d7c915c18174eeeb154}" }, "machineid"},
		{"machineid dashes", func(a *App) { a.MachineID = "639c3d10-41b9-4d7c-915c-18174eeeb154" }, "machineid"},
		{"machineid 31", func(a *App) { a.MachineID = "639c3d1041b94d7c915c18174eeeb15" }, "machineid"},
		{"bootid not uuid", func(a *App) { a.BootID = "{boot}" }, "bootid"},
		{"version empty", func(a *App) { a.Version = "" }, "version"},
		{"version space", func(a *App) { a.Version = "4081 2" }, "version"},
		{"version leading dot", func(a *App) { a.Version = ".1" }, "version"},
		{"version too long", func(a *App) { a.Version = strings.Repeat("1", MaxVersionLen+1) }, "version"},
		{"aleph markup", func(a *App) { a.AlephVersion = "<x>" }, "alephversion"},
		{"previousversion quote", func(a *App) { a.Events[0].PreviousVersion = `1"` }, "previousversion"},
		{"track too long", func(a *App) { a.Track = strings.Repeat("t", MaxTrackLen+1) }, "track"},
		{"alias control", func(a *App) { a.MachineAlias = "a\nb" }, "machinealias"},
		{"alias invalid utf8", func(a *App) { a.MachineAlias = "a\xffb" }, "machinealias"},
		{"board too long", func(a *App) { a.Board = strings.Repeat("b", MaxShortLen+1) }, "board"},
		{"valid", func(a *App) {}, ""},
		{"valid bare ids", func(a *App) {
			a.AppID = "E96281A6-D1AF-4BDE-9A0A-97B76E56DC57"
			a.BootID = "60eb8c4b-919d-422f-9d4f-8fda10c50ab8"
		}, ""},
		{"valid empty optional", func(a *App) {
			a.BootID, a.AlephVersion, a.Track, a.OEM, a.MachineAlias, a.Board = "", "", "", "", "", ""
			a.Events[0].PreviousVersion = ""
		}, ""},
		{"valid utf8 alias", func(a *App) { a.MachineAlias = "wörker 7" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := validApp()
			tt.change(a)
			err := a.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalidField) {
				t.Fatalf("Validate() = %v, want a *FieldError", err)
			}
			if fe.Field != tt.field {
				t.Errorf("Validate() field = %q, want %q (%v)", fe.Field, tt.field, err)
			}
		})
	}
}

func TestParseAppID(t *testing.T) {
	for _, in := range []string{"{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}", "e96281a6-d1af-4bde-9a0a-97b76e56dc57"} {
		got, err := ParseAppID(in)
		if err != nil || got != "e96281a6-d1af-4bde-9a0a-97b76e56dc57" {
			t.Errorf("ParseAppID(%q) = %q, %v", in, got, err)
		}
		if f := FormatAppID(got); f != "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" {
			t.Errorf("FormatAppID(%q) = %q", got, f)
		}
	}
	for _, in := range []string{"", "{}", "e96281a6d1af4bde9a0a97b76e56dc57", "g96281a6-d1af-4bde-9a0a-97b76e56dc57"} {
		if got, err := ParseAppID(in); err == nil {
			t.Errorf("ParseAppID(%q) = %q, want an error", in, got)
		}
	}
}

func TestFieldErrorQuotesAndCutsValue(t *testing.T) {
	err := CheckMachineID(strings.Repeat("\x1b[31m", 50))
	msg := err.Error()
	if strings.Contains(msg, "\x1b") || len(msg) > 200 {
		t.Errorf("error message not sanitized or bounded: %q", msg)
	}
}
