package daemon

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/fstest"

	"golang.org/x/sys/unix"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// Symlinks under the device root are not the daemon's to trust: whoever
// can write there (udev's rules, a careless script, /dev/shm's users) may
// make a link that a rule matches by name. The daemon hands a container
// only what the scan found as a device node under the device root, never
// what a symlink points to, so every link below matches a rule and none of
// them reaches an Allocate answer.

// symlinkRules match every link of the trees below by name, as a directory,
// and as a companion.
const symlinkRules = `version: v1
rules:
  - match: ^ttyUSB[0-9]+$
  - match: ^snd$
  - match: ^serial(/.*)?$
  - match: ^ttyACM0$
    with: [ttyUSB9, "ttyUSB7?"]
`

// TestSymlinksNeverServed runs the daemon on a real device root (a temp
// dir with real nodes, made with mknod) holding symlinks to a regular file
// (/etc/shadow), a directory (/root), a device node outside the root
// (/dev/null, and a node in another directory), a node inside it, and a
// directory outside it.
func TestSymlinksNeverServed(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.SkipEnv(t, "skipping: mknod of a real device node needs root (TestSymlinksNeverServedMapFS runs without)")
	}
	root := t.TempDir()
	outside := t.TempDir()
	node := func(dir, rel string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		// 1:3 is /dev/null's number: a harmless node.
		if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatalf("mknod %s: %v", p, err)
		}
	}
	link := func(rel, target string) {
		if err := os.Symlink(target, filepath.Join(root, rel)); err != nil {
			t.Fatal(err)
		}
	}
	node(root, "ttyUSB0")
	node(root, "ttyACM0")
	node(root, "snd/controlC0")
	node(outside, "tty0")
	node(outside, "snd/controlC1")
	link("ttyUSB9", "/etc/shadow")                        // a regular file
	link("ttyUSB8", "/root")                              // a directory
	link("ttyUSB7", "/dev/null")                          // a device node outside the root
	link("ttyUSB5", filepath.Join(outside, "tty0"))       // another
	link("ttyUSB6", "ttyUSB0")                            // a node inside the root
	link("snd/controlC9", "/dev/zero")                    // inside a matched directory
	link("snd/pcm", "/etc")                               // a directory inside one
	link("serial", filepath.Join(outside, "snd"))         // a directory of nodes outside
	link("ttyUSB4", "../"+filepath.Base(outside)+"/tty0") // relative, climbing out

	h := newHarness(t, symlinkRules, func(o *Options) {
		o.DevRoot, o.DevFS = root, os.DirFS(root)
	})
	checkSymlinksNeverServed(t, h, root, os.DirFS(root))
}

// TestSymlinksNeverServedMapFS is the same on an in-memory device root, so
// that it runs without root; the links' targets do not exist there.
func TestSymlinksNeverServedMapFS(t *testing.T) {
	h := newHarness(t, symlinkRules, nil)
	ln := func(target string) *fstest.MapFile {
		return &fstest.MapFile{Mode: fs.ModeSymlink | 0o777, Data: []byte(target)}
	}
	for name, f := range map[string]*fstest.MapFile{
		"ttyUSB0":       {Mode: charDev},
		"ttyACM0":       {Mode: charDev},
		"snd/controlC0": {Mode: charDev},
		"ttyUSB9":       ln("/etc/shadow"),
		"ttyUSB7":       ln("/dev/null"),
		"ttyUSB6":       ln("ttyUSB0"),
		"ttyUSB4":       ln("../outside/tty0"),
		"snd/controlC9": ln("/dev/zero"),
		"snd/pcm":       ln("/etc"),
		"serial":        ln("snd"),
	} {
		h.dev.Put(name, f)
	}
	h.events.fire("add", "ttyUSB0")
	checkSymlinksNeverServed(t, h, "/dev", h.dev)
}

// checkSymlinksNeverServed asserts the resources the kubelet sees are the
// real nodes' only, and that every Allocate answer names only device nodes
// (by Lstat: not links) under devRoot.
func checkSymlinksNeverServed(t *testing.T, h *harness, devRoot string, devFS fs.FS) {
	t.Helper()
	h.waitFor("smarter-devices/ttyUSB0", "the real node", health(1, pluginapi.Healthy))
	h.waitFor("smarter-devices/snd", "the real directory", health(1, pluginapi.Healthy))
	// ttyACM0's required companion is a link: the unit is unusable.
	h.waitFor("smarter-devices/ttyACM0", "the node without its companion", health(1, pluginapi.Unhealthy))
	h.settle()
	want := []string{"smarter-devices/snd", "smarter-devices/ttyACM0", "smarter-devices/ttyUSB0"}
	if got := h.kubelet.Resources(); !slices.Equal(got, want) {
		t.Errorf("resources %v, want %v: a symlink became a resource", got, want)
	}
	var served []string
	for _, res := range want {
		for _, dev := range h.kubelet.Devices(res) {
			if dev.Health != pluginapi.Healthy {
				continue
			}
			for _, cr := range h.allocate(res, dev.ID).ContainerResponses {
				if len(cr.Mounts) > 0 {
					t.Errorf("%s: mounts %v", res, cr.Mounts)
				}
				for _, spec := range cr.Devices {
					served = append(served, spec.HostPath)
					rel, err := filepath.Rel(devRoot, spec.HostPath)
					if err != nil || !filepath.IsLocal(rel) {
						t.Errorf("%s: host path %s is outside the device root %s", res, spec.HostPath, devRoot)
						continue
					}
					fi, err := fs.Lstat(devFS, filepath.ToSlash(rel))
					if err != nil || fi.Mode()&fs.ModeDevice == 0 {
						t.Errorf("%s: host path %s is not a device node (%v, %v)", res, spec.HostPath, fi, err)
					}
				}
			}
		}
	}
	slices.Sort(served)
	if want := []string{filepath.Join(devRoot, "snd/controlC0"), filepath.Join(devRoot, "ttyUSB0")}; !slices.Equal(served, want) {
		t.Errorf("served %v, want only the real nodes %v", served, want)
	}
}
