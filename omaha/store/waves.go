package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// WaveScale is the resolution of wave shares and host positions: basis points (1/100 of a
// percent), so a host's position is a number in [0, WaveScale).
const WaveScale = 10_000

// MaxWaves bounds how many waves a rollout may have.
const MaxWaves = 16

// MaxSpecLen bounds the text of a waves or office-hours spec.
const MaxSpecLen = 512

// Wave is one stage of a group's rollout: the hosts whose WavePosition is below Share are
// offered a new version once this wave is open; the next wave opens Soak after this one did,
// if the group is still healthy.
type Wave struct {
	Share int // basis points of the group's hosts, 1..WaveScale
	Soak  time.Duration
}

// SpecError is a waves or office-hours spec that does not parse. Nothing was stored.
type SpecError struct {
	What    string // "waves" or "office hours"
	Spec    string
	Problem string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("%s %q: %s", e.What, e.Spec, e.Problem)
}

// Unwrap makes a SpecError an ErrInvalid.
func (e *SpecError) Unwrap() error { return ErrInvalid }

const wavesHelp = `want a comma-separated list of SHARE%:SOAK with increasing shares, the last one 100% without a soak, e.g. "1%:1h,10%:2h,50%:4h,100%", or "none"`

// ParseWaves parses a waves spec such as "1%:1h,10%:2h,50%:4h,100%": each wave a share of the
// group's hosts (a percentage with up to two decimals) and, for every wave but the last, how
// long it soaks before the next opens. Shares increase and the last is 100%. "" and "none" mean
// no waves (nil).
func ParseWaves(spec string) ([]Wave, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" || spec == "none" {
		return nil, nil
	}
	bad := func(format string, args ...any) error {
		return &SpecError{What: "waves", Spec: spec, Problem: fmt.Sprintf(format, args...) + "; " + wavesHelp}
	}
	if len(spec) > MaxSpecLen {
		return nil, bad("longer than %d bytes", MaxSpecLen)
	}
	parts := strings.Split(spec, ",")
	if len(parts) > MaxWaves {
		return nil, bad("%d waves, at most %d allowed", len(parts), MaxWaves)
	}
	var ws []Wave
	for i, p := range parts {
		share, soak, hasSoak := strings.Cut(strings.TrimSpace(p), ":")
		num, ok := strings.CutSuffix(strings.TrimSpace(share), "%")
		if !ok {
			return nil, bad("wave %d %q has no %% share", i+1, p)
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || math.IsNaN(f) || f <= 0 || f > 100 {
			return nil, bad("wave %d share %q is not a percentage above 0 and at most 100", i+1, share)
		}
		bp := int(math.Round(f * 100))
		if math.Abs(f*100-float64(bp)) > 1e-6 {
			return nil, bad("wave %d share %q has more than two decimals", i+1, share)
		}
		w := Wave{Share: bp}
		if hasSoak {
			if w.Soak, err = time.ParseDuration(strings.TrimSpace(soak)); err != nil {
				return nil, bad("wave %d soak %q is not a duration such as 2h or 90m", i+1, soak)
			}
		}
		ws = append(ws, w)
	}
	if err := CheckWaves(ws); err != nil {
		return nil, bad("%s", strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
	}
	return ws, nil
}

// CheckWaves validates waves: shares increase, the last is 100%, every wave but the last soaks
// at least a second (at most MaxPeriod) and the last does not soak.
func CheckWaves(ws []Wave) error {
	if len(ws) > MaxWaves {
		return invalidf("%d waves, at most %d allowed", len(ws), MaxWaves)
	}
	for i, w := range ws {
		last := i == len(ws)-1
		switch {
		case w.Share < 1 || w.Share > WaveScale:
			return invalidf("wave %d share %s is out of range 0.01%%..100%%", i+1, sharePercent(w.Share))
		case i > 0 && w.Share <= ws[i-1].Share:
			return invalidf("wave %d share %s is not above wave %d's %s: shares increase", i+1, sharePercent(w.Share), i, sharePercent(ws[i-1].Share))
		case last && w.Share != WaveScale:
			return invalidf("the last wave's share is %s: the last wave is 100%%", sharePercent(w.Share))
		case last && w.Soak != 0:
			return invalidf("the last wave (100%%) has a soak: nothing comes after it")
		case !last && (w.Soak < time.Second || w.Soak > MaxPeriod):
			return invalidf("wave %d soak %s is out of range 1s..%s: every wave but the last soaks", i+1, w.Soak, MaxPeriod)
		}
	}
	return nil
}

func sharePercent(bp int) string {
	return strconv.FormatFloat(float64(bp)/100, 'f', -1, 64) + "%"
}

// FormatWaves writes waves as ParseWaves reads them ("" for none).
func FormatWaves(ws []Wave) string {
	var b strings.Builder
	for i, w := range ws {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(sharePercent(w.Share))
		if w.Soak != 0 {
			b.WriteString(":" + formatDuration(w.Soak))
		}
	}
	return b.String()
}

// formatDuration writes whole hours as "2h" and whole minutes as "90m" rather than "2h0m0s".
func formatDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}

// WavePosition is where a machine stands in every rollout of an app: a number in
// [0, WaveScale) from SHA-256 of the app id and machine id. It never changes, so the same hosts
// are always first, and a host in wave k is in every later wave too.
func WavePosition(appID, machineID string) int {
	h := sha256.Sum256([]byte(appID + "/" + strings.ToLower(machineID)))
	return int(binary.BigEndian.Uint64(h[:8]) % WaveScale)
}

// InWave reports whether a host at position pos is offered a new version while wave index
// wave (0-based) of ws is open. With no waves every host is.
func InWave(ws []Wave, wave, pos int) bool {
	if len(ws) == 0 {
		return true
	}
	wave = min(max(wave, 0), len(ws)-1)
	return pos < ws[wave].Share
}

// WaveState is the open wave of a group's rollout of one version: its index (0-based) and when
// it opened. A version with no state yet is at wave 0.
type WaveState struct {
	GroupID string
	Version string
	Wave    int
	Opened  time.Time
}

// currentWavesSQL is the newest (open) wave per (group, version) of an app's groups ($1 = "" for
// every app).
const currentWavesSQL = `SELECT w.group_id, w.version, w.wave, w.opened FROM group_waves w JOIN update_groups g ON g.id = w.group_id
WHERE ($1 = '' OR g.app_id = $1) AND w.wave = (SELECT max(w2.wave) FROM group_waves w2 WHERE w2.group_id = w.group_id AND w2.version = w.version)
ORDER BY w.group_id, w.version`

func scanWaveState(s interface{ Scan(...any) error }) (WaveState, error) {
	var w WaveState
	var opened int64
	err := s.Scan(&w.GroupID, &w.Version, &w.Wave, &opened)
	w.Opened = fromMS(opened)
	return w, err
}

func waveStates(ctx context.Context, q querier, appID string) ([]WaveState, error) {
	rows, err := q.QueryContext(ctx, currentWavesSQL, appID)
	if err != nil {
		return nil, fmt.Errorf("store: list waves: %w", err)
	}
	return collect(rows, "list waves", scanWaveState)
}

// WaveStates returns the open wave of every version the groups of an app (every app when appID
// is "") have rolled out in waves.
func (db *DB) WaveStates(ctx context.Context, appID string) ([]WaveState, error) {
	return waveStates(ctx, db.r, appID)
}

// WaveAdvance is what AdvanceWave did.
type WaveAdvance struct {
	State WaveState // the open wave after the call
	// Opened is true when the call opened State.Wave: the first wave of a version the group
	// had not rolled out before, or the next one after a soak.
	Opened bool
}

// AdvanceWave moves the rollout of version in a group with waves along, in one transaction
// under the group's row lock (so replicas open each wave once): it records wave 0 opening at now
// when the group has no state for the version yet, and opens the next wave when the open one
// has soaked its time since it opened and the group is enabled and not halted. It does nothing
// for a group without waves or a version its channel no longer offers.
func (db *DB) AdvanceWave(ctx context.Context, appID, groupID, version string, now time.Time) (WaveAdvance, error) {
	var out WaveAdvance
	err := db.tx(ctx, "advance wave", func(tx *sql.Tx) error {
		out = WaveAdvance{}
		g, err := scanGroup(tx.QueryRowContext(ctx, `SELECT `+groupCols+` FROM update_groups WHERE app_id = $1 AND id = $2`+db.d.forUpdate, appID, groupID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("group %s of app %s: %w", groupID, appID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		ws, err := ParseWaves(g.Policy.Waves)
		if err != nil || len(ws) == 0 {
			return err
		}
		var offered int64
		if err := tx.QueryRowContext(ctx, offeredSQL, appID, g.Channel, version).Scan(&offered); err != nil {
			return err
		}
		if offered == 0 {
			return nil
		}
		cur, err := scanWaveState(tx.QueryRowContext(ctx, `SELECT group_id, version, wave, opened FROM group_waves
WHERE group_id = $1 AND version = $2 ORDER BY wave DESC LIMIT 1`, groupID, version))
		next := 0
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case cur.Wave >= len(ws)-1 || !g.Policy.Enabled || g.Policy.HaltedReason != "" ||
			now.Before(cur.Opened.Add(ws[cur.Wave].Soak)):
			out.State = cur
			return nil
		default:
			next = cur.Wave + 1
		}
		out.State = WaveState{GroupID: groupID, Version: version, Wave: next, Opened: fromMS(ms(now))}
		out.Opened = true
		if _, err := tx.ExecContext(ctx, `INSERT INTO group_waves (group_id, version, wave, opened) VALUES ($1, $2, $3, $4)`,
			groupID, version, next, ms(now)); err != nil {
			return err
		}
		return bumpCatalog(ctx, tx)
	})
	return out, err
}

// OfficeHours are the windows of the week in which a group's hosts may be offered a new
// update; a host that already holds a grant keeps it outside them.
type OfficeHours struct {
	windows []window
	spec    string
}

// window is one office-hours window: on days (by time.Weekday) from..to minutes of the day in
// loc's wall-clock time; to < from runs past midnight into the next day.
type window struct {
	days     [7]bool
	from, to int
	loc      *time.Location
}

const officeHoursHelp = `want "[DAYS] HH:MM-HH:MM [ZONE]" windows separated by ";", DAYS like Mon-Fri or Sat,Sun (every day when left out), ZONE an IANA name like Europe/Berlin (UTC when left out), e.g. "Mon-Fri 09:00-17:00 Europe/Berlin", or "none"`

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// ParseOfficeHours parses an office-hours spec such as "Mon-Fri 09:00-17:00 Europe/Berlin;
// Sat 10:00-12:00 Europe/Berlin". "" and "none" mean any time (nil). Times are wall-clock times
// in the window's zone, so a window keeps its hours across daylight-saving changes.
func ParseOfficeHours(spec string) (*OfficeHours, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" || spec == "none" {
		return nil, nil
	}
	bad := func(format string, args ...any) error {
		return &SpecError{What: "office hours", Spec: spec, Problem: fmt.Sprintf(format, args...) + "; " + officeHoursHelp}
	}
	if len(spec) > MaxSpecLen {
		return nil, bad("longer than %d bytes", MaxSpecLen)
	}
	o := &OfficeHours{}
	var norm []string
	for _, part := range strings.Split(spec, ";") {
		f := strings.Fields(part)
		if len(f) == 0 {
			return nil, bad("an empty window")
		}
		w := window{loc: time.UTC}
		if !strings.Contains(f[0], ":") {
			days, err := parseDays(f[0])
			if err != nil {
				return nil, bad("%v", err)
			}
			w.days, f = days, f[1:]
		} else {
			w.days = [7]bool{true, true, true, true, true, true, true}
		}
		if len(f) == 0 || len(f) > 2 {
			return nil, bad("window %q is not DAYS HH:MM-HH:MM ZONE", strings.TrimSpace(part))
		}
		from, to, ok := strings.Cut(f[0], "-")
		var err error
		if !ok {
			return nil, bad("%q is not a range HH:MM-HH:MM", f[0])
		}
		if w.from, err = parseClock(from, false); err != nil {
			return nil, bad("%v", err)
		}
		if w.to, err = parseClock(to, true); err != nil {
			return nil, bad("%v", err)
		}
		if w.from == w.to {
			return nil, bad("window %q is empty: from and to are the same time", f[0])
		}
		if len(f) == 2 {
			if strings.EqualFold(f[1], "local") {
				return nil, bad("zone Local depends on the server's configuration: name the zone")
			}
			if w.loc, err = time.LoadLocation(f[1]); err != nil {
				return nil, bad("unknown time zone %q (an IANA name such as Europe/Berlin or UTC)", f[1])
			}
		}
		o.windows = append(o.windows, w)
		norm = append(norm, strings.Join(strings.Fields(part), " "))
	}
	o.spec = strings.Join(norm, "; ")
	return o, nil
}

func parseDays(s string) ([7]bool, error) {
	var days [7]bool
	day := func(n string) (int, error) {
		for i, d := range dayNames {
			if strings.EqualFold(n, d) {
				return i, nil
			}
		}
		return 0, fmt.Errorf("%q is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)", n)
	}
	for _, r := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(r, "-")
		first, err := day(a)
		if err != nil {
			return days, err
		}
		last := first
		if isRange {
			if last, err = day(b); err != nil {
				return days, err
			}
		}
		for d := first; ; d = (d + 1) % 7 {
			days[d] = true
			if d == last {
				break
			}
		}
	}
	return days, nil
}

// parseClock reads HH:MM as minutes of the day; 24:00 only as an end.
func parseClock(s string, end bool) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(h) != 2 || len(m) != 2 || hh < 0 || mm < 0 || mm > 59 ||
		hh > 24 || (hh == 24 && (mm != 0 || !end)) {
		return 0, fmt.Errorf("%q is not a time of day (HH:MM from 00:00 to 23:59, or 24:00 as an end)", s)
	}
	return hh*60 + mm, nil
}

// Open reports whether t falls in one of the windows (always, for nil office hours).
func (o *OfficeHours) Open(t time.Time) bool {
	if o == nil {
		return true
	}
	for _, w := range o.windows {
		lt := t.In(w.loc)
		m := lt.Hour()*60 + lt.Minute()
		today := w.days[lt.Weekday()]
		if w.from < w.to {
			if today && w.from <= m && m < w.to {
				return true
			}
			continue
		}
		// Past midnight: the evening part on a listed day, the morning part on the day after.
		if today && m >= w.from || w.days[(lt.Weekday()+6)%7] && m < w.to {
			return true
		}
	}
	return false
}

// String is the spec, normalised ("" for nil).
func (o *OfficeHours) String() string {
	if o == nil {
		return ""
	}
	return o.spec
}

// checkRollout validates a policy's waves and office hours.
func checkRollout(p Policy) error {
	if _, err := ParseWaves(p.Waves); err != nil {
		return err
	}
	_, err := ParseOfficeHours(p.OfficeHours)
	return err
}

// NormalWaves returns a waves spec in its canonical form ("" for none), or the parse error.
func NormalWaves(spec string) (string, error) {
	ws, err := ParseWaves(spec)
	return FormatWaves(ws), err
}

// NormalOfficeHours returns an office-hours spec in its canonical form ("" for none), or the
// parse error.
func NormalOfficeHours(spec string) (string, error) {
	o, err := ParseOfficeHours(spec)
	return o.String(), err
}

// normalRollout rewrites a checked policy's waves and office hours in their canonical form.
func normalRollout(p *Policy) {
	p.Waves, _ = NormalWaves(p.Waves)
	p.OfficeHours, _ = NormalOfficeHours(p.OfficeHours)
}
