package hotplug

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/smarter-project/smarter-device-manager/internal/natural"
)

// Node is one entry found under /dev by ScanDev.
type Node struct {
	// Path is relative to the scanned root and slash-separated:
	// "ttyUSB0", "net/tun", "snd", "snd/controlC0".
	Path string
	// Dir is true for a directory.
	Dir bool
	// Mode holds the type bits from the directory entry (fs.ModeDir,
	// fs.ModeDevice, fs.ModeCharDevice); permission bits are not read,
	// which keeps the scan to one getdents per directory and no stat.
	Mode fs.FileMode
}

// ScanDev lists the character devices, block devices and directories under
// fsys (in production os.DirFS("/dev")), sorted by Path. Symlinks are
// skipped, never followed; regular files, sockets and fifos are skipped.
//
// maxDepth limits how many directory levels ScanDev descends: 0 lists only
// the root's entries, 1 also the entries of its subdirectories, and so on.
// A directory below the limit is still reported, only not entered. An
// unreadable subdirectory is skipped; an unreadable root is an error.
func ScanDev(fsys fs.FS, maxDepth int) ([]Node, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("scan dev: %w", err)
	}
	nodes := make([]Node, 0, len(entries))
	nodes = appendNodes(nodes, fsys, "", entries, maxDepth)
	// Depth-first order is not Path order ("net-x" < "net/tun"), so sort.
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.Path, b.Path) })
	return nodes, nil
}

func appendNodes(nodes []Node, fsys fs.FS, dir string, entries []fs.DirEntry, depth int) []Node {
	for _, e := range entries {
		t := e.Type()
		p := e.Name()
		if dir != "" {
			p = dir + "/" + p
		}
		switch {
		case t&fs.ModeDevice != 0: // char devices carry ModeDevice too
			nodes = append(nodes, Node{Path: p, Mode: t})
		case t.IsDir():
			nodes = append(nodes, Node{Path: p, Dir: true, Mode: t})
			if depth > 0 {
				sub, err := fs.ReadDir(fsys, p)
				if err != nil {
					continue // unreadable subdirectory: not fatal
				}
				nodes = appendNodes(nodes, fsys, p, sub, depth-1)
			}
		}
	}
	return nodes
}

// ScanGPUs lists the numbers N of the entries named gpu.N (N all digits)
// in the devices directory of fsys, which is rooted at the sys root
// (os.DirFS("/sys")), and in devices/platform: NVIDIA Jetson boards up to
// Xavier (L4T R35) have the GPU at /sys/devices/gpu.0, Jetson Orin (L4T
// R36) only at /sys/devices/platform/gpu.0. A number found in both is
// listed once. The result is sorted numerically. With neither directory
// it returns nil, nil.
func ScanGPUs(fsys fs.FS) ([]string, error) {
	seen := map[string]bool{}
	var ids []string
	for _, dir := range []string{"devices", "devices/platform"} {
		entries, err := fs.ReadDir(fsys, dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("scan gpus: %w", err)
		}
		for _, e := range entries {
			n, ok := strings.CutPrefix(e.Name(), "gpu.")
			if ok && isDigits(n) && !seen[n] {
				seen[n] = true
				ids = append(ids, n)
			}
		}
	}
	slices.SortFunc(ids, natural.Compare)
	return ids, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
