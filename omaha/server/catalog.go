package server

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/store"
)

// catalog is an immutable in-memory snapshot of apps, channels, packages and groups: what every
// update check looks up. It is rebuilt after each admin write in this process and whenever the
// store's catalog version changes (another replica wrote), so lookups never touch the database.
type catalog struct {
	version int64
	apps    map[string]*appEntry // by bare lower-case app id
	// rollouts are the parsed waves and office hours of the groups that have them, by group id.
	rollouts map[string]*rollout
}

type appEntry struct {
	store.App
	channels map[string]*channelEntry
	byID     map[string]*store.Group
	byName   map[string]*store.Group
}

type channelEntry struct {
	store.Channel
	pkgs map[string]*pkgEntry // board → current package
}

// pkgEntry is a package with its digests decoded once.
type pkgEntry struct {
	store.Package
	sha256 [32]byte
	sha1   [20]byte
	extras []omaha.ExtraFile
}

func buildCatalog(c *store.Catalog) (*catalog, error) {
	cat := &catalog{version: c.Version, apps: map[string]*appEntry{}}
	for _, a := range c.Apps {
		cat.apps[a.ID] = &appEntry{App: a, channels: map[string]*channelEntry{}, byID: map[string]*store.Group{}, byName: map[string]*store.Group{}}
	}
	for _, ch := range c.Channels {
		a := cat.apps[ch.AppID]
		if a == nil {
			continue
		}
		ce := &channelEntry{Channel: ch, pkgs: map[string]*pkgEntry{}}
		for board, p := range ch.Packages {
			pe := &pkgEntry{Package: p}
			if err := decodeDigest(pe.sha256[:], p.SHA256, hex.DecodeString); err != nil {
				return nil, fmt.Errorf("package %s/%s sha256: %w", p.Version, p.Board, err)
			}
			if err := decodeDigest(pe.sha1[:], p.SHA1, base64.StdEncoding.DecodeString); err != nil {
				return nil, fmt.Errorf("package %s/%s sha1: %w", p.Version, p.Board, err)
			}
			for _, f := range p.Extras {
				e := omaha.ExtraFile{Name: f.Name, Size: f.Size}
				if err := decodeDigest(e.SHA256[:], f.SHA256, hex.DecodeString); err != nil {
					return nil, fmt.Errorf("package %s/%s extra %s sha256: %w", p.Version, p.Board, f.Name, err)
				}
				if err := decodeDigest(e.SHA1[:], f.SHA1, base64.StdEncoding.DecodeString); err != nil {
					return nil, fmt.Errorf("package %s/%s extra %s sha1: %w", p.Version, p.Board, f.Name, err)
				}
				pe.extras = append(pe.extras, e)
			}
			ce.pkgs[board] = pe
		}
		a.channels[ch.Name] = ce
	}
	for i := range c.Groups {
		g := &c.Groups[i]
		if a := cat.apps[g.AppID]; a != nil {
			a.byID[g.ID] = g
			a.byName[g.Name] = g
		}
	}
	var err error
	if cat.rollouts, err = buildRollouts(c); err != nil {
		return nil, err
	}
	return cat, nil
}

func decodeDigest(dst []byte, s string, decode func(string) ([]byte, error)) error {
	b, err := decode(s)
	if err != nil || len(b) != len(dst) {
		return fmt.Errorf("%q is not a %d-byte digest", s, len(dst))
	}
	copy(dst, b)
	return nil
}

// group resolves a host's track: a group id, a group name, or a channel name (whose default
// group is named after it). It returns nil for an unknown track.
func (a *appEntry) group(track string) *store.Group {
	if g := a.byID[strings.ToLower(track)]; g != nil {
		return g
	}
	return a.byName[track]
}

// pkg returns a channel's current package for board, or nil.
func (a *appEntry) pkg(channel, board string) (*channelEntry, *pkgEntry) {
	ch := a.channels[channel]
	if ch == nil {
		return nil, nil
	}
	return ch, ch.pkgs[board]
}

// holds remembers groups whose max-updates cap was reached, so that the hosts asking in the
// next moments are answered without a grant transaction each.
type holds struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (h *holds) held(groupID string, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return now.Before(h.until[groupID])
}

func (h *holds) hold(groupID string, until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.until == nil {
		h.until = map[string]time.Time{}
	}
	h.until[groupID] = until
}

func (h *holds) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.until)
}

// refresh reloads the catalog when the store's catalog version differs from the loaded one
// (or always, when force).
func (s *Server) refresh(ctx context.Context, force bool) error {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	if !force {
		v, err := s.db.CatalogVersion(ctx)
		if err != nil {
			return err
		}
		if cur := s.cat.Load(); cur != nil && cur.version == v {
			return nil
		}
	}
	start := time.Now()
	c, err := s.db.Catalog(ctx)
	s.m.observeDB("catalog", start)
	if err != nil {
		return err
	}
	cat, err := buildCatalog(c)
	if err != nil {
		return fmt.Errorf("server: load catalog: %w", err)
	}
	s.cat.Store(cat)
	s.holds.reset()
	return nil
}

// every runs fn each interval until ctx ends, logging what it returns as a warning about what.
func (s *Server) every(ctx context.Context, interval time.Duration, what string, fn func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn(what, "err", err)
			}
		}
	}
}

// halted reports groups the check-in writer paused by their halt_on_failures policy and
// reloads the catalog at once, so hosts get noupdate from the next check on (other replicas
// see it within CachePoll; grants are refused by the store either way).
func (s *Server) halted(ctx context.Context, gs []store.Group) {
	for _, g := range gs {
		s.m.halts.Inc()
		s.log.Warn("group halted: too many hosts failed the update it offers; re-enable it when fixed",
			"app", g.AppID, "group", g.Name, "reason", g.Policy.HaltedReason)
		n := &auditNote{}
		n.setTarget(g.AppID, "groups", g.Name)
		detail, _ := json.Marshal(map[string]any{"reason": g.Policy.HaltedReason, "halt_on_failures": g.Policy.HaltOnFailures})
		s.audit(ctx, store.AuditEntry{At: g.Policy.HaltedAt, Who: auditServer, Action: "group.halt", Target: n.target, Detail: detail})
	}
	if err := s.refresh(ctx, true); err != nil && ctx.Err() == nil {
		s.log.Warn("reload catalog after a halt", "err", err)
	}
}
