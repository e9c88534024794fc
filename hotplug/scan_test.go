package hotplug

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"golang.org/x/sys/unix"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

const (
	chr = fs.ModeDevice | fs.ModeCharDevice
	blk = fs.ModeDevice
)

// devFS is a fake /dev: char and block devices, nested directories,
// symlinks (to a device and to a directory), and things to skip.
func devFS() fstest.MapFS {
	return fstest.MapFS{
		"null":             {Mode: chr | 0o666},
		"zram0":            {Mode: blk | 0o660},
		"ttyUSB0":          {Mode: chr | 0o660},
		"net/tun":          {Mode: chr | 0o666},
		"net-x":            {Mode: chr | 0o600}, // sorts before net/tun
		"snd/controlC0":    {Mode: chr | 0o660},
		"snd/by-path/pci0": {Mode: fs.ModeSymlink | 0o777, Data: []byte("../controlC0")},
		"bus/usb/001/002":  {Mode: chr | 0o664},
		"a/b/c/d/deep":     {Mode: chr | 0o600},
		"serial0":          {Mode: fs.ModeSymlink | 0o777, Data: []byte("ttyUSB0")},
		"dirlink":          {Mode: fs.ModeSymlink | 0o777, Data: []byte("snd")},
		"shm/file":         {Mode: 0o600, Data: []byte("x")},
		"log":              {Mode: fs.ModeSocket | 0o666},
		"initctl":          {Mode: fs.ModeNamedPipe | 0o600},
		"core":             {Mode: 0o400},
	}
}

func dir(p string) Node   { return Node{Path: p, Dir: true, Mode: fs.ModeDir} }
func char(p string) Node  { return Node{Path: p, Mode: chr} }
func block(p string) Node { return Node{Path: p, Mode: blk} }

func diffNodes(want, got []Node) string {
	var b strings.Builder
	for _, n := range want {
		if !slices.Contains(got, n) {
			fmt.Fprintf(&b, "-%+v\n", n)
		}
	}
	for _, n := range got {
		if !slices.Contains(want, n) {
			fmt.Fprintf(&b, "+%+v\n", n)
		}
	}
	if b.Len() == 0 && !slices.Equal(want, got) {
		fmt.Fprintf(&b, "order differs:\n-%v\n+%v\n", want, got)
	}
	return b.String()
}

func TestScanDev(t *testing.T) {
	top := []Node{
		dir("a"), dir("bus"), char("net-x"), dir("net"), char("null"),
		dir("shm"), dir("snd"), char("ttyUSB0"), block("zram0"),
	}
	level1 := append(slices.Clone(top), dir("a/b"), dir("bus/usb"), char("net/tun"), dir("snd/by-path"), char("snd/controlC0"))
	level2 := append(slices.Clone(level1), dir("a/b/c"), dir("bus/usb/001"))
	all := append(slices.Clone(level2), dir("a/b/c/d"), char("bus/usb/001/002"), char("a/b/c/d/deep"))
	sorted := func(n []Node) []Node {
		slices.SortFunc(n, func(a, b Node) int { return strings.Compare(a.Path, b.Path) })
		return n
	}
	tests := []struct {
		name     string
		maxDepth int
		want     []Node
	}{
		{"depth 0 lists the root only", 0, sorted(top)},
		{"negative depth is 0", -1, sorted(top)},
		{"depth 1", 1, sorted(level1)},
		{"depth 2", 2, sorted(level2)},
		{"depth 10 finds everything", 10, sorted(all)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ScanDev(devFS(), tt.maxDepth)
			if err != nil {
				t.Fatal(err)
			}
			if d := diffNodes(tt.want, got); d != "" {
				t.Errorf("ScanDev(%d) mismatch (-want +got):\n%s", tt.maxDepth, d)
			}
		})
	}
}

func TestScanDevEmptyAndMissing(t *testing.T) {
	got, err := ScanDev(fstest.MapFS{}, 10)
	if err != nil || len(got) != 0 {
		t.Errorf("ScanDev(empty) = %v, %v; want empty, nil", got, err)
	}
	if _, err := ScanDev(os.DirFS(filepath.Join(t.TempDir(), "missing")), 10); err == nil {
		t.Error("ScanDev(missing root) succeeded; want an error")
	}
}

// Permission checks do not apply to root, so this runs only as a user.
func TestScanDevUnreadableSubdir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any directory; run as a regular user to test an unreadable one")
	}
	root := t.TempDir()
	locked := filepath.Join(root, "locked")
	if err := os.Mkdir(locked, 0o000); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(locked, 0o700) })
	got, err := ScanDev(os.DirFS(root), 10)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffNodes([]Node{dir("locked")}, got); d != "" {
		t.Errorf("mismatch (-want +got):\n%s", d)
	}
}

// errFS fails ReadDir for one directory, standing in for an unreadable one.
type errFS struct {
	fs.FS
	bad string
}

func (e errFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if name == e.bad {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrPermission}
	}
	return fs.ReadDir(e.FS, name)
}

func TestScanDevReadDirError(t *testing.T) {
	got, err := ScanDev(errFS{FS: devFS(), bad: "snd"}, 10)
	if err != nil {
		t.Fatalf("unreadable subdirectory was fatal: %v", err)
	}
	if !slices.Contains(got, dir("snd")) || slices.Contains(got, char("snd/controlC0")) {
		t.Errorf("want snd listed but not entered, got %v", got)
	}
	if !slices.Contains(got, char("net/tun")) {
		t.Errorf("other directories must still be scanned, got %v", got)
	}
	if _, err := ScanDev(errFS{FS: devFS(), bad: "."}, 10); err == nil {
		t.Error("unreadable root: want an error")
	}
}

func TestScanDevReal(t *testing.T) {
	got, err := ScanDev(os.DirFS("/dev"), 10)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(got, func(n Node) bool { return n.Path == "null" })
	if i < 0 {
		t.Fatalf("/dev/null not found in %d nodes", len(got))
	}
	if want := char("null"); got[i] != want {
		t.Errorf("null = %+v, want %+v", got[i], want)
	}
	if !slices.IsSortedFunc(got, func(a, b Node) int { return strings.Compare(a.Path, b.Path) }) {
		t.Error("result not sorted by Path")
	}
	for _, n := range got {
		if n.Path == "fd" || n.Path == "stdin" {
			t.Errorf("symlink %q reported", n.Path)
		}
	}
}

func TestScanGPUs(t *testing.T) {
	tests := []struct {
		name string
		fsys fs.FS
		want []string
	}{
		{"no devices dir", fstest.MapFS{"class/x": {}}, nil},
		{"none", fstest.MapFS{"devices/platform/x": {}}, nil},
		{
			"numeric order and filtering",
			fstest.MapFS{
				"devices/gpu.10/x":    {},
				"devices/gpu.2/x":     {},
				"devices/gpu.0":       {Mode: fs.ModeSymlink, Data: []byte("platform/gpu")},
				"devices/gpu.x/x":     {},
				"devices/gpu./x":      {},
				"devices/gpu.1a/x":    {},
				"devices/gpu1/x":      {},
				"devices/platform/x":  {},
				"devices/xgpu.3/x":    {},
				"devices/gpu.100/x":   {},
				"devices/gpu.9/x":     {},
				"devices/gpu.3/other": {},
			},
			[]string{"0", "2", "3", "9", "10", "100"},
		},
		{"jetson xavier", hwfixture.Machines["jetson-xavier"](false).Sys, []string{"0"}},
		{"jetson orin: only below platform", hwfixture.Machines["jetson-orin"](false).Sys, []string{"0"}},
		{"both places: listed once", fstest.MapFS{"devices/gpu.0/uevent": {}, "devices/platform/gpu.0/uevent": {}, "devices/platform/gpu.1/uevent": {}}, []string{"0", "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ScanGPUs(tt.fsys)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ScanGPUs() = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := ScanGPUs(errFS{FS: fstest.MapFS{"devices/gpu.0/x": {}}, bad: "devices"}); err == nil {
		t.Error("unreadable devices dir: want an error")
	}
}

// BenchmarkScanDev measures a scan of 1,000 devices spread over a few
// directories, as the daemon does on every wake-up.
func BenchmarkScanDev(b *testing.B) {
	const n = 1000
	name := func(i int) string {
		switch i % 4 {
		case 0:
			return fmt.Sprintf("ttyUSB%d", i)
		case 1:
			return fmt.Sprintf("snd/pcmC%dD0p", i)
		case 2:
			return fmt.Sprintf("bus/usb/%03d/%03d", i%7, i)
		}
		return fmt.Sprintf("dri/card%d", i)
	}
	bench := func(b *testing.B, fsys fs.FS) {
		b.ReportAllocs()
		for b.Loop() {
			nodes, err := ScanDev(fsys, 10)
			if err != nil {
				b.Fatal(err)
			}
			if len(nodes) < n {
				b.Fatalf("found %d nodes, want at least %d", len(nodes), n)
			}
		}
	}
	b.Run("MapFS", func(b *testing.B) {
		m := fstest.MapFS{}
		for i := range n {
			m[name(i)] = &fstest.MapFile{Mode: chr | 0o660}
		}
		bench(b, m)
	})
	b.Run("DirFS", func(b *testing.B) {
		if os.Geteuid() != 0 {
			testutil.SkipEnv(b, "mknod needs root")
		}
		root := b.TempDir()
		for i := range n {
			p := filepath.Join(root, name(i))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				b.Fatal(err)
			}
			if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
				testutil.SkipEnv(b, "mknod: %v", err)
			}
		}
		bench(b, os.DirFS(root))
	})
}
