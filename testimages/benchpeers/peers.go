package benchpeers

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// peer is one tool: what it needs on the server (built once, untimed), what a run needs on
// the host (untimed), and the commands of a run (timed).
type peer interface {
	name() string
	prepare(ctx context.Context, c Case) error
	// setup readies scratch for a run of c and returns where the output lands (file and
	// offset) and the commands to time, run in scratch one after the other.
	setup(ctx context.Context, c Case, scratch string) (out string, off int64, cmds [][]string, err error)
}

// run runs a preparation command.
func run(ctx context.Context, dir string, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

type twinslotPeer struct{ b *bench }

func (twinslotPeer) name() string { return "twinslot" }

func (p twinslotPeer) prepare(ctx context.Context, c Case) error {
	b := p.b
	key := b.path("bench.key")
	b.keysOnce.Do(func() {
		b.keysErr = b.once(key, func(tmp string) error {
			if err := run(ctx, b.dir, b.o.Payload, "keygen", "-force", "-o", "bench.key.tmp-name"); err != nil {
				return err
			}
			if err := run(ctx, b.dir, b.o.Payload, "trust", "init", "--key", "bench.key.tmp-name.pub", "-o", "trust.json"); err != nil {
				return err
			}
			if err := os.Rename(b.path("bench.key.tmp-name.pub"), b.path("bench.pub")); err != nil {
				return err
			}
			return os.Rename(b.path("bench.key.tmp-name.key"), tmp)
		})
	})
	if b.keysErr != nil {
		return b.keysErr
	}
	return b.once(b.path(b.tsp(c)), func(tmp string) error {
		argv := []string{b.o.Payload, "build", "--image", c.image, "--version", "bench." + c.Name, "--board", board,
			"--security-version", "1", "-o", tmp}
		if !c.Full {
			// A release ships with a delta section from the release before it: a host running
			// the base fetches only that section. The full case stands for a host that runs
			// none of the payload's bases.
			argv = append(argv, "--delta-from", b.base)
		}
		if err := run(ctx, b.dir, argv...); err != nil {
			return err
		}
		return run(ctx, b.dir, b.o.Payload, "sign", "--key", key, tmp)
	})
}

func (p twinslotPeer) setup(ctx context.Context, c Case, scratch string) (string, int64, [][]string, error) {
	b := p.b
	disk := filepath.Join(scratch, "disk.img")
	if err := run(ctx, scratch, "cp", "--sparse=always", b.disk, disk); err != nil {
		return "", 0, nil, err
	}
	return disk, b.usrB, [][]string{{b.o.Payload, "apply", "--trust", b.path("trust.json"), "--disk", disk, "--json", b.url + "/" + b.tsp(c)}}, nil
}

// tsp is the payload of c, named for the payload binary that builds it: a rebuilt binary (a
// new builder) makes new payloads, the images stay.
func (b *bench) tsp(c Case) string { return fmt.Sprintf("%s.%s.tsp", c.Name, b.payloadID) }

type casyncPeer struct{ b *bench }

func (casyncPeer) name() string { return "casync" }

func (p casyncPeer) prepare(ctx context.Context, c Case) error {
	b := p.b
	return b.once(b.path(c.Name+".caibx"), func(tmp string) error {
		// casync names the index by its suffix: keep .caibx on the temporary name.
		t := tmp + ".caibx"
		if err := run(ctx, b.dir, "casync", "make", "--store=store.castr", t, c.image); err != nil {
			return err
		}
		return os.Rename(t, tmp)
	})
}

func (p casyncPeer) setup(_ context.Context, c Case, scratch string) (string, int64, [][]string, error) {
	b := p.b
	out := filepath.Join(scratch, "out.img")
	return out, 0, [][]string{{"casync", "extract", "--store=" + b.url + "/store.castr", "--seed=" + b.base,
		b.url + "/" + c.Name + ".caibx", out}}, nil
}

type zchunkPeer struct{ b *bench }

func (zchunkPeer) name() string { return "zchunk" }

func (p zchunkPeer) prepare(ctx context.Context, c Case) error {
	b := p.b
	zck := func(img string) error {
		return b.once(img+".zck", func(tmp string) error { return run(ctx, b.dir, "zck", "-o", tmp, img) })
	}
	if c.Full { // one case builds the host's copy of the base too
		if err := zck(b.base); err != nil {
			return err
		}
	}
	return zck(c.image)
}

func (p zchunkPeer) setup(_ context.Context, c Case, scratch string) (string, int64, [][]string, error) {
	b := p.b
	name := c.Name + ".img"
	return filepath.Join(scratch, name), 0, [][]string{
		{"zckdl", "-q", "-s", b.base + ".zck", b.url + "/" + name + ".zck"},
		{"unzck", name + ".zck"},
	}, nil
}
