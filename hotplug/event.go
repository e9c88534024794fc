package hotplug

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/pilebones/go-udev/netlink"
)

// MaxMessageSize is the largest uevent message ParseEvent accepts and the
// size of the Monitor's receive buffer. The kernel limits its own messages to
// 2 KiB (UEVENT_BUFFER_SIZE); udevd's are larger but far below this.
const MaxMessageSize = 64 << 10

// libudev framing, from systemd's src/libsystemd/sd-device/device-monitor.c
// (struct monitor_netlink_header).
const (
	libudevPrefix    = "libudev\x00"
	libudevMagic     = 0xfeedcafe // stored big-endian
	libudevHeaderLen = 40         // prefix[8], magic, header_size, properties_off, properties_len, 4 filter words
)

// ErrMalformed is wrapped by every error ParseEvent returns.
var ErrMalformed = errors.New("malformed uevent")

// Event is one uevent, from the kernel or re-broadcast by udevd, or a marker
// that events were lost.
type Event struct {
	// Action is the kobject action: add, remove, change, move, bind, ...
	Action string
	// DevPath is the sysfs path below /sys, e.g. /devices/virtual/block/zram1.
	DevPath string
	// Subsystem is the SUBSYSTEM property, e.g. block or tty.
	Subsystem string
	// Seqnum is the kernel's SEQNUM property, empty if absent.
	Seqnum string
	// DevName is the device node relative to /dev ("zram1", "snd/controlC0"),
	// or empty if the event has no node. Kernel events carry DEVNAME=zram1,
	// udev events DEVNAME=/dev/zram1; both normalise to "zram1".
	DevName string
	// Env holds every property of the event as received (DEVNAME unnormalised).
	Env map[string]string
	// Source is the netlink group the event came from. ParseEvent infers it
	// from the framing: a libudev header means SourceUdev, else SourceKernel.
	Source Source
	// Lost marks an Event that is not a device event: events may have been
	// missed (ENOBUFS, a truncated message, a socket error, or a (re)connect:
	// nothing from before it was seen) and the reader must rescan. All
	// other fields are then zero except Source and Connected.
	Lost bool
	// Connected marks the Lost event sent each time the socket has been
	// bound, the first time or after a socket error: from here on no event
	// is missed. Lost is set too, since what happened before was not seen.
	Connected bool
}

// Relevant reports whether the event is worth a rescan of /dev: events were
// lost or the socket was (re)connected, the event names a device node, or a
// device appeared, disappeared or moved. A change event for a device without a node (a power supply, a bdi)
// is not relevant, nor is anything of a block device's bdi (its writeback
// state): it has no node and nothing of it is read, and its add and remove
// come just before the block device's own uevent, whose node is not made
// yet (add) or not gone yet (remove). A rescan for it finds nothing and
// delays the block device's own: at 1,000 resources a whole reconcile
// added to every block device's hotplug.
func (e Event) Relevant() bool {
	if e.Lost || e.Connected || e.DevName != "" {
		return true
	}
	if e.Subsystem == "bdi" {
		return false
	}
	switch e.Action {
	case "add", "remove", "move":
		return true
	}
	return false
}

// ParseEvent parses one raw netlink uevent message: either the kernel format
// ("action@devpath\0KEY=VALUE\0...") or udevd's, which is a libudev header
// followed by KEY=VALUE\0 properties. ACTION, DEVPATH and SUBSYSTEM are
// required. It never panics; every error wraps ErrMalformed.
//
// Parsing is delegated to go-udev's netlink.ParseUEvent; where that rejects
// valid input (a value containing '=', an action it does not know, a devpath
// containing '@') a tolerant parser of ours splits each property on its first
// '='. The framing is validated here first, because go-udev trusts it.
func ParseEvent(raw []byte) (Event, error) {
	if len(raw) == 0 {
		return Event{}, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	if len(raw) > MaxMessageSize {
		return Event{}, fmt.Errorf("%w: %d bytes exceeds %d", ErrMalformed, len(raw), MaxMessageSize)
	}
	if bytes.HasPrefix(raw, []byte(libudevPrefix)) {
		return parseUdev(raw)
	}
	return parseKernel(raw)
}

// parseKernel parses "action@devpath\0KEY=VALUE\0...".
func parseKernel(raw []byte) (Event, error) {
	// go-udev slices fields[1:len-1] and so panics on a message without
	// any NUL; the kernel always terminates its messages, so only such
	// messages go to it.
	if raw[len(raw)-1] == 0 {
		if u, err := netlink.ParseUEvent(raw); err == nil {
			return newEvent(string(u.Action), u.KObj, u.Env, SourceKernel)
		}
	}
	head, rest, _ := bytes.Cut(raw, []byte{0})
	action, devpath, ok := strings.Cut(string(head), "@")
	if !ok || action == "" || devpath == "" {
		return Event{}, fmt.Errorf("%w: bad header %q", ErrMalformed, truncate(head))
	}
	env, err := parseEnv(rest)
	if err != nil {
		return Event{}, err
	}
	return newEvent(action, devpath, env, SourceKernel)
}

// parseUdev validates the libudev header and parses the properties that
// follow it.
func parseUdev(raw []byte) (Event, error) {
	if len(raw) < libudevHeaderLen {
		return Event{}, fmt.Errorf("%w: libudev header truncated (%d bytes)", ErrMalformed, len(raw))
	}
	if m := binary.BigEndian.Uint32(raw[8:]); m != libudevMagic {
		return Event{}, fmt.Errorf("%w: libudev magic %#x", ErrMalformed, m)
	}
	// Offsets and lengths are in host byte order.
	off := uint64(binary.NativeEndian.Uint32(raw[16:]))
	n := uint64(binary.NativeEndian.Uint32(raw[20:]))
	if off < libudevHeaderLen || off+n > uint64(len(raw)) || n == 0 {
		return Event{}, fmt.Errorf("%w: libudev properties at %d+%d outside %d bytes", ErrMalformed, off, n, len(raw))
	}
	msg := raw[:off+n] // go-udev ignores properties_len; trim trailing bytes.
	if u, err := netlink.ParseUEvent(msg); err == nil {
		return newEvent(u.Env["ACTION"], u.Env["DEVPATH"], u.Env, SourceUdev)
	}
	env, err := parseEnv(msg[off:])
	if err != nil {
		return Event{}, err
	}
	return newEvent(env["ACTION"], env["DEVPATH"], env, SourceUdev)
}

// parseEnv splits NUL-separated KEY=VALUE fields on the first '='. Empty
// fields (the terminating NUL) are skipped.
func parseEnv(b []byte) (map[string]string, error) {
	env := make(map[string]string, bytes.Count(b, []byte{0})+1)
	for len(b) > 0 {
		var f []byte
		f, b, _ = bytes.Cut(b, []byte{0})
		if len(f) == 0 {
			continue
		}
		k, v, ok := bytes.Cut(f, []byte("="))
		if !ok || len(k) == 0 {
			return nil, fmt.Errorf("%w: bad property %q", ErrMalformed, truncate(f))
		}
		env[string(k)] = string(v)
	}
	return env, nil
}

// newEvent checks the required fields and builds an Event. The header of a
// kernel message repeats ACTION and DEVPATH; a mismatch means garbage.
func newEvent(action, devpath string, env map[string]string, src Source) (Event, error) {
	if _, ok := env[""]; ok { // go-udev accepts "=value"
		return Event{}, fmt.Errorf("%w: property with empty name", ErrMalformed)
	}
	if a, ok := env["ACTION"]; ok && a != action {
		return Event{}, fmt.Errorf("%w: header action %q, ACTION=%q", ErrMalformed, truncate([]byte(action)), truncate([]byte(a)))
	}
	if d, ok := env["DEVPATH"]; ok && d != devpath {
		return Event{}, fmt.Errorf("%w: header devpath %q, DEVPATH=%q", ErrMalformed, truncate([]byte(devpath)), truncate([]byte(d)))
	}
	e := Event{
		Action:    action,
		DevPath:   devpath,
		Subsystem: env["SUBSYSTEM"],
		Seqnum:    env["SEQNUM"],
		DevName:   strings.TrimPrefix(env["DEVNAME"], "/dev/"),
		Env:       env,
		Source:    src,
	}
	switch {
	case e.Action == "":
		return Event{}, fmt.Errorf("%w: no ACTION", ErrMalformed)
	case e.DevPath == "":
		return Event{}, fmt.Errorf("%w: no DEVPATH", ErrMalformed)
	case e.Subsystem == "":
		return Event{}, fmt.Errorf("%w: no SUBSYSTEM", ErrMalformed)
	}
	return e, nil
}

// truncate keeps error messages short when the input is huge garbage.
func truncate(b []byte) []byte {
	const n = 64
	if len(b) > n {
		return b[:n]
	}
	return b
}
