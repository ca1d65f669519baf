package server

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/store"
)

//go:embed dashboard.html
var dashboardHTML string

// dashboardFailures is how many recent failure events the dashboard lists per app.
const dashboardFailures = 20

// dashboardAudit is how many recent changes the dashboard lists.
const dashboardAudit = 20

var dashboardTmpl = template.Must(template.New("dashboard").Funcs(template.FuncMap{
	"duration": func(d admin.Duration) string { return time.Duration(d).String() },
	"source":   store.SourceChannel,
	"limit": func(n int64) string {
		if n < 0 {
			return "any"
		}
		return strconv.FormatInt(n, 10)
	},
	"compact": func(b json.RawMessage) string {
		var c bytes.Buffer
		if json.Compact(&c, b) != nil {
			return string(b)
		}
		return c.String()
	},
}).Parse(dashboardHTML))

type dashboardApp struct {
	admin.Status
	Failures []admin.Event
	Gates    []admin.Gate
}

// handleDashboard serves the read-only HTML overview: per app its channels, per group the
// policy and counts by version and state, and recent failures and rollbacks.
func (s *Server) handleDashboard(w http.ResponseWriter, r *http.Request) {
	data := struct {
		Now   time.Time
		Apps  []dashboardApp
		Audit []admin.AuditEntry
	}{Now: s.now().UTC()}
	apps, err := s.db.Apps(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, a := range apps {
		st, err := s.appStatus(r, a.ID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		evs, err := s.db.Events(r.Context(), store.EventFilter{AppID: a.ID, Failures: true, Limit: dashboardFailures})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		gates, err := s.db.Gates(r.Context(), a.ID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		da := dashboardApp{Status: st}
		for _, g := range gates {
			da.Gates = append(da.Gates, toGate(g))
		}
		for _, e := range evs {
			da.Failures = append(da.Failures, toEvent(e))
		}
		data.Apps = append(data.Apps, da)
	}
	changes, err := s.db.Audit(r.Context(), store.AuditFilter{Limit: dashboardAudit})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, e := range changes {
		data.Audit = append(data.Audit, toAuditEntry(e))
	}
	var b bytes.Buffer
	if err := dashboardTmpl.Execute(&b, data); err != nil {
		s.log.Error("render dashboard", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b.Bytes())
}
