package sysd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"unicode"

	"github.com/coreos/go-systemd/v22/journal"
)

// JournalHandler is a slog.Handler that sends each record to the systemd journal, with the
// message as MESSAGE, the level as PRIORITY and every attribute as an upper-case field
// (group names joined with "_"), so `journalctl -o verbose` shows them and
// `journalctl STATE=DOWNLOADING` filters on them.
type JournalHandler struct {
	level  slog.Leveler
	attrs  []slog.Attr
	groups []string
	send   func(msg string, p journal.Priority, vars map[string]string) error
	mu     *sync.Mutex
}

// NewJournalHandler returns a handler logging at level and above. main uses it when
// journal.Enabled() says the journal socket is there.
func NewJournalHandler(level slog.Leveler) *JournalHandler {
	return &JournalHandler{level: level, send: journal.Send, mu: new(sync.Mutex)}
}

// Enabled reports whether l is logged.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// Handle sends r to the journal.
func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	vars := make(map[string]string, len(h.attrs)+r.NumAttrs()+1)
	for _, a := range h.attrs {
		addField(vars, "", a)
	}
	prefix := ""
	if len(h.groups) > 0 {
		prefix = strings.Join(h.groups, "_") + "_"
	}
	r.Attrs(func(a slog.Attr) bool {
		addField(vars, prefix, a)
		return true
	})
	vars["SYSLOG_IDENTIFIER"] = "updated"
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.send(r.Message, priority(r.Level), vars)
}

// WithAttrs returns a handler adding attrs to every record.
func (h *JournalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	prefix := ""
	if len(h.groups) > 0 {
		prefix = strings.Join(h.groups, "_") + "_"
	}
	n.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		a.Key = prefix + a.Key
		n.attrs = append(n.attrs, a)
	}
	return &n
}

// WithGroup returns a handler prefixing later attributes with name.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.groups = append(append([]string(nil), h.groups...), name)
	return &n
}

func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}

func addField(vars map[string]string, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		for _, g := range v.Group() {
			addField(vars, prefix+a.Key+"_", g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	vars[fieldName(prefix+a.Key)] = fmt.Sprint(v.Any())
}

// fieldName makes a journal field name: upper-case letters, digits and underscores, not
// starting with an underscore or digit (those are reserved or invalid).
func fieldName(k string) string {
	var b strings.Builder
	for _, r := range k {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(unicode.ToUpper(r))
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_0123456789")
	if s == "" {
		s = "FIELD"
	}
	return s
}
