package hwfixture

import (
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"unicode/utf8"
)

// usbID is systemd's udev-builtin-usb_id.c (v252) for a node at dir: the
// USB device's vendor, model, revision and serial, the interface's number,
// class and driver.
func (v sysView) usbID(e *udevEntry, dir string) {
	var usb, ifnum, driver, typ string
	if v.subsystem(dir) == "usb" && v.uevent(dir, "DEVTYPE") == "usb_device" {
		usb = dir // the shortcut for a usb_device node
	} else {
		intf := v.parentWith(dir, "usb", "usb_interface")
		if intf == "" {
			return
		}
		ifnum, _ = v.attr(intf, "bInterfaceNumber")
		driver = v.driver(intf)
		class, _ := v.attr(intf, "bInterfaceClass")
		typ = usbIfType(hexByte(class))
		usb = v.parentWith(intf, "usb", "usb_device")
		if usb == "" {
			return
		}
	}
	packed := v.packedInterfaces(usb)
	vendorID, _ := v.attr(usb, "idVendor")
	productID, _ := v.attr(usb, "idProduct")
	vendor, ok := v.attr(usb, "manufacturer")
	if !ok {
		vendor = vendorID
	}
	model, ok := v.attr(usb, "product")
	if !ok {
		model = productID
	}
	rev, _ := v.attr(usb, "bcdDevice")
	serial := ""
	if s, ok := v.attr(usb, "serial"); ok {
		// Serial numbers with characters Windows would refuse are ignored.
		if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7f || r == ',' }) {
			serial = replaceChars(replaceWhitespace(s))
		}
	}
	vendorStr, modelStr := replaceChars(replaceWhitespace(vendor)), replaceChars(replaceWhitespace(model))
	full := vendorStr + "_" + modelStr
	if serial != "" {
		full += "_" + serial
	}
	revStr := replaceChars(replaceWhitespace(rev))
	// The same values as ID_* (unless another bus set ID_BUS first) and,
	// always, as ID_USB_*, in this order; empty ones are left out.
	values := []string{
		"MODEL", modelStr, "MODEL_ENC", encodeString(model), "MODEL_ID", productID,
		"SERIAL", full, "SERIAL_SHORT", serial,
		"VENDOR", vendorStr, "VENDOR_ENC", encodeString(vendor), "VENDOR_ID", vendorID,
		"REVISION", revStr, "TYPE", typ,
	}
	prefixes := []string{"ID_USB_"}
	if e.get("ID_BUS") == "" {
		e.set("ID_BUS", "usb")
		prefixes = []string{"ID_", "ID_USB_"}
	}
	for _, prefix := range prefixes {
		for i := 0; i < len(values); i += 2 {
			if values[i+1] != "" {
				e.set(prefix+values[i], values[i+1])
			}
		}
	}
	if packed != "" {
		e.set("ID_USB_INTERFACES", packed)
	}
	if ifnum != "" {
		e.set("ID_USB_INTERFACE_NUM", ifnum)
	}
	if driver != "" {
		e.set("ID_USB_DRIVER", driver)
	}
}

// usbIfType is usb_id's set_usb_iftype.
func usbIfType(class byte) string {
	switch class {
	case 1:
		return "audio"
	case 3:
		return "hid"
	case 6:
		return "media"
	case 7:
		return "printer"
	case 8:
		return "storage"
	case 9:
		return "hub"
	case 0x0e:
		return "video"
	}
	return "generic"
}

// packedInterfaces is usb_id's dev_if_packed_info: ":ccsspp" for every
// distinct interface in the descriptors file. Its loop needs 9 more bytes
// after a descriptor, so an interface descriptor at the very end is not
// counted (real descriptors end with endpoints).
func (v sysView) packedInterfaces(usb string) string {
	buf, err := fs.ReadFile(v.sys, usb+"/descriptors")
	if err != nil || len(buf) < 18 {
		return ""
	}
	var out string
	for pos := 0; pos+9 < len(buf); {
		l := int(buf[pos])
		if l < 3 || l > len(buf)-9 {
			break
		}
		typ := buf[pos+1]
		if typ == 4 && pos+8 < len(buf) {
			s := fmt.Sprintf(":%02x%02x%02x", buf[pos+5], buf[pos+6], buf[pos+7])
			if !strings.Contains(out, s) {
				out += s
			}
		}
		pos += l
	}
	if out != "" {
		out += ":"
	}
	return out
}

// hwdbUSB is `IMPORT{builtin}="hwdb --subsystem=usb"`.
func (v sysView) hwdbUSB(e *udevEntry, dir string) { v.hwdbSearch(e, dir, "usb") }

// hwdbSearch is udev-builtin-hwdb.c's search (v252): the first parent (of
// the subsystem, when one is given) whose modalias hwdb knows; a USB
// device without one gets "usb:vXXXXpXXXX…", and the search stops there.
// The catalog's modaliases hwdb knows are its USB ones; the names come
// from the hwdb and usbClasses tables below.
func (v sysView) hwdbSearch(e *udevEntry, dir, subsystem string) {
	for _, d := range v.parents(dir) {
		sub := v.subsystem(d)
		if subsystem != "" && sub != subsystem {
			continue
		}
		isUSBDevice := sub == "usb" && v.uevent(d, "DEVTYPE") == "usb_device"
		modalias := v.uevent(d, "MODALIAS")
		if !strings.HasPrefix(modalias, "usb:") && !isUSBDevice {
			continue // no modalias, or one hwdb has nothing for (hid:, platform:)
		}
		usb := d
		if !isUSBDevice {
			usb = v.parentWith(d, "usb", "usb_device")
		}
		vendor, _ := v.attr(usb, "idVendor")
		product, _ := v.attr(usb, "idProduct")
		if db, ok := hwdb[vendor]; ok {
			e.set("ID_VENDOR_FROM_DATABASE", db.vendor)
			if m, ok := db.models[product]; ok {
				e.set("ID_MODEL_FROM_DATABASE", m)
			}
			// An interface's modalias carries the device class too
			// (dcXX), which 20-usb-classes.hwdb names.
			if _, rest, ok := strings.Cut(modalias, "dc"); ok && len(rest) >= 2 {
				if c, ok := usbClasses[rest[:2]]; ok {
					e.set("ID_USB_CLASS_FROM_DATABASE", c)
				}
			}
			return
		}
		if isUSBDevice {
			return // hwdb looks no further than the USB device
		}
	}
}

// hwdb is what Debian's systemd 252 hwdb (20-usb-vendor-model.hwdb) says of
// the catalog's USB devices.
var hwdb = map[string]struct {
	vendor string
	models map[string]string
}{
	"0403": {"Future Technology Devices International, Ltd", map[string]string{"6001": "FT232 Serial (UART) IC"}},
	"10c4": {"Silicon Labs", map[string]string{"ea60": "CP210x UART Bridge"}},
	"1a86": {"QinHeng Electronics", map[string]string{"7523": "CH340 serial converter"}},
	"046d": {"Logitech, Inc.", map[string]string{"0825": "Webcam C270"}},
	"0d8c": {"C-Media Electronics, Inc.", map[string]string{"013c": "CM108 Audio Controller"}},
	"05e3": {"Genesys Logic, Inc.", map[string]string{"0608": "Hub"}},
	"1d6b": {"Linux Foundation", map[string]string{"0002": "2.0 root hub", "0003": "3.0 root hub"}},
}

// usbClasses is what 20-usb-classes.hwdb names of the device classes in
// the catalog (usb:v*p*d*dcXX*); class 00 ("defined at interface level")
// and EF have no device-class entry of their own there.
var usbClasses = map[string]string{"FF": "Vendor Specific Class"}

// pathID is systemd's udev-builtin-path_id.c (v252) for the buses the
// catalog has: usb, pci and platform.
func (v sysView) pathID(e *udevEntry, dir string) {
	var parts []string
	supported := false
	ps := v.parents(dir)
	for i := 0; i < len(ps); i++ {
		d := ps[i]
		name := path.Base(d)
		switch v.subsystem(d) {
		case "usb":
			dt := v.uevent(d, "DEVTYPE")
			if dt != "usb_interface" && dt != "usb_device" {
				continue
			}
			_, port, ok := strings.Cut(name, "-")
			if !ok {
				continue
			}
			parts = append(parts, "usb-0:"+port)
			i = skipSubsystem(v, ps, i, "usb")
			supported = true
		case "pci":
			parts = append(parts, "pci-"+name)
			i = skipSubsystem(v, ps, i, "pci")
			supported = true
		case "platform":
			parts = append(parts, "platform-"+name)
			i = skipSubsystem(v, ps, i, "platform")
			supported = true
		}
	}
	if !supported || len(parts) == 0 {
		return
	}
	slices.Reverse(parts)
	p := strings.Join(parts, "-")
	e.set("ID_PATH", p)
	e.set("ID_PATH_TAG", pathTag(p))
}

// skipSubsystem is path_id's skip_subsystem: it moves past the parents of
// the same subsystem but the last.
func skipSubsystem(v sysView, ps []string, i int, sub string) int {
	for i+1 < len(ps) && v.subsystem(ps[i+1]) == sub {
		i++
	}
	return i
}

// pathTag is path_id's tag: letters, digits and '-', one '_' for any run
// of other characters, none leading or trailing.
func pathTag(p string) string {
	var b []byte
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-' {
			b = append(b, c)
			continue
		}
		if len(b) == 0 || b[len(b)-1] == '_' {
			continue
		}
		b = append(b, '_')
	}
	return strings.TrimRight(string(b), "_")
}

// replaceWhitespace is udev_replace_whitespace: trims, and turns each run
// of whitespace into one '_'.
func replaceWhitespace(s string) string {
	return strings.Join(strings.Fields(s), "_")
}

// devnodeSafe is udev's allow-list for devnode names: letters, digits and
// "#+-.:=@_".
func devnodeSafe(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || strings.IndexByte("#+-.:=@_", c) >= 0
}

// replaceChars is udev_replace_chars with no extra allowed characters.
func replaceChars(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case devnodeSafe(c):
			b.WriteByte(c)
			i++
		case c == '\\' && i+1 < len(s) && s[i+1] == 'x':
			b.WriteString(`\x`)
			i += 2
		default:
			if r, n := utf8.DecodeRuneInString(s[i:]); n > 1 && r != utf8.RuneError {
				b.WriteString(s[i : i+n])
				i += n
				continue
			}
			b.WriteByte('_')
			i++
		}
	}
	return b.String()
}

// encodeString is udev's encode_devnode_name: unsafe bytes as \xNN.
func encodeString(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if r, n := utf8.DecodeRuneInString(s[i:]); n > 1 && r != utf8.RuneError {
			b.WriteString(s[i : i+n])
			i += n
			continue
		}
		c := s[i]
		if c == '\\' || !devnodeSafe(c) {
			fmt.Fprintf(&b, `\x%02x`, c)
		} else {
			b.WriteByte(c)
		}
		i++
	}
	return b.String()
}
