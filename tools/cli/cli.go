package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"
)

// IO is where a command reads and writes.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Command is one (sub)command. A command has either Run or Sub.
type Command struct {
	Name    string
	Summary string
	// Run executes the command with the arguments after its name.
	Run func(ctx context.Context, io IO, args []string) error
	// Sub holds nested commands ("trust init").
	Sub []Command
}

// UsageError is a mistake on the command line. Its message says what is wrong.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// Run dispatches args to cmds and returns the exit code. prog names the tool in messages.
func Run(ctx context.Context, prog, summary string, cmds []Command, args []string, stdio IO) int {
	err := dispatch(ctx, prog, summary, cmds, args, stdio)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	// A command's errors start with its full name ("releasectl status: …"): print that once.
	msg := err.Error()
	if !strings.HasPrefix(msg, prog+" ") {
		msg = prog + ": " + msg
	}
	if isUsage(err) {
		fmt.Fprintf(stdio.Stderr, "%s\nRun '%s --help' for usage.\n", msg, prog)
		return 2
	}
	fmt.Fprintln(stdio.Stderr, msg)
	return 1
}

func isUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

func dispatch(ctx context.Context, prog, summary string, cmds []Command, args []string, stdio IO) error {
	if len(args) == 0 {
		printCommands(stdio.Stderr, prog, summary, cmds)
		return Usagef("no command given")
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "-help" || name == "help" {
		printCommands(stdio.Stdout, prog, summary, cmds)
		return flag.ErrHelp
	}
	for _, c := range cmds {
		if c.Name != name {
			continue
		}
		full := prog + " " + c.Name
		if c.Run != nil {
			err := c.Run(ctx, stdio, args[1:])
			var u *UsageError
			if errors.As(err, &u) && !strings.HasPrefix(u.Msg, full) {
				return &UsageError{Msg: full + ": " + u.Msg}
			}
			return err
		}
		return dispatch(ctx, full, c.Summary, c.Sub, args[1:], stdio)
	}
	return Usagef("unknown command %q (commands: %s)", name, names(cmds))
}

func names(cmds []Command) string {
	var n []string
	for _, c := range cmds {
		n = append(n, c.Name)
	}
	return strings.Join(n, ", ")
}

func printCommands(w io.Writer, prog, summary string, cmds []Command) {
	if summary != "" {
		fmt.Fprintf(w, "%s — %s\n\n", prog, summary)
	}
	fmt.Fprintf(w, "Usage: %s <command> [flags] [args]\n\nCommands:\n", prog)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range cmds {
		fmt.Fprintf(tw, "  %s\t%s\n", c.Name, c.Summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun '%s <command> --help' for the flags of a command.\n", prog)
}

// FlagSet returns a flag set whose usage prints "Usage: prog argsUsage", help, then the flags.
// It writes usage to stdio.Stdout when help is asked for, and never exits the process.
func (stdio IO) FlagSet(prog, argsUsage, help string) *flag.FlagSet {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		w := stdio.Stdout
		fmt.Fprintf(w, "Usage: %s %s\n", prog, argsUsage)
		if help != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(help))
		}
		var any bool
		fs.VisitAll(func(*flag.Flag) { any = true })
		if any {
			fmt.Fprintln(w, "\nFlags:")
			fs.SetOutput(w)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
	return fs
}

// Parse parses args into fs, allowing flags after positional arguments ("verify p.tsp --trust t")
// and "--" to end flag parsing. It returns the positional arguments. -h/--help print the usage
// and return flag.ErrHelp; a bad flag returns a UsageError.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, flag.ErrHelp // fs.Parse has printed the usage
			}
			return nil, Usagef("%v", err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag.Parse stops at "--" (consumed) or at the first non-flag.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// NArgs checks the number of positional arguments.
func NArgs(args []string, min, max int, what string) error {
	switch {
	case len(args) < min:
		return Usagef("missing %s", what)
	case max >= 0 && len(args) > max:
		return Usagef("too many arguments: %s (want %s)", strings.Join(args[min:], " "), what)
	}
	return nil
}

// PrintJSON writes v as indented JSON followed by a newline.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Table returns a tab-separated table writer for people; call Flush when done.
func Table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// IsTerminal reports whether w is an interactive terminal (progress bars and colour only then).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// SortedKeys returns the keys of m in order, for stable table output.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
