package partition

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// Limits on the host files Active reads.
const (
	maxCmdline   = 64 << 10
	maxMountinfo = 4 << 20
	maxDMDepth   = 4 // device-mapper layers followed down to a partition (verity, crypt)
)

// Booted identifies the partition the running system uses as /usr, as far as the host
// tells. Any of the identity fields may be empty.
type Booted struct {
	PartUUID  string // lower-case, from PARTUUID=… or /dev/disk/by-partuuid/…
	PartLabel string // from PARTLABEL=… or /dev/disk/by-partlabel/…
	Device    string // a device path such as /dev/vda3
	DevNum    string // "major:minor" of the device mounted at /usr
	From      string // where it was found: "cmdline mount.usr", "mountinfo", …

	// Set by Locate.
	Disk   string // whole-disk device holding the partition, such as /dev/vda
	Number int    // partition number on Disk
}

func (b Booted) String() string {
	var parts []string
	for _, kv := range [][2]string{{"PARTUUID", b.PartUUID}, {"PARTLABEL", b.PartLabel}, {"device", b.Device}, {"dev", b.DevNum}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+kv[1])
		}
	}
	if b.Disk != "" {
		parts = append(parts, fmt.Sprintf("partition %d of %s", b.Number, b.Disk))
	}
	s := strings.Join(parts, " ")
	if b.From != "" {
		s += " (from " + b.From + ")"
	}
	return s
}

// cmdlineKeys are the kernel parameters naming /usr, most specific first: with dm-verity
// Flatcar's GRUB sets mount.usr=/dev/mapper/usr and verity.usr=PARTUUID=….
var cmdlineKeys = []string{"verity.usr", "mount.usr", "usr"}

// ParseCmdline finds the /usr partition in a kernel command line (/proc/cmdline). It
// understands PARTUUID=, PARTLABEL=, /dev/disk/by-partuuid/, /dev/disk/by-partlabel/ and
// plain device paths; /dev/mapper/ names are skipped in favour of the next key.
func ParseCmdline(cmdline string) (Booted, bool) {
	params := map[string]string{}
	for _, f := range splitCmdline(cmdline) {
		if k, v, ok := strings.Cut(f, "="); ok {
			params[k] = v // the last one wins, as in the kernel
		}
	}
	for _, k := range cmdlineKeys {
		v, ok := params[k]
		if !ok {
			continue
		}
		b := Booted{From: "cmdline " + k}
		switch {
		case strings.HasPrefix(v, "PARTUUID="):
			b.PartUUID = strings.ToLower(strings.TrimPrefix(v, "PARTUUID="))
		case strings.HasPrefix(v, "PARTLABEL="):
			b.PartLabel = strings.TrimPrefix(v, "PARTLABEL=")
		case strings.HasPrefix(v, "/dev/disk/by-partuuid/"):
			b.PartUUID = strings.ToLower(path.Base(v))
		case strings.HasPrefix(v, "/dev/disk/by-partlabel/"):
			b.PartLabel = path.Base(v)
		case strings.HasPrefix(v, "/dev/mapper/"), !strings.HasPrefix(v, "/dev/"):
			continue
		default:
			b.Device = v
		}
		return b, true
	}
	return Booted{}, false
}

// splitCmdline splits at spaces outside double quotes and drops the quotes.
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, any := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, any = !quoted, true
		case (r == ' ' || r == '\t' || r == '\n') && !quoted:
			if any {
				out = append(out, cur.String())
			}
			cur.Reset()
			any = false
		default:
			cur.WriteRune(r)
			any = true
		}
	}
	if any {
		out = append(out, cur.String())
	}
	return out
}

// ParseMountinfo finds the device mounted at /usr in /proc/self/mountinfo (the last mount
// wins, as later mounts hide earlier ones).
func ParseMountinfo(mountinfo string) (Booted, bool) {
	var b Booted
	var found bool
	for line := range strings.Lines(mountinfo) {
		f := strings.Fields(line)
		// id parent major:minor root mountpoint options [optional…] - fstype source superoptions
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(f) || unescapeMount(f[4]) != "/usr" {
			continue
		}
		b = Booted{DevNum: f[2], From: "mountinfo"}
		if src := unescapeMount(f[sep+2]); strings.HasPrefix(src, "/dev/") {
			b.Device = src
		}
		found = true
	}
	return b, found
}

// unescapeMount undoes the octal escapes (\040 for space) of mountinfo fields.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				out.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		out.WriteByte(s[i])
	}
	return out.String()
}

// FindBooted finds the booted /usr on a host whose root directory is host (os.DirFS("/")
// on a live system): from proc/cmdline, else from the mount at /usr in proc/self/mountinfo.
func FindBooted(host fs.FS) (Booted, error) {
	cmdline, err := readLimited(host, "proc/cmdline", maxCmdline)
	if err == nil {
		if b, ok := ParseCmdline(cmdline); ok {
			return b, nil
		}
	}
	mi, err2 := readLimited(host, "proc/self/mountinfo", maxMountinfo)
	if err2 == nil {
		if b, ok := ParseMountinfo(mi); ok {
			return b, nil
		}
	}
	return Booted{}, fmt.Errorf("find booted /usr: no usr= / mount.usr= on the kernel command line and nothing mounted at /usr (cmdline: %v, mountinfo: %v); pass --disk", errOrNone(err), errOrNone(err2))
}

func errOrNone(err error) any {
	if err == nil {
		return "read"
	}
	return err
}

// Locate resolves b on a live host to the whole-disk device and partition number, through
// dev/disk/by-partuuid, dev/disk/by-partlabel, sys/dev/block and sys/class/block (following
// device-mapper devices such as dm-verity down to the partition under them).
func Locate(host fs.FS, b Booted) (Booted, error) {
	name, err := blockName(host, b)
	if err != nil {
		return b, fmt.Errorf("locate booted /usr %v: %w", b, err)
	}
	for range maxDMDepth {
		slaves, err := fs.ReadDir(host, "sys/class/block/"+name+"/slaves")
		if err != nil || len(slaves) == 0 {
			break
		}
		if len(slaves) != 1 {
			return b, fmt.Errorf("locate booted /usr %v: %s sits on %d devices; pass --disk", b, name, len(slaves))
		}
		name = slaves[0].Name()
	}
	num, err := readLimited(host, "sys/class/block/"+name+"/partition", 32)
	if err != nil {
		return b, fmt.Errorf("locate booted /usr %v: %s is not a partition: %w", b, name, err)
	}
	if b.Number, err = strconv.Atoi(strings.TrimSpace(num)); err != nil || b.Number < 1 {
		return b, fmt.Errorf("locate booted /usr %v: bad partition number %q for %s", b, num, name)
	}
	target, err := fs.ReadLink(host, "sys/class/block/"+name)
	if err != nil {
		return b, fmt.Errorf("locate booted /usr %v: parent disk of %s: %w", b, name, err)
	}
	b.Disk = "/dev/" + path.Base(path.Dir(target))
	return b, nil
}

// blockName is the kernel name (vda3, dm-0) of the booted device.
func blockName(host fs.FS, b Booted) (string, error) {
	link := func(p string) (string, error) {
		t, err := fs.ReadLink(host, p)
		if err != nil {
			return "", err
		}
		return path.Base(t), nil
	}
	switch {
	case b.PartUUID != "":
		return link("dev/disk/by-partuuid/" + b.PartUUID)
	case b.PartLabel != "":
		return link("dev/disk/by-partlabel/" + b.PartLabel)
	case b.DevNum != "":
		return link("sys/dev/block/" + b.DevNum)
	case b.Device != "":
		p := strings.TrimPrefix(b.Device, "/")
		if t, err := link(p); err == nil {
			return t, nil
		}
		return path.Base(p), nil
	}
	return "", errors.New("nothing identifies the device")
}

func readLimited(fsys fs.FS, name string, limit int64) (string, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return "", err
	}
	if int64(len(b)) > limit {
		return "", fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return string(b), nil
}

// ActiveSlot returns the slot of slots that b names: by PARTUUID, else by label, else (when
// Locate found it on this disk) by partition number.
func ActiveSlot(slots []Slot, b Booted) (Slot, error) {
	for _, s := range slots {
		switch {
		case b.PartUUID != "" && strings.EqualFold(s.PartUUID, b.PartUUID),
			b.PartUUID == "" && b.PartLabel != "" && s.Label == b.PartLabel,
			b.PartUUID == "" && b.PartLabel == "" && b.Number > 0 && s.Number == b.Number:
			return s, nil
		}
	}
	return Slot{}, fmt.Errorf("%w: the booted /usr (%v) is none of the slots %s", ErrUnknownSlot, b, describe(slots))
}

// Active returns the slot of this disk that the running system booted from, as b says
// (see FindBooted and Locate); ErrUnknownSlot when b names none of its slots.
func (d *Disk) Active(b Booted) (Slot, error) {
	slots, err := d.Slots()
	if err != nil {
		return Slot{}, err
	}
	s, booted, err := ActiveOf(slots, d.path, &b)
	if err == nil && !booted {
		return Slot{}, fmt.Errorf("%w: the booted /usr (%v) is none of the slots %s", ErrUnknownSlot, b, describe(slots))
	}
	return s, err
}
