package benchpeers

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// median returns the median of xs (the lower middle for an even count).
func median[T int64 | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// Summary is the median figures of one tool on one case.
type Summary struct {
	Fetched, Requests, PeakRSS int64
	Wall, WallMin, WallMax     time.Duration
}

// Summary returns the medians of tool on case name.
func (r *Report) Summary(name, tool string) Summary {
	ms := r.Runs[name][tool]
	var f, q, rss []int64
	var w []time.Duration
	for _, m := range ms {
		f, q, rss, w = append(f, m.Fetched), append(q, m.Requests), append(rss, m.PeakRSS), append(w, m.Wall)
	}
	if len(ms) == 0 {
		return Summary{}
	}
	return Summary{Fetched: median(f), Requests: median(q), PeakRSS: median(rss), Wall: median(w), WallMin: slices.Min(w), WallMax: slices.Max(w)}
}

// WriteTable prints the report as one Markdown table, with a heading line and the raw limit.
func (r *Report) WriteTable(w io.Writer) {
	raw := median(r.RawLimit)
	fmt.Fprintf(w, "bench-peers: %d MiB ext4 /usr images (seed %d), %d rounds interleaved, %d cores; medians over the rounds (wall: min–max)\n",
		r.Size>>20, r.Seed, r.Rounds, r.Cores)
	fmt.Fprintf(w, "raw limit (SHA-256 + zstd decode of the full image in 64 KiB blocks, all cores): %.0f MB/s (%.0f–%.0f)\n\n",
		raw/1e6, slices.Min(r.RawLimit)/1e6, slices.Max(r.RawLimit)/1e6)
	fmt.Fprintln(w, "| change | tool | MB fetched | ÷ zchunk | ÷ casync | requests | wall s | MB/s | of raw | peak RSS MiB |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, c := range r.Cases {
		zck, cas := r.Summary(c.Name, "zchunk"), r.Summary(c.Name, "casync")
		for _, t := range Tools {
			s := r.Summary(c.Name, t)
			rate := float64(r.Size) / s.Wall.Seconds()
			fmt.Fprintf(w, "| %s | %s | %.2f | %s | %s | %d | %.2f (%.2f–%.2f) | %.0f | %.2f | %.1f |\n",
				c.Label, t, float64(s.Fetched)/1e6, ratio(s.Fetched, zck.Fetched), ratio(s.Fetched, cas.Fetched),
				s.Requests, s.Wall.Seconds(), s.WallMin.Seconds(), s.WallMax.Seconds(), rate/1e6, rate/raw, float64(s.PeakRSS)/(1<<20))
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "MB fetched: every response byte the loopback server sent (headers, indexes, manifests and data). MB/s: image bytes per wall second of the whole process (twinslot: payload apply into the disk, both slot scans, read-back and sync included; zchunk: zckdl + unzck). of raw: MB/s ÷ the raw limit.")
}

func ratio(a, b int64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", float64(a)/float64(b))
}
