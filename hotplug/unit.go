package hotplug

import (
	"io/fs"
	"path"
	"strings"
	"unicode/utf8"
)

// Unit is the physical device a device node belongs to, read from sysfs
// alone: the kernel's own tree, the same whether systemd-udevd runs or
// not. A USB camera's video0 and video1 and its sound card's controlC1
// and pcmC1D0c are nodes of one unit, the camera.
type Unit struct {
	// Key is the unit's stable identity, usable as a device ID (letters,
	// digits and "._-"):
	//   - a USB device with a serial number: vendor_product_serial,
	//     "0403_6001_A1B2C3";
	//   - a USB device without one: the physical port, "usb-" + the host
	//     controller + the port chain, "usb-0000_00_14.0-1.4", so the same
	//     port gives the same key to whatever is plugged into it;
	//   - any other device on a bus: bus-name, "pci-0000_00_1f.3",
	//     "platform-fe804000.i2c", "spi-spi0.0";
	//   - a device on no bus (virtual): its sysfs path,
	//     "virtual-block-zram0".
	Key string
	// PortKey is the key from the unit's place alone: Key for every unit
	// but a USB device with a serial number, whose PortKey is its port's
	// key. It tells apart two devices that report the same serial number.
	PortKey string
	// SysPath is the unit's directory below the sys root.
	SysPath string
	// Bus is the unit's bus ("usb", "pci", "platform", "spi", ...), or ""
	// for a device on no bus.
	Bus string
	// Vendor, Product and Serial are a USB device's idVendor, idProduct
	// and serial attributes ("" when it has none).
	Vendor, Product, Serial string
	// Port is a USB device's port path as the kernel names the device:
	// bus number, then the port chain ("1-1.4").
	Port string
	// Model is a USB device's product string, as the device reports it
	// ("FT232R USB UART"); "" when it has none.
	Model string
}

// Unit returns the physical device the node described by info belongs to:
// the nearest USB device (DEVTYPE=usb_device) at or above it; else the
// nearest device on a bus (its subsystem link leads to /sys/bus/...: a PCI
// function, a platform device, an SPI device, an I2C adapter, ...); else
// the node's own sysfs device. USB comes first because what a user plugs
// in is the USB device: its interfaces, its usb-serial ports and its HID
// devices, all nearer the node, are parts of it.
func (r *Reader) Unit(info DeviceInfo) Unit {
	if info.SysPath == "" {
		return Unit{}
	}
	var usb, bus string
	var busName string
	for dir := info.SysPath; dir != "." && dir != "devices" && dir != "/" && dir != ""; dir = path.Dir(dir) {
		b, ok := r.bus(dir)
		if !ok {
			continue
		}
		if bus == "" {
			bus, busName = dir, b
		}
		if b == "usb" && r.ueventValue(dir, "DEVTYPE") == "usb_device" {
			usb = dir
			break
		}
	}
	switch {
	case usb != "":
		return r.usbUnit(usb)
	case bus != "":
		k := idSafe(busName + "-" + path.Base(bus))
		return Unit{Key: k, PortKey: k, SysPath: bus, Bus: busName}
	}
	k := idSafe(strings.ReplaceAll(strings.TrimPrefix(info.SysPath, "devices/"), "/", "-"))
	return Unit{Key: k, PortKey: k, SysPath: info.SysPath}
}

// usbUnit describes the USB device at dir.
func (r *Reader) usbUnit(dir string) Unit {
	u := Unit{SysPath: dir, Bus: "usb", Port: path.Base(dir)}
	u.Vendor, _ = r.attr(dir + "/idVendor")
	u.Product, _ = r.attr(dir + "/idProduct")
	u.Serial, _ = r.attr(dir + "/serial")
	u.Serial = strings.TrimSpace(u.Serial)
	u.Model, _ = r.attr(dir + "/product")
	u.Model = strings.TrimSpace(u.Model)
	// The port: the device's name is <bus>-<chain> ("1-1.4"); the bus
	// number is the root hub's, which the host controller above it owns.
	// An xHCI controller has two root hubs (USB 2 and 3) for the same
	// sockets, so the controller and the chain name the socket.
	u.PortKey = "usb-" + idSafe(path.Base(dir))
	if _, chain, ok := strings.Cut(u.Port, "-"); ok {
		if host := r.usbHost(dir); host != "" {
			u.PortKey = "usb-" + idSafe(path.Base(host)) + "-" + idSafe(chain)
		}
	}
	u.Key = u.PortKey
	if u.Serial != "" {
		u.Key = idSafe(u.Vendor + "_" + u.Product + "_" + u.Serial)
	}
	return u
}

// Driver is the kernel driver bound to the device described by info or to
// its nearest ancestor that has one: a usb-serial port's "ftdi_sio", a
// webcam's "uvcvideo" (its interface's), a PCI sound card's
// "snd_hda_intel". "" when none has.
func (r *Reader) Driver(info DeviceInfo) string {
	for dir := info.SysPath; dir != "." && dir != "devices" && dir != "/" && dir != ""; dir = path.Dir(dir) {
		if target, err := fs.ReadLink(r.sys, dir+"/driver"); err == nil {
			return path.Base(target)
		}
	}
	return ""
}

// usbHost returns the host controller of the USB device at dir: the parent
// of its root hub (usbN).
func (r *Reader) usbHost(dir string) string {
	for d := path.Dir(dir); d != "." && d != "devices" && d != "/" && d != ""; d = path.Dir(d) {
		if b := path.Base(d); strings.HasPrefix(b, "usb") && isDigits(b[3:]) {
			return path.Dir(d)
		}
	}
	return ""
}

// bus reports the bus of the device at dir, when it is on one: its
// subsystem link leads to bus/<name> rather than class/<name>.
func (r *Reader) bus(dir string) (string, bool) {
	if b, ok := r.buses[dir]; ok {
		return b, b != ""
	}
	b := ""
	if target, err := fs.ReadLink(r.sys, dir+"/subsystem"); err == nil && path.Base(path.Dir(target)) == "bus" {
		b = path.Base(target)
	}
	r.buses[dir] = b
	return b, b != ""
}

// ueventValue returns one KEY's value from the uevent file of dir.
func (r *Reader) ueventValue(dir, key string) string {
	data, _ := r.attr(dir + "/uevent")
	for line := range strings.Lines(data) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), key+"="); ok {
			return v
		}
	}
	return ""
}

// idSafe keeps a key to letters, digits and "._-", as device IDs and CDI
// device names allow.
func idSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return r
		}
		return '_'
	}, s)
}
