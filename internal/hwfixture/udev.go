package hwfixture

import (
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing/fstest"
	"unicode/utf8"
)

// This file is the part of Debian's udev (systemd 252, bookworm) that
// gives the nodes the catalog makes their database entries: the rules in
// /lib/udev/rules.d and the builtins they import, each property with the
// rule line that sets it. It reads only the fake sysfs, as udevd reads
// only sysfs. What udev learns by opening the node itself (v4l_id's
// ID_V4L_*, needing a real camera) is left out: a fixture may lack a
// property, never carry one real udev would not set.
// TestMatchesRealUdev holds this file to the real udevd.

// udevEntry is one database entry: E: properties in the order the rules
// set them, S: links.
type udevEntry struct {
	props []string // KEY=VALUE
	links []string
}

func (e *udevEntry) set(k, v string) {
	for i, p := range e.props {
		if strings.HasPrefix(p, k+"=") {
			e.props[i] = k + "=" + v
			return
		}
	}
	e.props = append(e.props, k+"="+v)
}

func (e *udevEntry) get(k string) string {
	for _, p := range e.props {
		if v, ok := strings.CutPrefix(p, k+"="); ok {
			return v
		}
	}
	return ""
}

func (e *udevEntry) link(l string) {
	if !slices.Contains(e.links, l) {
		e.links = append(e.links, l)
	}
}

// sysView reads a sysfs tree the way sd-device does.
type sysView struct{ sys fs.FS }

// parents are dir and the device directories above it (those with a
// uevent file: sd_device_get_parent skips the class and grouping
// directories between devices, such as tty/ or video4linux/).
func (v sysView) parents(dir string) []string {
	var out []string
	for d := dir; d != "devices" && d != "." && d != ""; d = path.Dir(d) {
		if _, err := fs.Stat(v.sys, d+"/uevent"); err == nil {
			out = append(out, d)
		}
	}
	return out
}

func (v sysView) subsystem(dir string) string {
	t, err := fs.ReadLink(v.sys, dir+"/subsystem")
	if err != nil {
		return ""
	}
	return path.Base(t)
}

func (v sysView) driver(dir string) string {
	t, err := fs.ReadLink(v.sys, dir+"/driver")
	if err != nil {
		return ""
	}
	return path.Base(t)
}

func (v sysView) uevent(dir, key string) string {
	data, _ := fs.ReadFile(v.sys, dir+"/uevent")
	for line := range strings.Lines(string(data)) {
		if val, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), key+"="); ok {
			return val
		}
	}
	return ""
}

// attr is a sysattr value as sd_device_get_sysattr_value gives it: the
// file with trailing whitespace removed.
func (v sysView) attr(dir, name string) (string, bool) {
	data, err := fs.ReadFile(v.sys, dir+"/"+name)
	if err != nil {
		return "", false
	}
	return strings.TrimRight(string(data), " \t\n\r"), true
}

// parentWith returns the nearest parent (or dir) with the subsystem and,
// if devtype is not empty, that DEVTYPE.
func (v sysView) parentWith(dir, subsystem, devtype string) string {
	for _, d := range v.parents(dir) {
		if v.subsystem(d) == subsystem && (devtype == "" || v.uevent(d, "DEVTYPE") == devtype) {
			return d
		}
	}
	return ""
}

// entryFor runs the rules for a node's add event.
func (v sysView) entryFor(n *PluggedNode) *udevEntry {
	e := &udevEntry{}
	dir, kernel := n.SysPath, path.Base(n.SysPath)
	subsystem := v.subsystem(dir)
	devtype := v.uevent(dir, "DEVTYPE")

	// 50-udev-default.rules:17
	// SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", IMPORT{builtin}="usb_id", IMPORT{builtin}="hwdb --subsystem=usb"
	if subsystem == "usb" && devtype == "usb_device" {
		v.usbID(e, dir)
		v.hwdbUSB(e, dir)
	}
	// 50-udev-default.rules:15 SUBSYSTEM=="hidraw", IMPORT{builtin}="hwdb"
	if subsystem == "hidraw" {
		v.hwdbSearch(e, dir, "")
	}
	// 60-fido-id.rules:5 IMPORT{program}="fido_id": the catalog's report
	// descriptors are no FIDO tokens, so it sets nothing.
	// 50-udev-default.rules:30 SUBSYSTEM=="pci|usb|platform", IMPORT{builtin}="path_id"
	if subsystem == "pci" || subsystem == "usb" || subsystem == "platform" {
		v.pathID(e, dir)
	}

	switch {
	case subsystem == "tty":
		// 60-serial.rules:6 SUBSYSTEMS=="usb", IMPORT{builtin}="usb_id", IMPORT{builtin}="hwdb --subsystem=usb"
		if v.parentWith(dir, "usb", "") != "" {
			v.usbID(e, dir)
			v.hwdbUSB(e, dir)
		}
		// 60-serial.rules:11 KERNEL!="ttyUSB[0-9]*|ttyACM[0-9]*", GOTO="serial_end"
		if !strings.HasPrefix(kernel, "ttyUSB") && !strings.HasPrefix(kernel, "ttyACM") {
			break
		}
		// 60-serial.rules:13 SUBSYSTEMS=="usb-serial", ENV{.ID_PORT}="$attr{port_number}"
		port := ""
		if p := v.parentWith(dir, "usb-serial", ""); p != "" {
			port, _ = v.attr(p, "port_number")
		}
		// 60-serial.rules:15-17 IMPORT{builtin}="path_id"; by-path links
		v.pathID(e, dir)
		if id := e.get("ID_PATH"); id != "" {
			if port == "" {
				e.link("serial/by-path/" + id)
			} else {
				e.link("serial/by-path/" + id + "-port" + port)
			}
		}
		// 60-serial.rules:19-23 by-id links, with ID_BUS, ID_SERIAL and ID_USB_INTERFACE_NUM set
		bus, serial, ifnum := e.get("ID_BUS"), e.get("ID_SERIAL"), e.get("ID_USB_INTERFACE_NUM")
		if bus == "" || serial == "" || ifnum == "" {
			break
		}
		if port == "" {
			e.link("serial/by-id/" + bus + "-" + serial + "-if" + ifnum)
		} else {
			e.link("serial/by-id/" + bus + "-" + serial + "-if" + ifnum + "-port" + port)
		}

	case subsystem == "video4linux":
		// 60-persistent-v4l.rules:7 IMPORT{program}="v4l_id $devnode": needs the device (left out).
		// 60-persistent-v4l.rules:9 SUBSYSTEMS=="usb", IMPORT{builtin}="usb_id"
		if v.parentWith(dir, "usb", "") != "" {
			v.usbID(e, dir)
		}
		index, hasIndex := v.attr(dir, "index")
		// 60-persistent-v4l.rules:10 KERNEL=="video*", ENV{ID_SERIAL}=="?*", SYMLINK+="v4l/by-id/$env{ID_BUS}-$env{ID_SERIAL}-video-index$attr{index}"
		if strings.HasPrefix(kernel, "video") && e.get("ID_SERIAL") != "" {
			e.link("v4l/by-id/" + e.get("ID_BUS") + "-" + e.get("ID_SERIAL") + "-video-index" + index)
		}
		// 60-persistent-v4l.rules:13-14 TEST!="index" / ATTR{index}!="?*", GOTO end
		if !hasIndex || index == "" {
			break
		}
		// 60-persistent-v4l.rules:16-17 IMPORT{builtin}="path_id"; by-path link
		v.pathID(e, dir)
		if id := e.get("ID_PATH"); id != "" && strings.HasPrefix(kernel, "video") {
			e.link("v4l/by-path/" + id + "-video-index" + index)
		}

	case subsystem == "sound" && strings.HasPrefix(kernel, "controlC"):
		// 60-persistent-alsa.rules:7 SUBSYSTEMS=="usb", ENV{ID_MODEL}=="", IMPORT{builtin}="usb_id"
		if v.parentWith(dir, "usb", "") != "" && e.get("ID_MODEL") == "" {
			v.usbID(e, dir)
		}
		// 60-persistent-alsa.rules:8-9 by-id links
		if serial := e.get("ID_SERIAL"); serial != "" {
			if ifnum := e.get("ID_USB_INTERFACE_NUM"); ifnum != "" {
				e.link("snd/by-id/" + e.get("ID_BUS") + "-" + serial + "-" + ifnum)
			} else {
				e.link("snd/by-id/" + e.get("ID_BUS") + "-" + serial)
			}
		}
		// 60-persistent-alsa.rules:11-12 IMPORT{builtin}="path_id"; by-path link
		v.pathID(e, dir)
		if id := e.get("ID_PATH"); id != "" {
			e.link("snd/by-path/" + id)
		}
	}

	// 70-uaccess.rules:11,48,50,52 (nodes only: ENV{MAJOR}=="" ends the file)
	// SUBSYSTEM=="sound|video4linux|media", TAG+="uaccess"
	uaccess := subsystem == "sound" || subsystem == "video4linux" || subsystem == "media"
	// 71-seat.rules:12 TAG=="uaccess", SUBSYSTEM!="sound", TAG+="seat"
	seat := uaccess && subsystem != "sound"
	// 71-seat.rules:38-39 SUBSYSTEM=="usb", ATTR{bDeviceClass}=="00|09", TAG+="seat"
	if subsystem == "usb" {
		if c, _ := v.attr(dir, "bDeviceClass"); c == "00" || c == "09" {
			seat = true
		}
	}
	if seat {
		// 71-seat.rules:63 TAG=="seat", ENV{ID_PATH}=="", IMPORT{builtin}="path_id"
		if e.get("ID_PATH") == "" {
			v.pathID(e, dir)
		}
		// 71-seat.rules:64 ENV{ID_FOR_SEAT}="$env{SUBSYSTEM}-$env{ID_PATH_TAG}"
		if tag := e.get("ID_PATH_TAG"); tag != "" && e.get("ID_FOR_SEAT") == "" {
			e.set("ID_FOR_SEAT", subsystem+"-"+tag)
		}
	}
	// 99-systemd.rules:63 SUBSYSTEM=="sound", KERNEL=="controlC*", ENV{SYSTEMD_WANTS}+="sound.target", ENV{SYSTEMD_USER_WANTS}+="sound.target"
	if subsystem == "sound" && strings.HasPrefix(kernel, "controlC") {
		e.set("SYSTEMD_WANTS", "sound.target")
		e.set("SYSTEMD_USER_WANTS", "sound.target")
	}
	return e
}

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

// usecInitialized is the I: line of every entry: when udev first saw the
// device (CLOCK_MONOTONIC µs); any fixed value will do.
const usecInitialized = "4817202"

// dbName is the node's database file: c<major>:<minor> or b…
func dbName(n *PluggedNode) string {
	kind := "c"
	if n.Block {
		kind = "b"
	}
	return fmt.Sprintf("%s%d:%d", kind, n.Major, n.Minor)
}

// render is the database file as udevd writes it
// (src/libsystemd/sd-device/device-private.c device_update_db): links,
// the initialisation time, properties, then the db version.
func (e *udevEntry) render() []byte {
	var b strings.Builder
	links := slices.Sorted(slices.Values(e.links))
	for _, l := range links {
		b.WriteString("S:" + l + "\n")
	}
	b.WriteString("I:" + usecInitialized + "\n")
	for _, p := range e.props {
		b.WriteString("E:" + p + "\n")
	}
	b.WriteString("V:1\n")
	return []byte(b.String())
}

// writeUdev writes n's database entry and links (the machine's lock held).
func (m *Machine) writeUdev(n *PluggedNode) {
	e := sysView{m.Sys}.entryFor(n)
	m.Run.Put("udev/data/"+dbName(n), &fstest.MapFile{Mode: 0o644, Data: e.render()})
	for _, l := range e.links {
		// udev's links are relative: serial/by-id/x → ../../ttyUSB0.
		m.Dev.Put(l, linkFile(strings.Repeat("../", strings.Count(l, "/"))+n.Path))
	}
	n.links = e.links
}

// removeUdev removes n's database entry and links.
func (m *Machine) removeUdev(n *PluggedNode) {
	m.Run.Remove("udev/data/" + dbName(n))
	for _, l := range n.links {
		m.Dev.Remove(l)
	}
	n.links = nil
}
