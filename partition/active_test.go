package partition

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

func TestParseCmdline(t *testing.T) {
	const uuidA = "7130c94a-213a-4e5a-8e26-6cce9662f132"
	for _, tc := range []struct {
		name    string
		cmdline string
		want    Booted
		ok      bool
	}{
		{name: "empty", cmdline: ""},
		{name: "no usr", cmdline: "root=LABEL=ROOT console=ttyS0 quiet"},
		{name: "only a filesystem label", cmdline: "mount.usr=LABEL=USR"},
		{name: "mapper only", cmdline: "mount.usr=/dev/mapper/usr"},
		{name: "flatcar without verity", cmdline: "BOOT_IMAGE=/flatcar/vmlinuz-a mount.usr=PARTUUID=7130C94A-213A-4E5A-8E26-6CCE9662F132 rootflags=rw mount.usrflags=ro",
			want: Booted{PartUUID: uuidA, From: "cmdline mount.usr"}, ok: true},
		{name: "flatcar with verity", cmdline: "mount.usr=/dev/mapper/usr verity.usr=PARTUUID=" + uuidA + " verity.usrhash=abc",
			want: Booted{PartUUID: uuidA, From: "cmdline verity.usr"}, ok: true},
		{name: "usr= by-partuuid", cmdline: "usr=/dev/disk/by-partuuid/" + uuidA, want: Booted{PartUUID: uuidA, From: "cmdline usr"}, ok: true},
		{name: "partlabel", cmdline: "mount.usr=PARTLABEL=USR-B", want: Booted{PartLabel: "USR-B", From: "cmdline mount.usr"}, ok: true},
		{name: "by-partlabel", cmdline: "mount.usr=/dev/disk/by-partlabel/USR-B", want: Booted{PartLabel: "USR-B", From: "cmdline mount.usr"}, ok: true},
		{name: "device", cmdline: "mount.usr=/dev/vda4", want: Booted{Device: "/dev/vda4", From: "cmdline mount.usr"}, ok: true},
		{name: "last one wins", cmdline: "mount.usr=/dev/vda3 mount.usr=/dev/vda4", want: Booted{Device: "/dev/vda4", From: "cmdline mount.usr"}, ok: true},
		{name: "quoted", cmdline: `x="a b" "mount.usr=PARTLABEL=USR A"` + "\n", want: Booted{PartLabel: "USR A", From: "cmdline mount.usr"}, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseCmdline(tc.cmdline)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("got %+v %v, want %+v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

const mountinfo = `22 1 254:9 / / rw,relatime shared:1 - ext4 /dev/vda9 rw
25 22 254:3 / /usr ro,relatime shared:5 - btrfs /dev/vda3 ro
26 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw
`

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Booted
		ok   bool
	}{
		{name: "empty", in: ""},
		{name: "garbage", in: "1 2 3\n- - -\n"},
		{name: "no /usr", in: "22 1 254:9 / / rw - ext4 /dev/vda9 rw\n"},
		{name: "usr on a partition", in: mountinfo, want: Booted{Device: "/dev/vda3", DevNum: "254:3", From: "mountinfo"}, ok: true},
		{name: "usr on verity", in: "30 22 253:0 / /usr ro shared:9 - ext4 /dev/mapper/usr ro\n", want: Booted{Device: "/dev/mapper/usr", DevNum: "253:0", From: "mountinfo"}, ok: true},
		{name: "no optional fields", in: "30 22 253:1 / /usr ro - ext4 /dev/vdb4 ro\n", want: Booted{Device: "/dev/vdb4", DevNum: "253:1", From: "mountinfo"}, ok: true},
		{name: "later mount wins", in: mountinfo + "40 25 254:4 / /usr ro - ext4 /dev/vda4 ro\n", want: Booted{Device: "/dev/vda4", DevNum: "254:4", From: "mountinfo"}, ok: true},
		{name: "escaped mount point is not /usr", in: `30 22 253:1 / /usr\040x ro - ext4 /dev/vdb4 ro` + "\n"},
		{name: "overlay source", in: "30 22 0:40 / /usr ro - overlay overlay ro\n", want: Booted{DevNum: "0:40", From: "mountinfo"}, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseMountinfo(tc.in)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("got %+v %v, want %+v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// host is a fake live host: udev links, sysfs with vda3/vda4 and a verity dm-0 on vda4.
func host(cmdline, mi string) fstest.MapFS {
	link := func(target string) *fstest.MapFile {
		return &fstest.MapFile{Data: []byte(target), Mode: fs.ModeSymlink | 0o777}
	}
	fsys := fstest.MapFS{
		"dev/disk/by-partuuid/7130c94a-213a-4e5a-8e26-6cce9662f132":            link("../../vda3"),
		"dev/disk/by-partuuid/e03dd35c-7c2d-4a47-b3fe-27f15780a57c":            link("../../vda4"),
		"dev/disk/by-partlabel/USR-B":                                          link("../../vda4"),
		"sys/class/block/vda3":                                                 link("../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda3"),
		"sys/class/block/vda4":                                                 link("../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda4"),
		"sys/class/block/dm-0":                                                 link("../../devices/virtual/block/dm-0"),
		"sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda3/partition": {Data: []byte("3\n")},
		"sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda4/partition": {Data: []byte("4\n")},
		"sys/devices/virtual/block/dm-0/slaves/vda4":                           link("../../../../pci0000:00/0000:00:04.0/virtio1/block/vda/vda4"),
		"sys/dev/block/254:3":                                                  link("../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda3"),
		"sys/dev/block/253:0":                                                  link("../../devices/virtual/block/dm-0"),
	}
	if cmdline != "" {
		fsys["proc/cmdline"] = &fstest.MapFile{Data: []byte(cmdline)}
	}
	if mi != "" {
		fsys["proc/self/mountinfo"] = &fstest.MapFile{Data: []byte(mi)}
	}
	return fsys
}

func TestFindAndLocate(t *testing.T) {
	for _, tc := range []struct {
		name       string
		host       fs.FS
		wantErr    string
		wantDisk   string
		wantNumber int
	}{
		{name: "nothing to go on", host: host("quiet", ""), wantErr: "pass --disk"},
		{name: "unknown PARTUUID", host: host("mount.usr=PARTUUID=00000000-0000-0000-0000-000000000000", ""), wantErr: "locate"},
		{name: "cmdline PARTUUID", host: host("mount.usr=PARTUUID=7130C94A-213A-4E5A-8E26-6CCE9662F132", ""), wantDisk: "/dev/vda", wantNumber: 3},
		{name: "cmdline verity", host: host("mount.usr=/dev/mapper/usr verity.usr=PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c", ""), wantDisk: "/dev/vda", wantNumber: 4},
		{name: "cmdline label", host: host("mount.usr=PARTLABEL=USR-B", ""), wantDisk: "/dev/vda", wantNumber: 4},
		{name: "cmdline device", host: host("mount.usr=/dev/vda3", ""), wantDisk: "/dev/vda", wantNumber: 3},
		{name: "mountinfo partition", host: host("quiet", mountinfo), wantDisk: "/dev/vda", wantNumber: 3},
		{name: "mountinfo verity through dm slaves", host: host("", "30 22 253:0 / /usr ro - ext4 /dev/mapper/usr ro\n"), wantDisk: "/dev/vda", wantNumber: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := FindBooted(tc.host)
			if err == nil {
				b, err = Locate(tc.host, b)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Disk != tc.wantDisk || b.Number != tc.wantNumber {
				t.Fatalf("located %+v, want %s #%d", b, tc.wantDisk, tc.wantNumber)
			}
		})
	}
}

func TestActive(t *testing.T) {
	path := freshImage(t)
	d := openT(t, path, ReadOnly())
	for _, tc := range []struct {
		name    string
		b       Booted
		want    int
		wantErr error
	}{
		{name: "unknown PARTUUID", b: Booted{PartUUID: "00000000-0000-0000-0000-000000000000"}, wantErr: ErrUnknownSlot},
		{name: "number on another disk", b: Booted{Disk: "/dev/sdz", Number: 3}, wantErr: ErrUnknownSlot},
		{name: "nothing", b: Booted{}, wantErr: ErrUnknownSlot},
		{name: "PARTUUID any case", b: Booted{PartUUID: strings.ToUpper(guidB)}, want: 4},
		{name: "label", b: Booted{PartLabel: "USR-A"}, want: 3},
		{name: "number on this disk", b: Booted{Disk: path, Number: 4}, want: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := d.Active(tc.b)
			if !errors.Is(err, tc.wantErr) || s.Number != tc.want {
				t.Fatalf("got %v, %v; want %d, %v", s, err, tc.want, tc.wantErr)
			}
		})
	}
}
