package releasectl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/tools/cli"
)

// auditTime reads --since/--until: an RFC 3339 time, or a duration meaning that long ago.
func auditTime(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, cli.Usagef("--%s %q: want an RFC 3339 time (2026-12-05T12:00:00Z) or a duration ago (24h)", name, v)
}

func (c *cmd) audit(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl audit", "[--since 24h|TIME] [--until TIME] [--target T] [--limit N]",
		`List the changes made on the server, newest first: when, who (the token's name), from which
address, the action, its target (apps/<id>/channels/<c>, apps/<id>/groups/<g>, ...) and what
changed. --target selects a target and everything below it.`)
	k := c.connFlags(fs, true)
	since := fs.String("since", "", "only changes at or after this time (RFC 3339, or a duration ago such as 24h)")
	until := fs.String("until", "", "only changes before this time (RFC 3339, or a duration ago)")
	target := fs.String("target", "", "only this target and what lies below it")
	limit := fs.Int("limit", 100, "at most this many entries")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *limit <= 0 {
		return cli.Usagef("--limit %d: want a positive number", *limit)
	}
	now := c.env.Now()
	q := admin.AuditQuery{Target: *target}
	var err error
	if q.Since, err = auditTime("since", *since, now); err != nil {
		return err
	}
	if q.Until, err = auditTime("until", *until, now); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, _ string) ([]admin.AuditEntry, error) {
		out := []admin.AuditEntry{}
		for len(out) < *limit {
			q.Limit = *limit - len(out)
			page, err := cl.Audit(ctx, q)
			if err != nil {
				return nil, err
			}
			out = append(out, page.Entries...)
			if page.Next == 0 {
				break
			}
			q.Before = page.Next
		}
		return out, nil
	}, printAudit)
}

// auditChangeWidth is how much of a change's JSON the table shows.
const auditChangeWidth = 160

func printAudit(w io.Writer, es []admin.AuditEntry) error {
	tw := cli.Table(w)
	fmt.Fprintln(tw, "TIME\tWHO\tFROM\tACTION\tTARGET\tCHANGE")
	for _, e := range es {
		var detail bytes.Buffer
		if json.Compact(&detail, e.Detail) != nil {
			detail.Write(e.Detail)
		}
		change := detail.String()
		if n := auditChangeWidth; len(change) > n {
			for !utf8.RuneStart(change[n]) {
				n--
			}
			change = change[:n] + "… (--json for all)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.At.UTC().Format("2006-01-02 15:04:05"), e.Who, e.Remote, e.Action, e.Target, change)
	}
	return tw.Flush()
}
