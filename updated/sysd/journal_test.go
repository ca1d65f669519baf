package sysd

import (
	"errors"
	"log/slog"
	"reflect"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

func TestJournalHandler(t *testing.T) {
	type sent struct {
		msg  string
		p    journal.Priority
		vars map[string]string
	}
	var got []sent
	h := NewJournalHandler(slog.LevelInfo)
	h.send = func(msg string, p journal.Priority, vars map[string]string) error {
		got = append(got, sent{msg, p, vars})
		return nil
	}
	log := slog.New(h).With("machine", "m1", "boot-id", "b1").WithGroup("update")
	log.Debug("hidden")
	log.Error("install failed", "state", "DOWNLOADING", slog.Group("payload", "version", "2.0.0"), "_x", 1)
	if len(got) != 1 {
		t.Fatalf("sent %d records, want 1", len(got))
	}
	want := map[string]string{"MACHINE": "m1", "BOOT_ID": "b1", "UPDATE_STATE": "DOWNLOADING",
		"UPDATE_PAYLOAD_VERSION": "2.0.0", "UPDATE__X": "1", "SYSLOG_IDENTIFIER": "updated"}
	if got[0].msg != "install failed" || got[0].p != journal.PriErr || !reflect.DeepEqual(got[0].vars, want) {
		t.Fatalf("sent %+v\nwant vars %v", got[0], want)
	}
	h.send = func(string, journal.Priority, map[string]string) error { return errors.New("no journal") }
	if err := h.Handle(t.Context(), slog.Record{}); err == nil {
		t.Fatal("a send error was dropped")
	}
	if fieldName("9lives") != "LIVES" || fieldName("__") != "FIELD" {
		t.Fatalf("fieldName: %q %q", fieldName("9lives"), fieldName("__"))
	}
}
