package hotplug

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"

	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
	"golang.org/x/sys/unix"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

const (
	usbHub  = "devices/pci0000:00/0000:00:14.0/usb1"
	ttyUSB0 = usbHub + "/1-1/1-1:1.0/ttyUSB0/tty/ttyUSB0"
	ttyUSB1 = usbHub + "/1-2/1-2:1.0/ttyUSB1/tty/ttyUSB1"
	zram0   = "devices/virtual/block/zram0"
)

func link(target string) *fstest.MapFile {
	return &fstest.MapFile{Mode: fs.ModeSymlink | 0o777, Data: []byte(target)}
}

func file(data string) *fstest.MapFile { return &fstest.MapFile{Mode: 0o444, Data: []byte(data)} }

// up climbs from the directory dir to the sys root, as the kernel's
// relative links do.
func up(dir string) string { return strings.Repeat("../", strings.Count(dir, "/")+1) }

// sysFS is a fake /sys: two FTDI adapters differing only by serial, the
// USB root hub above them, a zram disk, and broken or hostile links.
func sysFS() fstest.MapFS {
	// The adapters as the fixture generator lays them out (ttyUSB0 in
	// port 1, ttyUSB1 in port 2), the rest by hand.
	hw := hwfixture.New(false)
	hw.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	hw.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "2", "X9Y8Z7"))
	m := hw.Sys.Snapshot()
	for k, v := range (fstest.MapFS{
		zram0 + "/uevent":    file("MAJOR=252\nMINOR=0\nDEVNAME=zram0\nDEVTYPE=disk\nDISKSEQ=9\n"),
		zram0 + "/disksize":  file("0\n"),
		zram0 + "/subsystem": link("../../../../class/block"),
		"dev/block/252:0":    link("../../" + zram0),
		// No subsystem link: Subsystem comes from uevent.
		"devices/virtual/odd/odd0/uevent": file("MAJOR=240\nMINOR=0\nDEVNAME=odd0\nSUBSYSTEM=odd\nX=a=b\n"),
		"dev/char/240:0":                  link("../../devices/virtual/odd/odd0"),
		// Two hops, through the class link.
		"dev/char/188:7": link("../../class/tty/ttyUSB0"),
		// Hostile or broken.
		"dev/char/1:1": link("../../../etc"),
		"dev/char/1:2": link("/sys/devices/virtual/mem/full"),
		"dev/char/1:4": link("1:4"),
		"dev/char/1:5": link("../.."),
	}) {
		m[k] = v
	}
	return m
}

// runFS is a fake /run with udev database entries for ttyUSB0 and zram0.
func runFS() fstest.MapFS {
	return fstest.MapFS{
		"udev/data/c188:0": file("S:serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0\n" +
			"S:serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0\n" +
			"L:0\nI:1732831200000000\n" +
			"E:ID_SERIAL_SHORT=A1B2C3\nE:ID_VENDOR_ID=0403\nE:ID_MODEL_ENC=FT232R\\x20USB\\x20UART\n" +
			"G:systemd\nQ:systemd\nV:1\n"),
		"udev/data/b252:0": file("E:ID_FS_TYPE=swap\nE:DEVTYPE=udev-wins\nE:ID_KV=k=v\n"),
		// ttyUSB1's entry is absent: udev has not finished with it.
	}
}

// writeTree materializes m as real files and symlinks under a temporary
// directory, so the same fixtures run through os.DirFS and os.Root.
func writeTree(t testing.TB, m fstest.MapFS) string {
	t.Helper()
	root := t.TempDir()
	for name, f := range m {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if f.Mode.IsDir() {
			err = os.MkdirAll(p, 0o755)
		} else if f.Mode.Type() == fs.ModeSymlink {
			err = os.Symlink(string(f.Data), p)
		} else {
			err = os.WriteFile(p, f.Data, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// fsVariants gives the fixture trees as MapFS, os.DirFS and os.Root FS.
func fsVariants(t *testing.T) map[string][2]fs.FS {
	sysDir, runDir := writeTree(t, sysFS()), writeTree(t, runFS())
	sysRoot, err := os.OpenRoot(sysDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sysRoot.Close() })
	return map[string][2]fs.FS{
		"MapFS":  {sysFS(), runFS()},
		"DirFS":  {os.DirFS(sysDir), os.DirFS(runDir)},
		"OSRoot": {sysRoot.FS(), os.DirFS(runDir)},
	}
}

func TestInfo(t *testing.T) {
	tests := []struct {
		name         string
		major, minor uint32
		block        bool
		want         DeviceInfo
		wantErr      error // matched with errors.Is; nil means no error
		anyErr       bool  // an error without a sentinel to match
	}{{
		name: "usb serial with udev entry", major: 188, minor: 0,
		want: DeviceInfo{
			Subsystem: "tty",
			SysPath:   ttyUSB0,
			Properties: map[string]string{
				"MAJOR": "188", "MINOR": "0", "DEVNAME": "ttyUSB0",
				"SUBSYSTEM": "tty", "DEVPATH": "/" + ttyUSB0,
				"ID_SERIAL_SHORT": "A1B2C3", "ID_VENDOR_ID": "0403",
				"ID_MODEL_ENC": `FT232R\x20USB\x20UART`,
			},
			Links: []string{
				"serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0",
				"serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0",
			},
		},
	}, {
		name: "usb serial without udev entry", major: 188, minor: 1,
		want: DeviceInfo{
			Subsystem: "tty",
			SysPath:   ttyUSB1,
			Properties: map[string]string{
				"MAJOR": "188", "MINOR": "1", "DEVNAME": "ttyUSB1",
				"SUBSYSTEM": "tty", "DEVPATH": "/" + ttyUSB1,
			},
		},
	}, {
		name: "block device, udev wins", major: 252, minor: 0, block: true,
		want: DeviceInfo{
			Subsystem: "block",
			SysPath:   zram0,
			Properties: map[string]string{
				"MAJOR": "252", "MINOR": "0", "DEVNAME": "zram0", "DISKSEQ": "9",
				"DEVTYPE": "udev-wins", "ID_FS_TYPE": "swap", "ID_KV": "k=v",
				"SUBSYSTEM": "block", "DEVPATH": "/" + zram0,
			},
		},
	}, {
		name: "subsystem from uevent", major: 240, minor: 0,
		want: DeviceInfo{
			Subsystem: "odd",
			SysPath:   "devices/virtual/odd/odd0",
			Properties: map[string]string{
				"MAJOR": "240", "MINOR": "0", "DEVNAME": "odd0", "X": "a=b",
				"SUBSYSTEM": "odd", "DEVPATH": "/devices/virtual/odd/odd0",
			},
		},
	}, {
		// The udev entry is looked up by the number asked for, c188:7.
		name: "two hops through class link", major: 188, minor: 7,
		want: DeviceInfo{
			Subsystem: "tty",
			SysPath:   ttyUSB0,
			Properties: map[string]string{
				"MAJOR": "188", "MINOR": "0", "DEVNAME": "ttyUSB0",
				"SUBSYSTEM": "tty", "DEVPATH": "/" + ttyUSB0,
			},
		},
	},
		{name: "char, not block", major: 252, minor: 0, wantErr: fs.ErrNotExist},
		{name: "unknown device", major: 188, minor: 9, wantErr: fs.ErrNotExist},
		{name: "escape above root", major: 1, minor: 1, wantErr: errEscape},
		{name: "escape to root itself", major: 1, minor: 5, wantErr: errEscape},
		{name: "absolute link", major: 1, minor: 2, wantErr: errEscape},
		{name: "link loop", major: 1, minor: 4, anyErr: true},
	}
	for fsName, fss := range fsVariants(t) {
		for _, tt := range tests {
			t.Run(fsName+"/"+tt.name, func(t *testing.T) {
				got, err := NewReader(fss[0], fss[1]).Info(tt.major, tt.minor, tt.block)
				if tt.wantErr != nil || tt.anyErr {
					if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
						t.Fatalf("Info = %+v, %v; want error %v", got, err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("Info =\n%+v\nwant\n%+v", got, tt.want)
				}
			})
		}
	}
}

func TestInfoNilRun(t *testing.T) {
	got, err := NewReader(sysFS(), nil).Info(188, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if got.Links != nil || got.Properties["ID_SERIAL_SHORT"] != "" {
		t.Errorf("udev data without a run FS: %+v", got)
	}
}

func res(kv ...string) map[string]*regexp.Regexp {
	m := make(map[string]*regexp.Regexp)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = regexp.MustCompile(`^(?:` + kv[i+1] + `)$`)
	}
	return m
}

func TestMatchAttrs(t *testing.T) {
	tests := []struct {
		name  string
		minor uint32 // ttyUSB<minor>
		attrs map[string]*regexp.Regexp
		want  bool
	}{
		{"no attrs", 0, nil, true},
		{"all on 1-1", 0, res("idVendor", "0403", "idProduct", "6001", "serial", "A1B2C3"), true},
		{"all on 1-2", 1, res("idVendor", "0403", "idProduct", "6001", "serial", "X9Y8Z7"), true},
		{"serial of the other adapter", 1, res("idVendor", "0403", "serial", "A1B2C3"), false},
		{"serial regexp", 1, res("idVendor", "0403", "serial", "[A-Z0-9]{6}"), true},
		{"on the device itself", 0, res("dev", "188:0"), true},
		{"on the root hub", 0, res("idVendor", "1d6b", "serial", "0000:00:14.0"), true},
		{"trailing blanks trimmed", 0, res("product", "FT232R USB UART"), true},
		{"whole value only", 0, res("idVendor", "04"), false},
		// ATTRS semantics: one ancestor must hold every attribute.
		{"split: interface and usb device", 0, res("idVendor", "0403", "bInterfaceNumber", "00"), false},
		{"split: root hub vendor, adapter serial", 0, res("idVendor", "1d6b", "serial", "A1B2C3"), false},
		{"split: device and usb device", 0, res("dev", "188:0", "serial", "A1B2C3"), false},
		{"missing attribute", 0, res("idVendor", "0403", "nosuch", ".*"), false},
		{"empty regexp needs the file", 0, res("nosuch", ""), false},
		{"parent path in name", 0, res("../serial", "A1B2C3"), false},
		{"absolute name", 0, res("/serial", "A1B2C3"), false},
		{"attribute in a subdirectory", 0, res("tty/ttyUSB0/dev", "188:0"), true},
		{"directory as attribute", 0, res("tty", ".*"), false},
		{"symlink to directory as attribute", 0, res("subsystem", ".*"), false},
	}
	for fsName, fss := range fsVariants(t) {
		for _, tt := range tests {
			t.Run(fsName+"/"+tt.name, func(t *testing.T) {
				r := NewReader(fss[0], fss[1])
				info, err := r.Info(188, tt.minor, false)
				if err != nil {
					t.Fatal(err)
				}
				if got := r.MatchAttrs(info, tt.attrs); got != tt.want {
					t.Errorf("MatchAttrs(ttyUSB%d, %v) = %v, want %v", tt.minor, tt.attrs, got, tt.want)
				}
			})
		}
	}
}

// TestMatchAttrsCache shows a Reader reads each attribute once: a change
// is seen by the next Reader, not by the current one.
func TestMatchAttrsCache(t *testing.T) {
	m := sysFS()
	r := NewReader(m, nil)
	info, err := r.Info(188, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	attrs := res("serial", "A1B2C3")
	if !r.MatchAttrs(info, attrs) {
		t.Fatal("no match before the change")
	}
	m[usbHub+"/1-1/serial"] = file("CHANGED\n")
	if !r.MatchAttrs(info, attrs) {
		t.Error("same Reader saw the change")
	}
	if NewReader(m, nil).MatchAttrs(info, attrs) {
		t.Error("new Reader did not see the change")
	}
}

func TestRdev(t *testing.T) {
	m := fstest.MapFS{
		"ttyUSB0": {Mode: chr | 0o660, Sys: &syscall.Stat_t{Rdev: unix.Mkdev(188, 0)}},
		"zram0":   {Mode: blk | 0o660, Sys: &syscall.Stat_t{Rdev: unix.Mkdev(252, 0)}},
		"big":     {Mode: chr | 0o600, Sys: &syscall.Stat_t{Rdev: unix.Mkdev(4095, 1<<20-1)}},
		"nosys":   {Mode: chr | 0o660},
		"serial0": {Mode: fs.ModeSymlink | 0o777, Data: []byte("ttyUSB0")},
		"file":    {Mode: 0o600, Sys: &syscall.Stat_t{Rdev: unix.Mkdev(1, 1)}},
	}
	tests := []struct {
		name         string
		major, minor uint32
		block, err   bool
	}{
		{"ttyUSB0", 188, 0, false, false},
		{"zram0", 252, 0, true, false},
		{"big", 4095, 1<<20 - 1, false, false},
		{"nosys", 0, 0, false, true},
		{"serial0", 0, 0, false, true}, // symlinks are not followed
		{"file", 0, 0, false, true},
		{"missing", 0, 0, false, true},
	}
	for _, tt := range tests {
		maj, mnr, blk, err := Rdev(m, tt.name)
		if (err != nil) != tt.err || maj != tt.major || mnr != tt.minor || blk != tt.block {
			t.Errorf("Rdev(%s) = %d, %d, %v, %v; want %d, %d, %v, error %v",
				tt.name, maj, mnr, blk, err, tt.major, tt.minor, tt.block, tt.err)
		}
	}
}

// TestReal reads this machine's /sys, /run and /dev: /dev/null always,
// a zram disk when there is one (made through zram-control as root).
func TestReal(t *testing.T) {
	if _, err := os.Stat("/sys/dev/char/1:3"); err != nil {
		testutil.SkipEnv(t, "%v %v", "no sysfs:", err)
	}
	dev, sys, run := os.DirFS("/dev"), os.DirFS("/sys"), os.DirFS("/run")

	t.Run("null", func(t *testing.T) {
		maj, mnr, blk, err := Rdev(dev, "null")
		if err != nil || maj != 1 || mnr != 3 || blk {
			t.Fatalf("Rdev(null) = %d, %d, %v, %v", maj, mnr, blk, err)
		}
		r := NewReader(sys, run)
		info, err := r.Info(maj, mnr, blk)
		if err != nil {
			t.Fatal(err)
		}
		if info.Subsystem != "mem" || info.Properties["DEVNAME"] != "null" ||
			info.Properties["SUBSYSTEM"] != "mem" || info.SysPath != "devices/virtual/mem/null" {
			t.Errorf("Info(1:3) = %+v", info)
		}
		if !r.MatchAttrs(info, res("dev", "1:3")) || r.MatchAttrs(info, res("dev", "1:4")) {
			t.Error("MatchAttrs on dev attribute")
		}
	})

	t.Run("zram", func(t *testing.T) {
		name := firstZram(t)
		maj, mnr, blk, err := Rdev(dev, name)
		if err != nil || !blk {
			t.Fatalf("Rdev(%s) = %d, %d, %v, %v", name, maj, mnr, blk, err)
		}
		root, err := os.OpenRoot("/sys")
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		r := NewReader(root.FS(), run)
		info, err := r.Info(maj, mnr, blk)
		if err != nil {
			t.Fatal(err)
		}
		if info.Subsystem != "block" || info.Properties["DEVNAME"] != name ||
			info.Properties["DEVTYPE"] != "disk" || info.SysPath != "devices/virtual/block/"+name {
			t.Errorf("Info(%d:%d) = %+v", maj, mnr, info)
		}
		if !r.MatchAttrs(info, res("disksize", `\d+`, "dev", fmt.Sprintf("%d:%d", maj, mnr))) {
			t.Error("MatchAttrs on zram attributes")
		}
	})
}

// firstZram returns the name of a zram disk in /dev, adding one through
// /sys/class/zram-control (and removing it after the test) if there is
// none and we may.
func firstZram(t *testing.T) string {
	t.Helper()
	if os.Geteuid() == 0 {
		// Other test binaries add and remove zram devices: none may come
		// or go while this test reads one.
		testkernel.LockZram(t)
	}
	if m, _ := filepath.Glob("/dev/zram[0-9]*"); len(m) > 0 {
		return filepath.Base(m[0])
	}
	if os.Geteuid() != 0 {
		testutil.SkipEnv(t, "no zram device, and not root")
	}
	if _, err := os.Stat(testkernel.ZramControl); err != nil {
		testutil.SkipEnv(t, "%v %v", "cannot add a zram device:", err)
	}
	return "zram" + strconv.Itoa(testkernel.ZramAdd(t))
}

func BenchmarkInfo(b *testing.B) {
	b.Run("MapFS", func(b *testing.B) {
		sys, run := sysFS(), runFS()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := NewReader(sys, run).Info(188, 0, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sys", func(b *testing.B) {
		if _, err := os.Stat("/sys/dev/char/1:3"); err != nil {
			testutil.SkipEnv(b, "%v %v", "no sysfs:", err)
		}
		sys, run := os.DirFS("/sys"), os.DirFS("/run")
		b.ReportAllocs()
		for b.Loop() {
			if _, err := NewReader(sys, run).Info(1, 3, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestNUMANode(t *testing.T) {
	fsys := fstest.MapFS{
		"devices/pci0000:00/0000:00:05.0/numa_node":           {Data: []byte("1\n")},
		"devices/pci0000:00/0000:00:05.0/accel/accel0/uevent": {Data: []byte("MAJOR=261\n")},
		"devices/pci0000:00/0000:00:06.0/numa_node":           {Data: []byte("-1\n")},
		"devices/pci0000:00/0000:00:07.0/numa_node":           {Data: []byte("0\n")},
		"devices/pci0000:00/0000:00:07.0/tty/ttyS4/uevent":    {Data: []byte("MAJOR=4\n")},
		"devices/pci0000:00/0000:00:06.0/drm/card0/uevent":    {Data: []byte("MAJOR=226\n")},
		"devices/virtual/mem/null/uevent":                     {Data: []byte("MAJOR=1\n")},
	}
	r := NewReader(fsys, nil)
	for path, want := range map[string]int{
		"devices/pci0000:00/0000:00:05.0/accel/accel0": 1,
		"devices/pci0000:00/0000:00:06.0/drm/card0":    -1, // the kernel says no affinity
		"devices/pci0000:00/0000:00:07.0/tty/ttyS4":    0,  // node 0 is a node
		"devices/virtual/mem/null":                     -1, // nothing to say
	} {
		n, ok := r.NUMANode(DeviceInfo{SysPath: path})
		if got := map[bool]int{true: n, false: -1}[ok]; got != want {
			t.Errorf("NUMANode(%s) = %d, %v; want %d", path, n, ok, want)
		}
	}
}

// What a broken or hostile udev database line or sysfs attribute gives:
// "E:=v" (no key) and "S:" (no link) nothing; an attribute of exactly
// maxAttrSize bytes is read whole, one byte more is refused, never cut.
// (Found by make mutate.)
func TestUdevDBAndAttributeEdges(t *testing.T) {
	props := map[string]string{}
	links := parseUdevDB([]byte("S:serial/by-id/usb-FTDI_A1\nS:\nE:=orphan\nE:ID_SERIAL=FTDI_A1\nE:K=a=b\n"), props)
	if len(links) != 1 || links[0] != "serial/by-id/usb-FTDI_A1" {
		t.Errorf("links %q; want the one link, no empty one", links)
	}
	if _, ok := props[""]; ok || len(props) != 2 || props["K"] != "a=b" {
		t.Errorf("props %q; want ID_SERIAL and K=a=b, no empty key", props)
	}
	exact := strings.Repeat("x", maxAttrSize)
	fsys := fstest.MapFS{"a": {Data: []byte(exact)}, "b": {Data: []byte(exact + "y")}}
	if v, err := readAttr(fsys, "a"); err != nil || v != exact {
		t.Errorf("an attribute of %d bytes: %d bytes, %v; want it whole", maxAttrSize, len(v), err)
	}
	if v, err := readAttr(fsys, "b"); err == nil {
		t.Errorf("an attribute of %d bytes: %d bytes read; want it refused", maxAttrSize+1, len(v))
	}
}
