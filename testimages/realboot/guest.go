package realboot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/twinslot/twinslot/updated/floor"
)

// The files the walk adds to the guest's ROOT (mkimage os --root-overlay): where the server
// and etcd are, a quicker check schedule than a fleet's, the journal on the serial console,
// and a unit that reports what runs on the console every few seconds. Nothing here reaches
// anything but the two guestfwd addresses.
var overlayFiles = map[string]string{
	"etc/twinslot/update.conf": `# e2e-boot: the update server on the host, through QEMU's guestfwd
SERVER=http://` + guestServer + `/v1/update/
GROUP=` + Group + `
REBOOT_STRATEGY=etcd-lock
HEALTH_TIMEOUT=4m
`,
	"etc/twinslot/locksmithd.env": `LOCKSMITHD_ENDPOINT=http://` + guestEtcd + `
LOCKSMITHD_GROUP=` + Lock + `
`,
	"etc/systemd/system/updated.service.d/e2e.conf": `[Service]
ExecStart=
ExecStart=/usr/bin/updated --first-check 15s --check-interval 20s --log-stderr
`,
	"etc/systemd/journald.conf.d/e2e-console.conf": `[Journal]
ForwardToConsole=yes
TTYPath=/dev/ttyS0
MaxLevelConsole=info
`,
	"etc/systemd/system/twinslot-e2e-report.service": `[Unit]
Description=twinslot e2e: report the running system on the serial console

[Service]
ExecStart=/etc/twinslot/e2e-report
Restart=always

[Install]
WantedBy=multi-user.target
`,
	"etc/twinslot/e2e-report": reportScript,
}

// reportScript prints one ReportPrefix line every 3 s: the running /usr's version and build,
// the initrd's marker, the /usr device and mount options, the machine id, the state of
// updated, locksmithd and systemd, and the agent's operation and progress (updatectl status).
const reportScript = `#!/bin/sh
while :; do
  . /usr/lib/os-release
  m=$(tr -d '\n' < /run/twinslot/initrd-marker 2>/dev/null | tr -c 'A-Za-z0-9._+-' '_')
  st=$(updatectl status 2>/dev/null)
  op=$(printf '%s\n' "$st" | sed -n 's/^operation:[[:space:]]*//p')
  pr=$(printf '%s\n' "$st" | sed -n 's/^progress:[[:space:]]*\([0-9.]*\)%.*/\1/p')
  printf 'TWINSLOT-E2E version=%s build=%s marker=%s usr=%s usr_opts=%s machine=%s updated=%s locksmithd=%s system=%s op=%s progress=%s\n' \
    "$VERSION" "$BUILD_ID" "${m:-none}" "$(findmnt -n -o SOURCE /usr)" "$(findmnt -n -o OPTIONS /usr | cut -d, -f1)" \
    "$(cat /etc/machine-id)" "$(systemctl is-active updated)" "$(systemctl is-active locksmithd)" \
    "$(systemctl is-system-running)" "${op:-none}" "${pr:-0}" > /dev/ttyS0
  sleep 3
done
`

// writeOverlay writes overlayFiles under dir, and enables the report unit.
func writeOverlay(dir string) error {
	for name, content := range overlayFiles {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if name == "etc/twinslot/e2e-report" {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			return err
		}
	}
	wants := filepath.Join(dir, "etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return err
	}
	link := filepath.Join(wants, "twinslot-e2e-report.service")
	os.Remove(link)
	return os.Symlink("/etc/systemd/system/twinslot-e2e-report.service", link)
}

// expectESP checks that the stopped machine's ESP holds version v's kernel and initrd for
// slot letter, byte for byte (read with go-diskfs's FAT32 reader).
func (w *walk) expectESP(letter, v string) error {
	f, err := os.Open(w.disk)
	if err != nil {
		return err
	}
	defer f.Close()
	d, err := diskfs.OpenBackend(file.New(f, true))
	if err != nil {
		return err
	}
	fs, err := d.GetFilesystem(1)
	if err != nil {
		return fmt.Errorf("read the ESP: %w", err)
	}
	dir := filepath.Join(w.o.Dir, "os-"+v)
	for esp, src := range map[string]string{"/twinslot/vmlinuz-" + letter: "vmlinuz", "/twinslot/initrd-" + letter: "initrd.img"} {
		ef, err := fs.OpenFile(esp, os.O_RDONLY)
		if err != nil {
			return fmt.Errorf("ESP %s: %w", esp, err)
		}
		got := sha256.New()
		_, err = io.Copy(got, ef)
		ef.Close()
		if err != nil {
			return fmt.Errorf("ESP %s: %w", esp, err)
		}
		want, err := os.ReadFile(filepath.Join(dir, src))
		if err != nil {
			return err
		}
		if sum := sha256.Sum256(want); !bytes.Equal(got.Sum(nil), sum[:]) {
			return fmt.Errorf("ESP %s is not %s's %s", esp, v, src)
		}
	}
	return nil
}

// writeESP replaces a file on the stopped machine's ESP (go-diskfs's FAT32 writer).
func (w *walk) writeESP(name string, content []byte) error {
	f, err := os.OpenFile(w.disk, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	d, err := diskfs.OpenBackend(file.New(f, false))
	if err != nil {
		return err
	}
	fs, err := d.GetFilesystem(1)
	if err != nil {
		return fmt.Errorf("open the ESP: %w", err)
	}
	ef, err := fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("ESP %s: %w", name, err)
	}
	if _, err := ef.Write(content); err != nil {
		ef.Close()
		return fmt.Errorf("ESP %s: %w", name, err)
	}
	if err := ef.Close(); err != nil {
		return err
	}
	return f.Sync()
}

// expectFloor reads the anti-rollback counter from the guest's TPM state (the machine is
// stopped): swtpm is started on the same state directory and asked over its socket.
func (w *walk) expectFloor(ctx context.Context, want uint64) error {
	sock := filepath.Join(w.tpmDir, "read.sock")
	os.Remove(sock)
	cmd := exec.CommandContext(ctx, "swtpm", "socket", "--tpm2", "--tpmstate", "dir="+w.tpmDir,
		"--server", "type=unixio,path="+sock, "--ctrl", "type=unixio,path="+sock+".ctrl", "--flags", "not-need-init,startup-clear")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start swtpm: %w", err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		os.Remove(sock)
		os.Remove(sock + ".ctrl")
	}()
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 250 {
			return fmt.Errorf("swtpm made no socket: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t, err := linuxudstpm.Open(sock)
	if err != nil {
		return err
	}
	defer t.Close()
	got, err := (&floor.TPM{T: t}).Get(ctx)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("the TPM floor is %d, want %d", got, want)
	}
	return nil
}
