package hwfixture

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// writeTree writes a fake sysfs to dir: files, directories and symlinks.
func writeTree(t *testing.T, fsys fs.FS, dir string) {
	t.Helper()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := fs.ReadLink(fsys, p)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			return os.Symlink(target, dst)
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// entrySets reads a database entry's E: properties and S: links.
func entrySets(data []byte) (props, links []string) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "E:"); ok {
			props = append(props, p)
		}
		if l, ok := strings.CutPrefix(line, "S:"); ok {
			links = append(links, l)
		}
	}
	sort.Strings(props)
	sort.Strings(links)
	return props, links
}

// TestMatchesRealUdev lays out every catalog machine as a real directory
// tree, mounts it over /sys in a private mount namespace (with /dev and
// /run on fresh tmpfs, so nothing reaches the host), runs Debian's own
// `udevadm test` (its rules and builtins) for each node, and compares the
// database entry it writes with the fixture's: the same properties, the
// same links. A fixture that gives a property real udev would not, or
// lacks one it would, fails here.
func TestMatchesRealUdev(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.SkipEnv(t, "skipping: needs root (a private mount namespace over /sys)")
	}
	udevadm, err := exec.LookPath("udevadm")
	if err != nil {
		testutil.SkipEnv(t, "skipping: no udevadm (scripts/test-deps.sh installs Debian's udev)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		testutil.SkipEnv(t, "skipping: no unshare (util-linux)")
	}
	out, err := exec.Command(udevadm, "--version").Output()
	if err != nil {
		testutil.SkipEnv(t, "skipping: udevadm --version: %v", err)
	}
	if v := strings.TrimSpace(string(out)); v != "252" {
		testutil.SkipEnv(t, "skipping: udev %s here; the fixtures follow Debian bookworm's udev 252", v)
	}
	for _, name := range slices.Sorted(mapsKeys(Machines)) {
		t.Run(name, func(t *testing.T) {
			m := Machines[name](true)
			dir := t.TempDir()
			sysDir, outDir := filepath.Join(dir, "sys"), filepath.Join(dir, "out")
			writeTree(t, m.Sys, sysDir)
			if err := os.Mkdir(outDir, 0o755); err != nil {
				t.Fatal(err)
			}
			var script strings.Builder
			fmt.Fprintf(&script, "set -e\nmount --bind %q /sys\nmount -t tmpfs tmpfs /run\nmount -t tmpfs tmpfs /dev\nmknod -m 666 /dev/null c 1 3\nmkdir -p /run/udev/data\n", sysDir)
			for _, n := range m.nodes {
				// SYSTEMD_DEVICE_VERIFY_SYSFS=0: sd-device accepts a /sys
				// that is not sysfs (systemd's own test suite does this).
				fmt.Fprintf(&script, "SYSTEMD_DEVICE_VERIFY_SYSFS=0 %s test --action=add /sys/%s >/dev/null 2>&1 || echo \"udevadm test %s failed\"\n", udevadm, n.SysPath, n.Path)
			}
			fmt.Fprintf(&script, "cp -r /run/udev/data/. %q/\n", outDir)
			cmd := exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c", script.String())
			if b, err := cmd.CombinedOutput(); err != nil || len(b) > 0 {
				t.Fatalf("udevadm in a private namespace: %v\n%s", err, b)
			}
			for _, n := range m.nodes {
				real, err := os.ReadFile(filepath.Join(outDir, dbName(n)))
				if err != nil {
					t.Errorf("%s: real udev wrote no database entry: %v", n.Path, err)
					continue
				}
				fixture, err := m.Run.ReadFile("udev/data/" + dbName(n))
				if err != nil {
					t.Errorf("%s: the fixture has no database entry: %v", n.Path, err)
					continue
				}
				rp, rl := entrySets(real)
				fp, fl := entrySets(fixture)
				if !slices.Equal(rp, fp) {
					t.Errorf("%s (%s): properties differ\nreal udev: %q\nfixture:   %q\nonly real: %q\nonly fixture: %q", n.Path, n.SysPath, rp, fp, minus(rp, fp), minus(fp, rp))
				}
				if !slices.Equal(rl, fl) {
					t.Errorf("%s: links differ\nreal udev: %q\nfixture:   %q", n.Path, rl, fl)
				}
			}
		})
	}
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
