// Package hwfixture builds fake machines for tests: /dev, /sys, udev's
// database (/run/udev/data) and the mount table (/proc/self/mountinfo) as
// the Linux kernel and Debian's udev lay them out for a description of the
// hardware (bus, port, vendor, product, serial, driver, nodes, disks). One generator makes every tree, so a layout
// fact is written once and checked once: TestMatchesRealUdev runs Debian's
// own systemd-udevd rules over each catalog machine and compares.
//
// Kernel layout (Documentation/ABI/testing/sysfs-dev, sysfs-bus-usb,
// drivers/base/core.c): every device is a directory below /sys/devices
// with a uevent file and a subsystem link to /sys/bus/<bus> (devices on
// a bus) or /sys/class/<class> (class devices); a device with a node has a
// dev file "M:m" and a link /sys/dev/char/M:m (or block) to its directory.
package hwfixture

import (
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing/fstest"

	"golang.org/x/sys/unix"
)

// Machine is a fake host: its /dev, /sys, /run and /proc, each an FS rooted
// there. Plugging hardware in lays out its sysfs devices and /dev nodes the
// way the kernel does and, while udev runs, writes udev's database entries
// and symlinks the way Debian's rules do. Proc holds only self/mountinfo.
type Machine struct {
	Dev, Sys, Run, Proc *FS

	mu     sync.Mutex
	udev   bool
	used   map[string]bool // node names in use: the kernel hands out the lowest free number
	devnum map[int]int     // USB bus → the last device number handed out
	hidSeq int             // the last HID device sequence number
	nodes  []*PluggedNode  // every node present, for StartUdev

	diskSeq   int      // the last disk sequence number (DISKSEQ) handed out
	mountinfo []string // the mount table's lines
}

// New returns a machine with nothing plugged in. With udev, systemd-udevd
// runs on it: plugged nodes get database entries and links.
func New(udev bool) *Machine {
	m := &Machine{Dev: NewFS(), Sys: NewFS(), Run: NewFS(), Proc: NewFS(), udev: udev, used: map[string]bool{}, devnum: map[int]int{}}
	for _, d := range []string{"devices", "devices/virtual", "class", "bus", "block", "dev/char", "dev/block"} {
		m.Sys.Put(d, &fstest.MapFile{Mode: fs.ModeDir | 0o755})
	}
	m.mountinfo = slices.Clone(baseMounts)
	m.writeMounts()
	if udev {
		m.Run.Put("udev/data", &fstest.MapFile{Mode: fs.ModeDir | 0o755})
	}
	return m
}

// Hardware is something that can be plugged into a Machine.
type Hardware interface {
	layout(b *builder)
}

// Plugged is what one Plug laid out.
type Plugged struct {
	Nodes []*PluggedNode
	owned []string // paths below /sys this hardware created
}

// Node returns the plugged node whose /dev path matches the glob pattern
// (path.Match), or nil.
func (p *Plugged) Node(pattern string) *PluggedNode {
	for _, n := range p.Nodes {
		if ok, _ := path.Match(pattern, n.Path); ok {
			return n
		}
	}
	return nil
}

// Paths are the /dev paths of every node, in layout order.
func (p *Plugged) Paths() []string {
	var out []string
	for _, n := range p.Nodes {
		out = append(out, n.Path)
	}
	return out
}

// PluggedNode is one device node the kernel created.
type PluggedNode struct {
	Path         string // below /dev: "ttyUSB0", "snd/controlC1"
	SysPath      string // its device directory below /sys
	Subsystem    string // its class or bus: "tty", "sound", "usb"
	Major, Minor uint32
	Block        bool
	links        []string // udev's symlinks made for it
}

// Plug lays out hw: its sysfs devices, /dev nodes and, while udev runs,
// its database entries and links. Shared parents (host controllers, hubs,
// the SoC) are laid out once and stay.
func (m *Machine) Plug(hw Hardware) *Plugged {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := &builder{m: m, p: &Plugged{}}
	hw.layout(b)
	for _, n := range b.p.Nodes {
		m.nodes = append(m.nodes, n)
		if m.udev {
			m.writeUdev(n)
		}
	}
	return b.p
}

// Unplug removes everything Plug laid out for p, as the kernel and udev
// do when the device goes.
func (m *Machine) Unplug(p *Plugged) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range p.Nodes {
		m.Dev.Remove(n.Path)
		delete(m.used, n.Path)
		m.removeUdev(n)
		kind := "char"
		if n.Block {
			kind = "block"
		}
		m.Sys.Remove(fmt.Sprintf("dev/%s/%d:%d", kind, n.Major, n.Minor))
		m.Sys.Remove("class/" + n.Subsystem + "/" + path.Base(n.SysPath))
		m.nodes = slices.DeleteFunc(m.nodes, func(x *PluggedNode) bool { return x == n })
	}
	// Deepest first, so no directory outlives what was below it.
	owned := slices.Clone(p.owned)
	slices.SortFunc(owned, func(a, b string) int { return len(b) - len(a) })
	for _, d := range owned {
		m.Sys.Remove(d)
	}
}

// StartUdev starts udev on a machine that ran without it: every node
// present gets its database entry and links, as udevd's start-up trigger
// ("udevadm trigger --action=add") makes them.
func (m *Machine) StartUdev() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.udev = true
	m.Run.Put("udev/data", &fstest.MapFile{Mode: fs.ModeDir | 0o755})
	for _, n := range m.nodes {
		m.writeUdev(n)
	}
}

// StopUdev takes udev's database away, as a container that does not mount
// /run/udev sees the host. Links already made stay in /dev.
func (m *Machine) StopUdev() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.udev = false
	m.Run.Remove("udev")
}

// Dev is one sysfs device directory and what the kernel puts in it.
type Dev struct {
	Name   string            // directory name: "0000:00:14.0", "1-1.4", "ttyUSB0"
	Sub    string            // "bus/<bus>", "class/<class>", or "" (no subsystem: pci0000:00)
	Driver string            // bound driver (its link and DRIVER=), "" for none
	Uevent []string          // the uevent file's KEY=VALUE lines besides DRIVER and node ones
	Attrs  map[string]string // attribute files (text; a newline is added)
	Raw    map[string][]byte // binary attribute files, as is (descriptors)
}

// Node is a device node that a device directory carries.
type Node struct {
	Name         string // below /dev: "ttyUSB0", "snd/controlC1"
	Major, Minor uint32
	Block        bool
	DevType      string // the uevent's DEVTYPE, "" for none
}

type builder struct {
	m *Machine
	p *Plugged
}

// depth is how many "../" lead from dir to the sys root.
func depth(dir string) string { return strings.Repeat("../", strings.Count(dir, "/")+1) }

func textFile(s string) *fstest.MapFile {
	return &fstest.MapFile{Mode: 0o444, Data: []byte(s + "\n")}
}

func linkFile(target string) *fstest.MapFile {
	return &fstest.MapFile{Mode: fs.ModeSymlink | 0o777, Data: []byte(target)}
}

// ensure lays out d below parent unless it is there already (a shared
// parent: host controller, hub, SoC bus) and returns its directory. Shared
// devices are never removed by Unplug.
func (b *builder) ensure(parent string, d Dev) string {
	dir := path.Join(parent, d.Name)
	if b.m.Sys.Has(dir + "/uevent") {
		return dir
	}
	b.write(dir, d, nil)
	return dir
}

// add lays out d below parent as part of the hardware being plugged, with
// a node when n is not nil, and returns its directory.
func (b *builder) add(parent string, d Dev, n *Node) string {
	dir := path.Join(parent, d.Name)
	b.p.owned = append(b.p.owned, dir)
	b.write(dir, d, n)
	// The links its bus or class has to it go with it (drivers/base/bus.c
	// bus_add_device, dd.c driver_sysfs_add, core.c device_add_class_symlinks).
	kind, name, _ := strings.Cut(d.Sub, "/")
	switch kind {
	case "bus":
		b.p.owned = append(b.p.owned, "bus/"+name+"/devices/"+d.Name)
		if d.Driver != "" {
			b.p.owned = append(b.p.owned, "bus/"+name+"/drivers/"+d.Driver+"/"+d.Name)
		}
	case "class":
		b.p.owned = append(b.p.owned, "class/"+name+"/"+d.Name)
	}
	return dir
}

func (b *builder) write(dir string, d Dev, n *Node) {
	sys := b.m.Sys
	var uevent []string
	if n != nil {
		uevent = append(uevent, fmt.Sprintf("MAJOR=%d", n.Major), fmt.Sprintf("MINOR=%d", n.Minor), "DEVNAME="+n.Name)
		if n.DevType != "" {
			uevent = append(uevent, "DEVTYPE="+n.DevType)
		}
	}
	uevent = append(uevent, d.Uevent...)
	if d.Driver != "" {
		// drivers/base/core.c dev_uevent: DRIVER= for a bound device.
		uevent = slices.Insert(uevent, min(len(uevent), driverPos(uevent)), "DRIVER="+d.Driver)
	}
	data := strings.Join(uevent, "\n")
	if data != "" {
		data += "\n"
	}
	sys.Put(dir+"/uevent", &fstest.MapFile{Mode: 0o644, Data: []byte(data)})
	if d.Sub != "" {
		sys.Put(dir+"/subsystem", linkFile(depth(dir)+d.Sub))
		kind, name, _ := strings.Cut(d.Sub, "/")
		if kind == "bus" {
			sys.Put("bus/"+name+"/devices/"+d.Name, linkFile("../../../"+dir))
			if d.Driver != "" {
				sys.Put(dir+"/driver", linkFile(depth(dir)+"bus/"+name+"/drivers/"+d.Driver))
				sys.Put("bus/"+name+"/drivers/"+d.Driver+"/"+d.Name, linkFile("../../../../"+dir))
			}
		} else if n == nil {
			sys.Put("class/"+name+"/"+d.Name, linkFile("../../"+dir))
		}
	}
	for k, v := range d.Attrs {
		sys.Put(dir+"/"+k, textFile(v))
	}
	for k, v := range d.Raw {
		sys.Put(dir+"/"+k, &fstest.MapFile{Mode: 0o444, Data: v})
	}
	if n == nil {
		return
	}
	kind, mode := "char", fs.ModeDevice|fs.ModeCharDevice|0o660
	if n.Block {
		kind, mode = "block", fs.ModeDevice|0o660
	}
	id := fmt.Sprintf("%d:%d", n.Major, n.Minor)
	sys.Put(dir+"/dev", textFile(id))
	sys.Put("dev/"+kind+"/"+id, linkFile("../../"+dir))
	_, class, _ := strings.Cut(d.Sub, "/")
	if strings.HasPrefix(d.Sub, "class/") {
		sys.Put("class/"+class+"/"+d.Name, linkFile("../../"+dir))
	}
	b.m.Dev.Put(n.Name, &fstest.MapFile{Mode: mode, Sys: &syscall.Stat_t{Rdev: unix.Mkdev(n.Major, n.Minor)}})
	b.m.used[n.Name] = true
	b.p.Nodes = append(b.p.Nodes, &PluggedNode{Path: n.Name, SysPath: dir, Subsystem: class, Major: n.Major, Minor: n.Minor, Block: n.Block})
}

// driverPos is where the kernel puts DRIVER= among the uevent lines: after
// MAJOR, MINOR, DEVNAME and DEVTYPE (drivers/base/core.c dev_uevent).
func driverPos(lines []string) int {
	i := 0
	for i < len(lines) && (strings.HasPrefix(lines[i], "MAJOR=") || strings.HasPrefix(lines[i], "MINOR=") ||
		strings.HasPrefix(lines[i], "DEVNAME=") || strings.HasPrefix(lines[i], "DEVTYPE=")) {
		i++
	}
	return i
}

// lowest returns the lowest N for which prefix+N is not a node in use, as
// drivers hand out ttyUSB, ttyACM and video numbers.
func (b *builder) lowest(prefix string) int {
	for n := 0; ; n++ {
		if !b.m.used[prefix+strconv.Itoa(n)] {
			return n
		}
	}
}

// chain lays out shared parents one below the other and returns the last.
func (b *builder) chain(parent string, ds ...Dev) string {
	for _, d := range ds {
		parent = b.ensure(parent, d)
	}
	return parent
}

// NodePaths are the paths below /dev of every node present.
func (m *Machine) NodePaths() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, n := range m.nodes {
		out = append(out, n.Path)
	}
	return out
}
