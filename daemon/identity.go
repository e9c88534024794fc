package daemon

import (
	"io/fs"
	"path"
	"path/filepath"
	"regexp"
	"slices"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/hotplug"
)

// lazyIdent is a device's identity, read from sysfs and the udev database
// the first time a rule asks (only rules that match on more than the path
// do, and only for devices whose path they match), then kept: a device
// that goes away keeps the identity it had, so the rules still recognise
// it while it is unhealthy.
type lazyIdent struct {
	reader *hotplug.Reader
	devFS  fs.FS
	path   string

	loaded       bool
	major, minor uint32 // the node's device number, once loaded without error
	info         hotplug.DeviceInfo
	err          error

	unitRead bool
	unit     hotplug.Unit
}

func (l *lazyIdent) load() {
	if l.loaded {
		return
	}
	l.loaded = true
	major, minor, block, err := hotplug.Rdev(l.devFS, l.path)
	if err != nil {
		l.err = err
		return
	}
	l.major, l.minor = major, minor
	l.info, l.err = l.reader.Info(major, minor, block)
}

// Subsystem is the device's sysfs subsystem ("tty", "block", …).
func (l *lazyIdent) Subsystem() string {
	l.load()
	return l.info.Subsystem
}

// Property is one of the device's kernel or udev properties.
func (l *lazyIdent) Property(key string) (string, bool) {
	l.load()
	v, ok := l.info.Properties[key]
	return v, ok
}

// numa is the device's NUMA node, from the nearest sysfs ancestor that has
// one (PCI devices do).
func (l *lazyIdent) numa() (int, bool) {
	l.load()
	if l.err != nil {
		return 0, false
	}
	return l.reader.NUMANode(l.info)
}

// links are udev's symlinks to the node, as /dev paths, sorted. Only
// links inside /dev count: the container gets the real node at that path.
func (l *lazyIdent) links() []string {
	l.load()
	var out []string
	for _, link := range l.info.Links {
		if filepath.IsLocal(link) {
			out = append(out, "/dev/"+link)
		}
	}
	slices.Sort(out)
	return out
}

// serial is the device's serial number: udev's ID_SERIAL_SHORT, else (no
// udev, as in a container without /run/udev) the USB device's own serial
// attribute, as udev would give it.
func (l *lazyIdent) serial() string {
	if s, ok := l.Property("ID_SERIAL_SHORT"); ok {
		return s
	}
	return l.physical().Serial
}

// MatchAttributes applies udev's ATTRS rule over the device's sysfs
// ancestors.
func (l *lazyIdent) MatchAttributes(attrs map[string]*regexp.Regexp) bool {
	l.load()
	return l.err == nil && l.reader.MatchAttrs(l.info, attrs)
}

// Unit is the physical device the node belongs to, from sysfs alone (never
// udev's database, so the key does not change when udevd comes or goes).
func (l *lazyIdent) Unit() conf.UnitID {
	u := l.physical()
	return conf.UnitID{Key: u.Key, PortKey: u.PortKey, SysPath: u.SysPath}
}

// physical reads the node's unit once.
func (l *lazyIdent) physical() hotplug.Unit {
	l.load()
	if !l.unitRead && l.err == nil {
		l.unitRead = true
		l.unit = l.reader.Unit(l.info)
	}
	return l.unit
}

// Identity is what sysfs and udev's database say a unit is, for an output
// that describes devices (the DRA driver's attributes); its first node's
// where it has several. An empty field is unknown. It is comparable, so a
// field added here is compared by unit.equal.
type Identity struct {
	Path      string // the unit's node or directory below the device root; "" for a GPU
	Subsystem string // sysfs subsystem: "tty", "video4linux", "sound"
	// Major and Minor are the node's device number, when HasDevNum.
	Major, Minor uint32
	HasDevNum    bool
	// Bus is the physical device's bus ("usb", "pci", "platform"), and
	// BusAddress its name there ("1-1.4", "0000:00:1f.3"); "" when on none.
	Bus, BusAddress string
	// Vendor and Product are a USB device's idVendor and idProduct
	// ("0403", "6001").
	Vendor, Product string
	Serial          string // udev's ID_SERIAL_SHORT, else the USB device's serial
	// Model is a USB device's product string, else udev's model
	// (ID_MODEL_FROM_DATABASE, ID_MODEL).
	Model  string
	Port   string // a USB device's port path: "1-1.4"
	Driver string // the kernel driver nearest the node: "ftdi_sio"
}

// identity reads the node's Identity; a node sysfs does not know keeps
// only its path.
func (l *lazyIdent) identity() Identity {
	id := Identity{Path: l.path}
	if l.load(); l.err != nil {
		return id
	}
	u := l.physical()
	id.Subsystem = l.info.Subsystem
	id.Major, id.Minor, id.HasDevNum = l.major, l.minor, true
	id.Bus, id.Vendor, id.Product, id.Port, id.Model = u.Bus, u.Vendor, u.Product, u.Port, u.Model
	if u.Bus != "" {
		id.BusAddress = path.Base(u.SysPath)
	}
	id.Serial = l.serial()
	for _, key := range []string{"ID_MODEL_FROM_DATABASE", "ID_MODEL"} {
		if v, ok := l.Property(key); ok && id.Model == "" {
			id.Model = v
		}
	}
	id.Driver = l.reader.Driver(l.info)
	return id
}
