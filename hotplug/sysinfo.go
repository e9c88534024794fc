package hotplug

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// DeviceInfo is what sysfs and udev know of one device node.
type DeviceInfo struct {
	// Subsystem is the basename of the device's subsystem link, e.g.
	// "tty", "block", "mem", "video4linux".
	Subsystem string
	// SysPath is the device's directory relative to the sys root, e.g.
	// "devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/ttyUSB0/tty/ttyUSB0".
	SysPath string
	// Properties holds the KEY=VALUE lines of the device's uevent file
	// (MAJOR, MINOR, DEVNAME, DEVTYPE, ...) overlaid with the E: lines of
	// its udev database entry (udev wins), plus SUBSYSTEM and DEVPATH
	// ("/"+SysPath) as a kernel uevent message carries them. DEVNAME is as
	// the kernel spells it, relative to /dev ("ttyUSB0"), unless the udev
	// database says otherwise.
	Properties map[string]string
	// Links are udev's symlinks for the node (S: lines of its database
	// entry), relative to /dev, in database order:
	// "serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0".
	Links []string
}

// maxLinkHops bounds how many symlinks Info follows from <sys>/dev/char or
// <sys>/dev/block to the device directory; the kernel's link is one hop.
const maxLinkHops = 8

// maxAttrSize caps an attribute read. Text attributes fit in a page (up to
// 64 KiB on arm64); bigger files are binary attributes (PCI config, ROMs)
// that no rule matches on, so they count as missing.
const maxAttrSize = 64 << 10

// Reader reads DeviceInfo, sysfs attributes and how block devices are used
// for one read of the device state. It caches attribute reads and the
// mount table, so make a new Reader for every read; a Reader is not safe
// for concurrent use.
//
// Reader resolves the <sys>/dev links itself and rejects any that leads
// above the sys root. It does not police symlinks inside the paths it
// then opens (sysfs has none under devices/, and attribute names may not
// contain ".."); for containment against a hostile tree, pass the FS of an
// os.Root (os.OpenRoot("/sys") then Root.FS) rather than os.DirFS.
type Reader struct {
	sys, run, proc fs.FS
	attrs          map[string]attrValue // by path below the sys root
	buses          map[string]string    // device directory → its bus, "" for none
	mounted        map[string]bool      // see BlockUse; nil until read
}

type attrValue struct {
	v  string
	ok bool
}

// NewReader returns a Reader over sysFS, rooted at the sys root (in
// production /sys), and runFS, rooted at the run directory (/run), whose
// udev/data holds the udev database. runFS may be nil (no udev); either may
// lack entries.
func NewReader(sysFS, runFS fs.FS) *Reader {
	return &Reader{sys: sysFS, run: runFS, attrs: make(map[string]attrValue), buses: make(map[string]string)}
}

// Info reads the identity of the char (or, with block, block) device
// major:minor: it follows <sys>/dev/char/<major>:<minor> (or dev/block) to
// the device directory, reads its subsystem link and uevent file, and
// merges udev's database entry <run>/udev/data/c<major>:<minor> (b for a
// block device) when there is one. A device unknown to sysfs is an error
// wrapping fs.ErrNotExist; a link leading above the sys root is an error.
func (r *Reader) Info(major, minor uint32, block bool) (DeviceInfo, error) {
	kind, db := "char", "c"
	if block {
		kind, db = "block", "b"
	}
	id := strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10)
	dir, err := r.resolve("dev/" + kind + "/" + id)
	if err != nil {
		return DeviceInfo{}, fmt.Errorf("sysfs %s %s: %w", kind, id, err)
	}
	uevent, err := fs.ReadFile(r.sys, dir+"/uevent")
	if err != nil {
		return DeviceInfo{}, fmt.Errorf("sysfs %s %s: %w", kind, id, err)
	}
	info := DeviceInfo{SysPath: dir, Properties: make(map[string]string, 8)}
	parseKeyValues(uevent, "", info.Properties)
	if link, err := fs.ReadLink(r.sys, dir+"/subsystem"); err == nil {
		info.Subsystem = path.Base(link)
	} else {
		info.Subsystem = info.Properties["SUBSYSTEM"]
	}
	if r.run != nil {
		// No entry is normal: udev not running, or not done with the device.
		if data, err := fs.ReadFile(r.run, "udev/data/"+db+id); err == nil {
			info.Links = parseUdevDB(data, info.Properties)
		}
	}
	if info.Subsystem != "" {
		info.Properties["SUBSYSTEM"] = info.Subsystem
	}
	info.Properties["DEVPATH"] = "/" + dir
	return info, nil
}

// errEscape reports a sysfs link that leads above the sys root.
var errEscape = errors.New("symlink leads outside the sys root")

// resolve follows name, while it is a symlink, to a path below the sys
// root, lexically and without leaving the root.
func (r *Reader) resolve(name string) (string, error) {
	for range maxLinkHops {
		target, err := fs.ReadLink(r.sys, name)
		if err != nil {
			// Not a symlink: arrived. (os.DirFS says EINVAL, MapFS
			// fs.ErrInvalid; ask Lstat rather than guess.)
			if fi, lerr := fs.Lstat(r.sys, name); lerr == nil && fi.Mode()&fs.ModeSymlink == 0 {
				return name, nil
			}
			return "", err
		}
		if path.IsAbs(target) {
			return "", fmt.Errorf("%s -> %s: %w", name, target, errEscape)
		}
		next := path.Join(path.Dir(name), target)
		if next == "." || next == ".." || strings.HasPrefix(next, "../") {
			return "", fmt.Errorf("%s -> %s: %w", name, target, errEscape)
		}
		name = next
	}
	return "", fmt.Errorf("%s: too many links", name)
}

// parseKeyValues adds the KEY=VALUE lines of data, each after prefix,
// to props; other lines are ignored. A value may contain '='.
func parseKeyValues(data []byte, prefix string, props map[string]string) {
	for line := range bytes.Lines(data) {
		line = bytes.TrimRight(line, "\n")
		rest, ok := bytes.CutPrefix(line, []byte(prefix))
		if !ok {
			continue
		}
		if k, v, ok := bytes.Cut(rest, []byte("=")); ok && len(k) > 0 {
			props[string(k)] = string(v)
		}
	}
}

// parseUdevDB adds the E: properties of a udev database entry to props and
// returns its S: links. Other lines (I:, G:, Q:, L:, V:, W:) are ignored.
func parseUdevDB(data []byte, props map[string]string) []string {
	parseKeyValues(data, "E:", props)
	var links []string
	for line := range bytes.Lines(data) {
		if l, ok := bytes.CutPrefix(bytes.TrimRight(line, "\n"), []byte("S:")); ok && len(l) > 0 {
			links = append(links, string(l))
		}
	}
	return links
}

// MatchAttrs reports whether every attribute in attrs (file name below a
// device directory → regexp) matches on one and the same device: info's
// own or one of its ancestors, walking up to but not including devices/.
// That is udev's ATTRS{} semantics. Attribute values have trailing
// whitespace removed first. The regexps are used as given, so anchor them
// (^(?:...)$) for whole-value matching. A missing or unreadable
// attribute, or a name that is not a plain relative path, fails its level.
// With no attrs MatchAttrs is true.
func (r *Reader) MatchAttrs(info DeviceInfo, attrs map[string]*regexp.Regexp) bool {
	if len(attrs) == 0 {
		return true
	}
	for name := range attrs {
		if !fs.ValidPath(name) || name == "." {
			return false
		}
	}
	for dir := info.SysPath; dir != "." && dir != "devices" && dir != "/" && dir != ""; dir = path.Dir(dir) {
		if r.matchLevel(dir, attrs) {
			return true
		}
	}
	return false
}

// NUMANode is the NUMA node of the nearest ancestor (or the device
// itself) with a numa_node attribute, as PCI devices have; ok is false
// when there is none or the kernel says -1 (no affinity).
func (r *Reader) NUMANode(info DeviceInfo) (node int, ok bool) {
	for dir := info.SysPath; dir != "." && dir != "devices" && dir != "/" && dir != ""; dir = path.Dir(dir) {
		v, found := r.attr(dir + "/numa_node")
		if !found {
			continue
		}
		n, err := strconv.Atoi(v)
		return n, err == nil && n >= 0
	}
	return 0, false
}

func (r *Reader) matchLevel(dir string, attrs map[string]*regexp.Regexp) bool {
	for name, re := range attrs {
		v, ok := r.attr(dir + "/" + name)
		if !ok || !re.MatchString(v) {
			return false
		}
	}
	return true
}

// attr reads one attribute file, trimmed of trailing whitespace, through
// the cache.
func (r *Reader) attr(name string) (string, bool) {
	if a, ok := r.attrs[name]; ok {
		return a.v, a.ok
	}
	v, err := readAttr(r.sys, name)
	a := attrValue{v: strings.TrimRight(v, " \t\r\n"), ok: err == nil}
	r.attrs[name] = a
	return a.v, a.ok
}

func readAttr(fsys fs.FS, name string) (string, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAttrSize+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxAttrSize {
		return "", fmt.Errorf("%s: attribute over %d bytes", name, maxAttrSize)
	}
	return string(b), nil
}
