package benchpeers

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/testimages/mkimage"
)

// Main runs the benchmark as a command with args (without the program name) and returns the
// exit code: the table goes to stdout, progress to stderr.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("benchpeers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: benchpeers [flags]\n\nMeasures twinslot, casync and zchunk updating the same /usr images over one loopback HTTP\nserver and prints one table (see package testimages/benchpeers).")
		fs.PrintDefaults()
	}
	o := Options{Log: stderr}
	dir := fs.String("dir", "bin/peers-data", "work `directory` (images and stores are kept and reused)")
	size := fs.String("size", "256MiB", "/usr image size, e.g. 256MiB, 1GiB, 2GiB")
	seed := fs.Uint64("seed", 1, "content seed: the same seed builds the same files")
	rounds := fs.Int("rounds", DefaultRounds, "interleaved rounds")
	changes := fs.String("changes", "0.01,0.05,0.20", "fractions of changed files, comma-separated")
	kinds := fs.String("kinds", "rewrite,edit", "kinds of change, comma-separated: rewrite, edit")
	pl := fs.String("payload", "bin/payload", "the twinslot payload binary")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	n, err := mkimage.ParseSize(*size)
	if err != nil {
		fmt.Fprintln(stderr, "benchpeers:", err)
		return 2
	}
	o.Dir, o.Size, o.Seed, o.Rounds, o.Payload = *dir, n, *seed, *rounds, *pl
	for _, s := range strings.Split(*changes, ",") {
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || f <= 0 || f > 1 {
			fmt.Fprintf(stderr, "benchpeers: -changes: %q is not a fraction in (0, 1]\n", s)
			return 2
		}
		o.Changes = append(o.Changes, f)
	}
	for _, k := range strings.Split(*kinds, ",") {
		k := testimages.ChangeKind(strings.TrimSpace(k))
		if k != testimages.ChangeEdit && k != testimages.ChangeRewrite {
			fmt.Fprintf(stderr, "benchpeers: -kinds: %q is neither rewrite nor edit\n", k)
			return 2
		}
		o.Kinds = append(o.Kinds, k)
	}
	r, err := Run(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "benchpeers:", err)
		return 1
	}
	r.WriteTable(stdout)
	return 0
}
