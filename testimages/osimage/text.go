package osimage

import (
	"fmt"
	"strings"

	"github.com/twinslot/twinslot/testimages"
)

// GrubConfig is the static ESP:/EFI/BOOT/grub.cfg of every image: gptprio.next chooses the
// /usr slot from the GPT bits (the only source of truth), the slot's GUID names the kernel
// and initrd pair on the ESP, and the kernel mounts / from ROOT and /usr from that slot.
// It never changes with an update.
func GrubConfig() string {
	return fmt.Sprintf(`serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
set gfxpayload=text

gptprio.next -d usr_dev -u usr_uuid
if [ "$usr_uuid" = "%s" ]; then
  set slot=a
elif [ "$usr_uuid" = "%s" ]; then
  set slot=b
else
  echo "twinslot: no bootable /usr"
  sleep 5
  reboot
fi
echo "twinslot: booting USR-$slot ($usr_uuid)"
linux /twinslot/vmlinuz-$slot %s
initrd /twinslot/initrd-$slot
boot
`, strings.ToLower(testimages.GUIDUsrA), strings.ToLower(testimages.GUIDUsrB), KernelArgs("$usr_uuid"))
}

// KernelArgs is the kernel command line GRUB passes for the /usr partition usrUUID (a GUID,
// or the GRUB variable holding it). The kernel is quiet (warnings and worse); systemd shows
// each unit's status on the serial console, so a harness can follow the boot.
func KernelArgs(usrUUID string) string {
	return fmt.Sprintf("root=PARTUUID=%s mount.usr=PARTUUID=%s mount.usrfstype=ext4 mount.usrflags=ro ro "+
		"console=ttyS0,115200 panic=10 loglevel=4 systemd.show_status=1",
		strings.ToLower(testimages.GUIDRoot), usrUUID)
}

// OSRelease renders /usr/lib/os-release. Every reader parses it with partition/osrelease
// (VERSION_ID is the version, BOARD the board); BUILD_ID tells two builds of one version apart.
func OSRelease(version, buildID, board string) string {
	return fmt.Sprintf(`ID=twinslot
ID_LIKE=debian
NAME="twinslot"
VERSION=%s
VERSION_ID=%s
BUILD_ID=%s
BOARD=%s
PRETTY_NAME="twinslot %s (%s)"
HOME_URL="https://github.com/twinslot/twinslot"
`, version, version, buildID, board, version, board)
}

// Units and files the image carries, by path inside /usr or ROOT.
const (
	unitDir          = "lib/systemd/system" // in /usr
	wantsDir         = unitDir + "/multi-user.target.wants"
	brokenUnit       = "twinslot-broken.service"
	goodPath         = "lib/twinslot/good" // empty; where a broken image has lib/twinslot/broken
	markerUnit       = "twinslot-initrd-marker.service"
	markerInInitrd   = "etc/twinslot/initrd-marker"
	MarkerPath       = "/run/twinslot/initrd-marker" // where the booted system finds the marker
	dbusPolicyPath   = "share/dbus-1/system.d/com.coreos.update1.conf"
	TrustPath        = "share/twinslot/trust.json" // in /usr
	FillerPath       = "share/twinslot/filler"     // in /usr
	sysusersPath     = "lib/sysusers.d/twinslot.conf"
	Group            = "twinslot" // the one group besides root that may call com.coreos.update1
	networkdConfPath = "etc/systemd/network/50-twinslot-dhcp.network"
)

// brokenUnitText is a unit that fails where /usr/lib/twinslot/broken exists (images built
// --broken), so the health gate ("systemd running, no failed units") fails on such a boot.
// Every image has it enabled; elsewhere its condition skips it, which is not a failure.
const brokenUnitText = `[Unit]
Description=twinslot: a unit that fails on purpose (this image was built --broken)
ConditionPathExists=/usr/` + testimages.BrokenPath + `
After=basic.target

[Service]
Type=oneshot
ExecStart=/bin/false

[Install]
WantedBy=multi-user.target
`

// markerUnitText runs in the initrd (enabled in its initrd.target.wants) and copies the
// marker the build appended to the initrd to /run, which survives the switch to the real root.
const markerUnitText = `[Unit]
Description=twinslot: record which initrd booted
DefaultDependencies=no
ConditionPathExists=/etc/initrd-release
Before=initrd.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=mkdir -p /run/twinslot
ExecStart=cp /` + markerInInitrd + ` ` + MarkerPath + `

[Install]
WantedBy=initrd.target
`

const sysusersText = "# The group whose members may call com.coreos.update1 (see the D-Bus policy).\ng " + Group + " -\n"

const networkdText = `# QEMU user networking (and most lab machines): DHCP on the first wired interface.
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
`

// fstabText mounts ROOT read-write (the kernel mounts it ro; systemd-remount-fs applies
// this) and the ESP at /boot, where the agent copies a new slot's kernel and initrd.
func fstabText() string {
	return fmt.Sprintf(`# twinslot: / is ROOT, /usr is the booted USR slot (mounted by the initrd from mount.usr=).
PARTUUID=%s / ext4 rw,errors=remount-ro 0 1
PARTUUID=%s /boot vfat umask=0077,shortname=winnt 0 2
`, strings.ToLower(testimages.GUIDRoot), strings.ToLower(testimages.GUIDESP))
}

// autologinText is a serial-getty drop-in that logs root in on ttyS0 (a lab image).
const autologinText = `[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 - $TERM
`

// fixUnit adapts a unit from updated/dist or locksmith/dist to the image: the binaries live in
// /usr/bin. It fails when the unit has no ExecStart naming binary.
func fixUnit(text, binary string) (string, error) {
	var out strings.Builder
	found := false
	for line := range strings.Lines(text) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && k == "ExecStart" {
			fields := strings.Fields(v)
			if len(fields) > 0 && strings.HasSuffix(fields[0], "/"+binary) {
				fields[0] = "/usr/bin/" + binary
				line = "ExecStart=" + strings.Join(fields, " ") + "\n"
				found = true
			}
		}
		out.WriteString(line)
	}
	if !found {
		return "", fmt.Errorf("unit has no ExecStart=…/%s line", binary)
	}
	return out.String(), nil
}

// fixPolicy adapts updated/dist/com.coreos.update1.conf: the Manager methods the "core" user
// may call are granted to the group Group instead (twinslot images have no core user).
func fixPolicy(text string) (string, error) {
	const from = `<policy user="core">`
	if strings.Count(text, from) != 1 {
		return "", fmt.Errorf("D-Bus policy: want exactly one %s section", from)
	}
	return strings.Replace(text, from, `<policy group="`+Group+`">`, 1), nil
}
