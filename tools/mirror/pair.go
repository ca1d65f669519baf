package mirror

import (
	"fmt"
	"strings"

	"github.com/twinslot/twinslot/omaha"
)

// Pair is one (app, channel, board) followed upstream and the local channel it feeds.
type Pair struct {
	App     string // bare lower-case UUID
	Channel string // the upstream track (a channel or group name)
	Board   string // e.g. amd64-usr
	Local   string // the local channel pointed at what is mirrored (default Channel)
}

// ParsePair reads "app/channel/board[=localchannel]", e.g.
// "e96281a6-d1af-4bde-9a0a-97b76e56dc57/stable/amd64-usr=beta". The app may be braced.
func ParsePair(s string) (Pair, error) {
	spec, local, hasLocal := strings.Cut(s, "=")
	parts := strings.Split(spec, "/")
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" || (hasLocal && local == "") {
		return Pair{}, fmt.Errorf("mirror: pair %q: want app/channel/board[=localchannel], e.g. e96281a6-d1af-4bde-9a0a-97b76e56dc57/stable/amd64-usr=stable", s)
	}
	app, err := omaha.ParseAppID(parts[0])
	if err != nil {
		return Pair{}, fmt.Errorf("mirror: pair %q: app %q is not a UUID", s, parts[0])
	}
	p := Pair{App: app, Channel: parts[1], Board: parts[2], Local: local}
	if p.Local == "" {
		p.Local = p.Channel
	}
	for _, f := range []struct{ name, v string }{{"channel", p.Channel}, {"board", p.Board}, {"local channel", p.Local}} {
		if err := omaha.CheckText(f.name, f.v, omaha.MaxShortLen); err != nil || strings.ContainsAny(f.v, " /=") {
			return Pair{}, fmt.Errorf("mirror: pair %q: %s %q: want a short name without spaces, '/' or '='", s, f.name, f.v)
		}
	}
	return p, nil
}

// String is the pair as ParsePair reads it.
func (p Pair) String() string {
	s := p.App + "/" + p.Channel + "/" + p.Board
	if p.Local != p.Channel {
		s += "=" + p.Local
	}
	return s
}

// short names the pair in messages: channel/board (→ local).
func (p Pair) short() string {
	s := p.Channel + "/" + p.Board
	if p.Local != p.Channel {
		s += "→" + p.Local
	}
	return s
}
