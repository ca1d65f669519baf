package readme

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/locksmith/etcdtest"
	"github.com/twinslot/twinslot/locksmith/locksmithctl"
	"github.com/twinslot/twinslot/omaha/omahad"
	"github.com/twinslot/twinslot/omaha/omahaload"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/testimages/demo"
	"github.com/twinslot/twinslot/testimages/mkimage"
	"github.com/twinslot/twinslot/testimages/realboot"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/payloadcmd"
	"github.com/twinslot/twinslot/tools/releasectl"
	"github.com/twinslot/twinslot/updated/updatectl"
)

// notRun lists the README commands the test does not run, each with the reason. Keys are the
// command as written (comment removed).
var notRun = map[string]string{
	"make demo":                       "builds and runs bin/demo for about 15 s; testimages/demo's tests run demo.Main in-process",
	"make test":                       "the test suite itself",
	"make build":                      "builds the binaries; this test runs the same code in-process through each command's Main",
	"make grub-efi":                   "builds GRUB from Debian's source (6-10 min, network); make e2e-boot covers it",
	"make os-image OS_DIR=bin/os":     "needs mmdebstrap, root and minutes; make e2e-boot covers it",
	"make vm VM_DISK=bin/os/disk.img": "interactive QEMU + OVMF console",
	"bin/mkimage os -o bin/os-1.0.1 --version 1.0.1 --bin bin/guest --usr-only":                 "needs mmdebstrap and root (mkimage os); make e2e-boot covers it",
	"bin/payload build --image bin/os-1.0.1/usr.img --version 1.0.1 --board amd64-usr -o p.tsp": "builds from mkimage os's output, which this test does not make; the same command on a test image runs above",
	"updatectl status | watch | check --wait | history | reset":                                 "talks to the running updated on the system D-Bus; updated/updatedcmd and updatectl's tests run them against a private bus",
	"updatectl slots":                                                "reads the booted disk of the host (no --disk); updatectl's tests run it on images",
	"updatectl slots --repair":                                       "rewrites the booted disk's GPT (no --disk); updatectl's TestSlotsRepair runs it on images",
	"updatectl mark-good | rollback":                                 "changes the booted disk of the host; updatectl's tests run them on images",
	"updatectl download --to p.tsp":                                  "reads this host's /etc/twinslot/update.conf, machine-id and os-release; updatectl's tests run it with --config",
	"payload apply --trust trust.json p.tsp":                         "installs into the booted disk of the host (no --disk); payload apply's tests run it with --disk",
	"locksmithctl unlock MACHINE-ID":                                 "MACHINE-ID stands for a holder's id; locksmithctl's tests unlock a real holder",
	"updatectl config":                                               "reads this host's update.conf files; updatectl's tests run it with --root and --config",
	"updatectl enroll --token ts-enroll-…":                           "the token is elided (…) and it writes this host's /var/lib/twinslot; updatectl's TestEnroll runs it against omahad",
	"bin/releasectl promote --version 1.0.1 --from beta --to stable": "a session against an omahad whose beta carries 1.0.1 (the refusal exits 1); tools/releasectl's gate tests run it, refused and forced",
	`bin/releasectl promote --version 1.0.1 --from beta --to stable --force --reason "CVE fix, approved in ticket OPS-42"`:                                                                                                                "the same session, forced past the gate; tools/releasectl's gate tests run it",
	"bin/releasectl publish --version 4152.2.1 --channel beta --url https://mirror.example/amd64-usr/4152.2.1/flatcar_production_update.gz --size 465881871 --sha256 2d711642…4881 --sha1 EfatjsUqKYSrqv18O1FlA3hcIHI=":                   "the SHA-256 is elided (…) and the URL is an example; omaha/server's Flatcar tests publish external packages",
	"bin/releasectl --server http://127.0.0.1:18082 --token $LOCAL mirror --upstream http://127.0.0.1:18081/v1/update/ --pair f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc/stable/amd64-usr --once --dir mirror --status-file mirror/status.json": "a session between two omahads (the upstream offering a Flatcar package); tools/mirror's tests run the mirror against real upstream and local servers",
}

// command is one line of a README shell block.
type command struct {
	line int
	text string
}

// readmeCommands returns the commands of README.md's ```sh blocks: comments removed, lines
// ending in a backslash joined with the next. In a block that shows a session (lines starting
// with "$ "), only those lines are commands; the rest is their output.
func readmeCommands(t *testing.T) []command {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	type line struct {
		n    int
		text string
	}
	var out []command
	var block []line
	in := false
	flush := func() {
		session := false
		for _, l := range block {
			session = session || strings.HasPrefix(l.text, "$ ")
		}
		var cur *command
		for _, l := range block {
			text := l.text
			if cur == nil {
				if session && !strings.HasPrefix(text, "$ ") {
					continue
				}
				text = strings.TrimPrefix(text, "$ ")
			}
			text = strings.TrimSpace(stripComment(text))
			cont := strings.HasSuffix(text, `\`)
			text = strings.TrimSpace(strings.TrimSuffix(text, `\`))
			if cur != nil {
				cur.text += " " + text
			} else if text != "" {
				out = append(out, command{line: l.n, text: text})
				cur = &out[len(out)-1]
			}
			if !cont {
				cur = nil
			}
		}
		block = nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		switch l := sc.Text(); {
		case strings.HasPrefix(l, "```"):
			if in {
				flush()
			}
			in = !in && strings.TrimPrefix(l, "```") == "sh"
		case in:
			block = append(block, line{n, l})
		}
	}
	return out
}

// stripComment removes a shell comment: '#' at the start of a word, outside quotes.
func stripComment(s string) string {
	var q byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case q != 0:
			if c == q {
				q = 0
			}
		case c == '\'' || c == '"':
			q = c
		case c == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t'):
			return s[:i]
		}
	}
	return s
}

// words splits a command line as the shell does for the README's commands: blanks separate
// words, quotes group, and $(…) stays one word.
func words(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'' || c == '"':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated quote in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '$' && i+1 < len(s) && s[i+1] == '(':
			depth, j := 0, i+1
			for ; j < len(s); j++ {
				if s[j] == '(' {
					depth++
				} else if s[j] == ')' {
					if depth--; depth == 0 {
						break
					}
				}
			}
			if j == len(s) {
				return nil, fmt.Errorf("unterminated $( in %q", s)
			}
			cur.WriteString(s[i : j+1])
			i = j
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// mainFunc is the signature every twinslot command line has.
type mainFunc func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int

// shell runs README commands in-process.
type shell struct {
	t        *testing.T
	vars     map[string]string // exported variables
	omahaURL string
	etcdURL  string
}

func (sh *shell) programs() map[string]mainFunc {
	payload := payloadcmd.Env{Now: time.Now}.Main
	rc := func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
		env := releasectl.Env{Server: sh.vars["RELEASECTL_SERVER"], Token: sh.vars["RELEASECTL_TOKEN"]}
		return env.Main(ctx, args, stdin, stdout, stderr)
	}
	lsc := func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
		return locksmithctl.Run(ctx, args, []string{"LOCKSMITHCTL_ENDPOINT=" + sh.etcdURL}, cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	}
	return map[string]mainFunc{
		"bin/mkimage":    mkimage.Main,
		"bin/payload":    payload,
		"payload":        payload,
		"bin/omahad":     omahad.Main,
		"bin/releasectl": rc,
		"locksmithctl":   lsc,
	}
}

// substitute maps the README's example addresses to the test's servers.
func (sh *shell) substitute(w string) string {
	w = strings.ReplaceAll(w, "http://127.0.0.1:8080", sh.omahaURL)
	return strings.ReplaceAll(w, "http://etcd:2379", sh.etcdURL)
}

// run runs one command line and returns its stdout; it fails the test unless it exits 0.
func (sh *shell) run(ctx context.Context, c command, text string) string {
	sh.t.Helper()
	ws, err := words(text)
	if err != nil {
		sh.t.Fatalf("README.md:%d: %v", c.line, err)
	}
	if len(ws) > 0 && ws[0] == "export" {
		for _, kv := range ws[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				sh.t.Fatalf("README.md:%d: export %q is not NAME=VALUE", c.line, kv)
			}
			if strings.HasPrefix(v, "$(") && strings.HasSuffix(v, ")") {
				v = strings.TrimSpace(sh.run(ctx, c, v[2:len(v)-1]))
			}
			sh.vars[k] = sh.substitute(v)
		}
		return ""
	}
	main, ok := sh.programs()[ws[0]]
	if !ok {
		sh.t.Fatalf("README.md:%d: %q: no in-process Main for %s; run it here or add it to notRun with the reason", c.line, text, ws[0])
	}
	args := ws[1:]
	for i := range args {
		args[i] = sh.substitute(args[i])
	}
	var stdout, stderr bytes.Buffer
	if code := main(ctx, args, strings.NewReader(""), &stdout, &stderr); code != 0 {
		sh.t.Fatalf("README.md:%d: %s: exit %d\nstdout:\n%s\nstderr:\n%s", c.line, text, code, stdout.String(), stderr.String())
	}
	sh.t.Logf("README.md:%d: %s: ok", c.line, text)
	return stdout.String()
}

// serve starts the README's `omahad serve` line in-process on a free loopback port and returns
// its base URL; it stops with the test.
func serve(t *testing.T, c command) string {
	t.Helper()
	ws, err := words(c.text)
	if err != nil {
		t.Fatal(err)
	}
	args := ws[1:]
	for i := range args {
		if i > 0 && args[i-1] == "--listen" {
			args[i] = "127.0.0.1:0"
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	logR, logW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		code := omahad.Main(ctx, args, strings.NewReader(""), io.Discard, logW)
		logW.Close()
		done <- code
	}()
	// The log is read here alone: the listening address, then everything to the end.
	addr, logs := make(chan string, 1), make(chan string, 1)
	go func() {
		var all strings.Builder
		re := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`)
		sc := bufio.NewScanner(logR)
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default: // only the first counts
				}
			}
		}
		io.Copy(io.Discard, logR)
		logs <- all.String()
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("README.md:%d: omahad serve exited %d:\n%s", c.line, code, <-logs)
		}
	})
	select {
	case a := <-addr:
		return "http://" + a
	case code := <-done:
		t.Fatalf("README.md:%d: %s: exit %d\n%s", c.line, c.text, code, <-logs)
	}
	return ""
}

// TestREADMECommands runs every command of README.md's shell blocks (see the package comment).
func TestREADMECommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds /usr images and payloads and starts omahad and etcd: skipped with -short")
	}
	cmds := readmeCommands(t)
	if len(cmds) < 20 {
		t.Fatalf("found only %d commands in README.md's ```sh blocks: did the README's format change?", len(cmds))
	}
	seen := map[string]bool{}
	for _, c := range cmds {
		seen[c.text] = true
	}
	for k := range notRun {
		if !seen[k] {
			t.Errorf("notRun lists %q, which README.md no longer shows: remove it", k)
		}
	}
	t.Chdir(t.TempDir())
	// Files the README takes the reader to have: Flatcar's update payload and an OEM extra.
	for name, data := range map[string][]byte{
		"flatcar_production_update.gz": omahatest.FlatcarPayload(64<<10, 1),
		"oem-azure.gz":                 bytes.Repeat([]byte("oem extension\n"), 1000),
	} {
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := t.Context()
	sh := &shell{t: t, vars: map[string]string{}, etcdURL: etcdtest.New(t).Endpoints[0]}
	var serveLine command
	for _, c := range cmds {
		if strings.HasPrefix(c.text, "bin/omahad serve ") {
			serveLine = c
		}
	}
	if serveLine.line == 0 {
		t.Fatal("README.md shows no `bin/omahad serve` line, which the releasectl commands need")
	}
	// The README starts omahad after it first uses it; here it serves from the start.
	sh.omahaURL = serve(t, serveLine)
	for _, c := range cmds {
		if _, skip := notRun[c.text]; skip || c == serveLine {
			continue
		}
		sh.run(ctx, c, c.text)
	}
}

// TestMainsHelp: every command line of tools, omaha and testimages has the one Main signature
// (this does not compile otherwise) and answers --help with its usage and exit 0.
func TestMainsHelp(t *testing.T) {
	for name, main := range map[string]mainFunc{
		"payload": payloadcmd.Main, "payload (Env)": payloadcmd.Env{}.Main,
		"releasectl": releasectl.Main, "releasectl (Env)": releasectl.Env{}.Main,
		"omahad": omahad.Main, "omahad (Env)": omahad.Env{}.Main,
		"omahaload": omahaload.Main,
		"mkimage":   mkimage.Main, "mkimage (Env)": mkimage.Env{}.Main,
		"demo":    demo.Main,
		"e2eboot": realboot.Main, "e2eboot (Env)": realboot.Env{}.Main,
		"updatectl": updatectl.Main, "locksmithctl": locksmithctl.Main,
	} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := main(t.Context(), []string{"--help"}, strings.NewReader(""), &stdout, &stderr)
			if code != 0 || !strings.Contains(strings.ToLower(stdout.String()+stderr.String()), "usage") {
				t.Fatalf("--help: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
			}
		})
	}
}
