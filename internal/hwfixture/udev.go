package hwfixture

import (
	"io/fs"
	"path"
	"strings"
	"testing/fstest"
)

// udev.go, udev_builtins.go and udev_db.go are the part of Debian's udev
// (systemd 252, bookworm) that gives the nodes the catalog makes their
// database entries: the rules in /lib/udev/rules.d (this file) and the
// builtins they import (udev_builtins.go), each property with the rule
// line that sets it, and the database files udevd writes (udev_db.go).
// They read only the fake sysfs, as udevd reads only sysfs. What udev
// learns by opening the node itself (v4l_id's ID_V4L_*, needing a real
// camera) is left out: a fixture may lack a property, never carry one
// real udev would not set. TestMatchesRealUdev holds these files to the
// real udevd.

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

// writeUdev writes n's database entry and links (the machine's lock held).
func (m *Machine) writeUdev(n *PluggedNode) {
	if n.SysPath == "" {
		return // made with mknod: the kernel sent no uevent, so udev has no entry
	}
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
