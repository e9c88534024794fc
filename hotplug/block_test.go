package hotplug

import (
	"errors"
	"io/fs"
	"os"
	"slices"
	"syscall"
	"testing"
	"testing/fstest"

	"golang.org/x/sys/unix"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

func TestBlockUse(t *testing.T) {
	m := hwfixture.DiskVM()
	r := NewReader(m.Sys, m.Run).WithProc(m.Proc)
	for _, tc := range []struct {
		major, minor uint32
		want         BlockUse
	}{
		{254, 0, BlockUse{Name: "vda", Mounted: true}}, // through its partition
		{254, 1, BlockUse{Name: "vda1", Mounted: true}},
		{254, 2, BlockUse{Name: "vda2"}}, // the mounted one's sibling
		{254, 16, BlockUse{Name: "vdb"}}, // dm-0 holds its partition, not it
		{254, 17, BlockUse{Name: "vdb1", Holders: []string{"dm-0"}}},
		{253, 0, BlockUse{Name: "dm-0", Mounted: true}}, // a mount point with a space
		{254, 32, BlockUse{Name: "vdc"}},
	} {
		got, err := r.BlockUse(tc.major, tc.minor)
		if err != nil || got.Name != tc.want.Name || got.Mounted != tc.want.Mounted || !slices.Equal(got.Holders, tc.want.Holders) {
			t.Errorf("BlockUse(%d:%d) = %+v, %v; want %+v", tc.major, tc.minor, got, err, tc.want)
		}
	}
	if _, err := r.BlockUse(254, 99); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("BlockUse of a device sysfs does not know = %v, want fs.ErrNotExist", err)
	}
}

// Without a mount table nothing is mounted; holders still count.
func TestBlockUseWithoutProc(t *testing.T) {
	m := hwfixture.DiskVM()
	r := NewReader(m.Sys, nil)
	if u, err := r.BlockUse(254, 1); err != nil || u.Mounted {
		t.Errorf("BlockUse(vda1) with no mount table = %+v, %v; want not mounted", u, err)
	}
	if u, err := r.BlockUse(254, 17); err != nil || !slices.Equal(u.Holders, []string{"dm-0"}) {
		t.Errorf("BlockUse(vdb1) with no mount table = %+v, %v; want held by dm-0", u, err)
	}
}

// A Reader reads the mount table once: one read of the device state sees
// one mount table, and the next Reader sees a mount made meanwhile.
func TestBlockUseReadsMountsOnce(t *testing.T) {
	m := hwfixture.New(false)
	vdc := m.Plug(hwfixture.VirtioDisk{Addr: "0000:00:06.0", Virtio: 4, Index: 2})
	r := NewReader(m.Sys, nil).WithProc(m.Proc)
	if u, _ := r.BlockUse(254, 32); u.Mounted {
		t.Fatalf("vdc mounted before any mount: %+v", u)
	}
	m.Mount(vdc.Node("vdc"), "/mnt", "ext4")
	if u, _ := r.BlockUse(254, 32); u.Mounted {
		t.Errorf("the same Reader read the mount table again: %+v", u)
	}
	if u, _ := NewReader(m.Sys, nil).WithProc(m.Proc).BlockUse(254, 32); !u.Mounted {
		t.Errorf("a new Reader does not see the mount: %+v", u)
	}
}

func TestParseMountinfo(t *testing.T) {
	got := parseMountinfo([]byte(
		"22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
			"23 22 0:21 / /proc rw shared:2 - proc proc rw\n" +
			// No optional fields; an escaped mount point; no final newline.
			"36 22 253:1 /data /srv/my\\040data rw,noatime - xfs /dev/mapper/vg0-data rw\n" +
			// A cut line (a file read while it changed) is skipped,
			// however short.
			"37 22\n" + "38\n"))
	want := map[string]bool{"254:0": true, "0:21": true, "253:1": true}
	if len(got) != len(want) {
		t.Errorf("parseMountinfo = %v, want %v", got, want)
	}
	for id := range want {
		if !got[id] {
			t.Errorf("parseMountinfo = %v, want %v", got, want)
		}
	}
}

func TestNodeGID(t *testing.T) {
	dev := fstest.MapFS{
		"ttyUSB0":             {Mode: fs.ModeDevice | fs.ModeCharDevice | 0o660, Sys: &syscall.Stat_t{Gid: 20}},
		"serial/by-id/usb-x":  {Mode: fs.ModeSymlink | 0o777, Data: []byte("../../ttyUSB0")},
		"no-owner":            {Mode: fs.ModeDevice | fs.ModeCharDevice | 0o660},
		"snd/controlC0":       {Mode: fs.ModeDevice | fs.ModeCharDevice | 0o660, Sys: &syscall.Stat_t{Gid: 29}},
		"serial/by-path/gone": {Mode: fs.ModeSymlink | 0o777, Data: []byte("../../ttyUSB9")},
	}
	for name, want := range map[string]uint32{"ttyUSB0": 20, "serial/by-id/usb-x": 20, "snd/controlC0": 29} {
		if gid, err := NodeGID(dev, name); err != nil || gid != want {
			t.Errorf("NodeGID(%s) = %d, %v; want %d", name, gid, err, want)
		}
	}
	if _, err := NodeGID(dev, "no-owner"); err == nil {
		t.Error("NodeGID of a FileInfo without *syscall.Stat_t: no error")
	}
	if _, err := NodeGID(dev, "serial/by-path/gone"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("NodeGID through a dangling link = %v, want fs.ErrNotExist", err)
	}
	// The real /dev: what stat(2) says.
	var st unix.Stat_t
	if err := unix.Stat("/dev/null", &st); err != nil {
		testutil.SkipEnv(t, "skipping the real /dev: %v", err)
	}
	if gid, err := NodeGID(os.DirFS("/dev"), "null"); err != nil || gid != st.Gid {
		t.Errorf("NodeGID(/dev/null) = %d, %v; stat(2) says %d", gid, err, st.Gid)
	}
}
