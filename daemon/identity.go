package daemon

import (
	"io/fs"
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

	loaded bool
	info   hotplug.DeviceInfo
	err    error

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
