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

// The dashboard's script and style sheet, served as files of their own so that the page's
// Content-Security-Policy can forbid inline scripts and styles.
var (
	//go:embed dashboard.js
	dashboardJS []byte
	//go:embed dashboard.css
	dashboardCSS []byte
)

// dashboardCSP lets the dashboard run only its own script and style sheet and talk only to
// omahad, and keeps it out of frames (its buttons change things: no clickjacking).
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// dashboardFailures is how many recent failure events the dashboard lists per app.
const dashboardFailures = 20

// dashboardAudit is how many recent changes the dashboard lists.
const dashboardAudit = 20

var dashboardTmpl = template.Must(template.New("dashboard").Funcs(template.FuncMap{
	"duration": func(d admin.Duration) string { return time.Duration(d).String() },
	"source":   store.SourceChannel,
	"next":     nextChannel,
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
	// Offered maps a channel to the version it offers (the newest of its boards'): a group's
	// promote button moves it to the next channel when that one offers another version.
	Offered map[string]string
}

// nextChannel is the channel after channel in promotion order ("" for the last).
func nextChannel(channel string) string {
	for _, c := range store.Channels {
		if store.SourceChannel(c) == channel {
			return c
		}
	}
	return ""
}

// staticFile serves an embedded file of the dashboard. It holds no data, so it needs no token.
func staticFile(contentType string, b []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(b)
	}
}

// handleDashboard serves the HTML overview: per app its channels and gates, per group the
// policy, why it is halted, counts by version and state, and recent failures and rollbacks.
// dashboard.js adds the charts (GET …/history), the instance search and history, and the
// pause, resume and promote buttons, which call the JSON API with a bearer token the operator
// types in (kept in the tab's sessionStorage), never with the Basic credentials or a cookie.
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
		da := dashboardApp{Status: st, Offered: map[string]string{}}
		for _, c := range st.Channels {
			for _, p := range c.Packages {
				if cur := da.Offered[c.Name]; cur == "" || CompareVersions(p.Version, cur) > 0 {
					da.Offered[c.Name] = p.Version
				}
			}
		}
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
	w.Header().Set("Content-Security-Policy", dashboardCSP)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}
