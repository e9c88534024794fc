package hotplug

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pilebones/go-udev/netlink"
)

// readFixture reads testdata/name. The libudev header holds host-endian
// offsets; the fixtures were captured on a little-endian machine.
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasPrefix(b, []byte(libudevPrefix)) && binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("libudev fixtures are little-endian; this host is not")
	}
	return b
}

// diffEvent returns "" if want equals got, else one line per difference in
// (-want +got) form.
func diffEvent(want, got Event) string {
	var b strings.Builder
	field := func(name string, w, g any) {
		if w != g {
			fmt.Fprintf(&b, "-%s: %#v\n+%s: %#v\n", name, w, name, g)
		}
	}
	field("Action", want.Action, got.Action)
	field("DevPath", want.DevPath, got.DevPath)
	field("Subsystem", want.Subsystem, got.Subsystem)
	field("Seqnum", want.Seqnum, got.Seqnum)
	field("DevName", want.DevName, got.DevName)
	field("Source", want.Source, got.Source)
	field("Lost", want.Lost, got.Lost)
	field("Connected", want.Connected, got.Connected)
	keys := make([]string, 0, len(want.Env)+len(got.Env))
	for k := range want.Env {
		keys = append(keys, k)
	}
	for k := range got.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		w, wok := want.Env[k]
		g, gok := got.Env[k]
		if wok && (!gok || w != g) {
			fmt.Fprintf(&b, "-Env[%s]: %q\n", k, w)
		}
		if gok && (!wok || w != g) {
			fmt.Fprintf(&b, "+Env[%s]: %q\n", k, g)
		}
	}
	return b.String()
}

func TestParseEventFixtures(t *testing.T) {
	tests := []struct {
		file string
		want Event
	}{
		// Captured on this project's VM: hot_add/hot_remove of zram1 and
		// `echo change > /sys/class/tty/ttyS0/uevent`, group 1.
		{
			file: "kernel-add-zram.bin",
			want: Event{
				Action: "add", DevPath: "/devices/virtual/block/zram1", Subsystem: "block", Seqnum: "826",
				DevName: "zram1", Source: SourceKernel,
				Env: map[string]string{
					"ACTION": "add", "DEVPATH": "/devices/virtual/block/zram1", "SUBSYSTEM": "block",
					"MAJOR": "253", "MINOR": "1", "DEVNAME": "zram1", "DEVTYPE": "disk", "DISKSEQ": "11", "SEQNUM": "826",
				},
			},
		},
		{
			file: "kernel-remove-zram.bin",
			want: Event{
				Action: "remove", DevPath: "/devices/virtual/block/zram1", Subsystem: "block", Seqnum: "829",
				DevName: "zram1", Source: SourceKernel,
				Env: map[string]string{
					"ACTION": "remove", "DEVPATH": "/devices/virtual/block/zram1", "SUBSYSTEM": "block",
					"MAJOR": "253", "MINOR": "1", "DEVNAME": "zram1", "DEVTYPE": "disk", "DISKSEQ": "11", "SEQNUM": "829",
				},
			},
		},
		{
			file: "kernel-add-bdi.bin",
			want: Event{
				Action: "add", DevPath: "/devices/virtual/bdi/253:1", Subsystem: "bdi", Seqnum: "825", Source: SourceKernel,
				Env: map[string]string{"ACTION": "add", "DEVPATH": "/devices/virtual/bdi/253:1", "SUBSYSTEM": "bdi", "SEQNUM": "825"},
			},
		},
		{
			file: "kernel-change-ttyS0.bin",
			want: Event{
				Action: "change", DevPath: "/devices/pnp0/00:00/00:00:0/00:00:0.0/tty/ttyS0", Subsystem: "tty", Seqnum: "827",
				DevName: "ttyS0", Source: SourceKernel,
				Env: map[string]string{
					"ACTION": "change", "DEVPATH": "/devices/pnp0/00:00/00:00:0/00:00:0.0/tty/ttyS0", "SUBSYSTEM": "tty",
					"SYNTH_UUID": "0", "MAJOR": "4", "MINOR": "64", "DEVNAME": "ttyS0", "SEQNUM": "827",
				},
			},
		},
		// Captured from systemd-udevd 252 (Debian 12), group 2, libudev header.
		{
			file: "udev-add-zram.bin",
			want: Event{
				Action: "add", DevPath: "/devices/virtual/block/zram1", Subsystem: "block", Seqnum: "832",
				DevName: "zram1", Source: SourceUdev,
				Env: map[string]string{
					"UDEV_DATABASE_VERSION": "1", "ACTION": "add", "DEVPATH": "/devices/virtual/block/zram1",
					"SUBSYSTEM": "block", "DEVNAME": "/dev/zram1", "DEVTYPE": "disk", "DISKSEQ": "12", "SEQNUM": "832",
					"MAJOR": "253", "MINOR": "1", "USEC_INITIALIZED": "852450150", "TAGS": ":systemd:", "CURRENT_TAGS": ":systemd:",
				},
			},
		},
		{
			file: "udev-remove-zram.bin",
			want: Event{
				Action: "remove", DevPath: "/devices/virtual/block/zram1", Subsystem: "block", Seqnum: "834",
				DevName: "zram1", Source: SourceUdev,
				Env: map[string]string{
					"UDEV_DATABASE_VERSION": "1", "ACTION": "remove", "DEVPATH": "/devices/virtual/block/zram1",
					"SUBSYSTEM": "block", "DEVNAME": "/dev/zram1", "DEVTYPE": "disk", "DISKSEQ": "12", "SEQNUM": "834",
					"MAJOR": "253", "MINOR": "1", "USEC_INITIALIZED": "852450150", "TAGS": ":systemd:", "CURRENT_TAGS": ":systemd:",
				},
			},
		},
		{
			file: "udev-add-bdi.bin",
			want: Event{
				Action: "add", DevPath: "/devices/virtual/bdi/253:1", Subsystem: "bdi", Seqnum: "831", Source: SourceUdev,
				Env: map[string]string{
					"UDEV_DATABASE_VERSION": "1", "ACTION": "add", "DEVPATH": "/devices/virtual/bdi/253:1",
					"SUBSYSTEM": "bdi", "SEQNUM": "831", "USEC_INITIALIZED": "852450567",
				},
			},
		},
		// Hand-made: valid input go-udev rejects.
		{
			file: "hand-kernel-value-equals.bin",
			want: Event{
				Action: "change", DevPath: "/devices/virtual/misc/foo", Subsystem: "misc", Seqnum: "9", DevName: "foo", Source: SourceKernel,
				Env: map[string]string{
					"ACTION": "change", "DEVPATH": "/devices/virtual/misc/foo", "SUBSYSTEM": "misc",
					"DEVNAME": "foo", "PARAM": "a=b=c", "SEQNUM": "9",
				},
			},
		},
		{
			file: "hand-kernel-unknown-action.bin",
			want: Event{
				Action: "offline2", DevPath: "/devices/system/cpu/cpu1", Subsystem: "cpu", Seqnum: "10", Source: SourceKernel,
				Env: map[string]string{"ACTION": "offline2", "DEVPATH": "/devices/system/cpu/cpu1", "SUBSYSTEM": "cpu", "SEQNUM": "10"},
			},
		},
		{
			// Device-tree platforms name nodes unit@address (soc@0).
			file: "hand-kernel-devpath-at.bin",
			want: Event{
				Action: "add", DevPath: "/devices/platform/soc@0/30890000.serial/tty/ttymxc1", Subsystem: "tty", Seqnum: "11",
				DevName: "ttymxc1", Source: SourceKernel,
				Env: map[string]string{
					"ACTION": "add", "DEVPATH": "/devices/platform/soc@0/30890000.serial/tty/ttymxc1", "SUBSYSTEM": "tty",
					"MAJOR": "207", "MINOR": "17", "DEVNAME": "ttymxc1", "SEQNUM": "11",
				},
			},
		},
		{
			// go-udev would silently drop the last, unterminated property.
			file: "hand-kernel-unterminated.bin",
			want: Event{
				Action: "add", DevPath: "/devices/virtual/misc/foo", Subsystem: "misc", DevName: "foo", Source: SourceKernel,
				Env: map[string]string{"ACTION": "add", "DEVPATH": "/devices/virtual/misc/foo", "SUBSYSTEM": "misc", "DEVNAME": "foo"},
			},
		},
		{
			file: "hand-udev-value-equals.bin",
			want: Event{
				Action: "add", DevPath: "/devices/virtual/misc/foo", Subsystem: "misc", Seqnum: "12", DevName: "foo", Source: SourceUdev,
				Env: map[string]string{
					"ACTION": "add", "DEVPATH": "/devices/virtual/misc/foo", "SUBSYSTEM": "misc",
					"DEVNAME": "/dev/foo", "ID_X": "k=v", "SEQNUM": "12",
				},
			},
		},
		{
			// Bytes after properties_len are not properties.
			file: "hand-udev-trailing.bin",
			want: Event{
				Action: "add", DevPath: "/devices/virtual/misc/foo", Subsystem: "misc", Seqnum: "13", DevName: "net/foo", Source: SourceUdev,
				Env: map[string]string{
					"ACTION": "add", "DEVPATH": "/devices/virtual/misc/foo", "SUBSYSTEM": "misc",
					"DEVNAME": "/dev/net/foo", "SEQNUM": "13",
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseEvent(readFixture(t, tt.file))
			if err != nil {
				t.Fatalf("ParseEvent: %v", err)
			}
			if d := diffEvent(tt.want, got); d != "" {
				t.Errorf("ParseEvent mismatch (-want +got):\n%s", d)
			}
		})
	}
}

// A message of exactly MaxMessageSize bytes is parsed; one byte more is
// refused (TestParseEventErrors' "huge").
func TestParseEventAtMaxMessageSize(t *testing.T) {
	head := []byte("add@/devices/virtual/misc/x\x00ACTION=add\x00DEVPATH=/devices/virtual/misc/x\x00SUBSYSTEM=misc\x00X=")
	raw := append(head, bytes.Repeat([]byte("a"), MaxMessageSize-len(head)-1)...)
	raw = append(raw, 0)
	if len(raw) != MaxMessageSize {
		t.Fatalf("built %d bytes", len(raw))
	}
	ev, err := ParseEvent(raw)
	if err != nil {
		t.Fatalf("ParseEvent of %d bytes: %v", len(raw), err)
	}
	if ev.Action != "add" || len(ev.Env["X"]) != MaxMessageSize-len(head)-1 {
		t.Errorf("ParseEvent = action %q, X of %d bytes", ev.Action, len(ev.Env["X"]))
	}
	if _, err := ParseEvent(append(raw, 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("ParseEvent of %d bytes: %v; want ErrMalformed", len(raw)+1, err)
	}
}

func TestParseEventErrors(t *testing.T) {
	files := []string{
		"hand-garbage.bin",
		"hand-kernel-no-nul.bin",
		"hand-kernel-no-subsystem.bin",
		"hand-kernel-mismatch.bin",
		"hand-kernel-bad-property.bin",
		"hand-udev-short-header.bin",
		"hand-udev-bad-magic.bin",
		"hand-udev-bad-offset.bin",
		"hand-udev-offset-in-header.bin",
		"hand-udev-no-action.bin",
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			ev, err := ParseEvent(readFixture(t, f))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseEvent = %+v, %v; want an error wrapping ErrMalformed", ev, err)
			}
		})
	}
	inline := map[string][]byte{
		"empty":          nil,
		"only NUL":       {0},
		"no devpath":     []byte("add@\x00SUBSYSTEM=misc\x00"),
		"no action":      []byte("@/devices/x\x00SUBSYSTEM=misc\x00"),
		"empty key":      []byte("add@/devices/x\x00SUBSYSTEM=misc\x00=v\x00"),
		"prefix only":    []byte(libudevPrefix),
		"huge":           append([]byte("add@/devices/x\x00SUBSYSTEM=misc\x00X="), bytes.Repeat([]byte("a"), MaxMessageSize)...),
		"udev zero body": append([]byte(libudevPrefix+"\xfe\xed\xca\xfe"), make([]byte, 28)...),
	}
	for name, raw := range inline {
		t.Run(name, func(t *testing.T) {
			ev, err := ParseEvent(raw)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseEvent = %+v, %v; want an error wrapping ErrMalformed", ev, err)
			}
		})
	}
}

// TestGoUdevWeakSpots documents why ParseEvent does not call go-udev
// directly on everything: it panics on a kernel message without a NUL and
// rejects a value containing '='. If a go-udev upgrade fixes these, the
// workarounds can go.
func TestGoUdevWeakSpots(t *testing.T) {
	t.Run("panics without NUL", func(t *testing.T) {
		raw := readFixture(t, "hand-kernel-no-nul.bin")
		panicked := func() (p bool) {
			defer func() { p = recover() != nil }()
			_, _ = netlink.ParseUEvent(raw)
			return false
		}()
		if !panicked {
			t.Log("go-udev no longer panics on a kernel message without NUL")
		}
		if _, err := ParseEvent(raw); err == nil {
			t.Error("ParseEvent accepted a message with no properties")
		}
	})
	t.Run("rejects '=' in value", func(t *testing.T) {
		raw := readFixture(t, "hand-kernel-value-equals.bin")
		if _, err := netlink.ParseUEvent(raw); err == nil {
			t.Log("go-udev now accepts a value containing '='")
		}
		ev, err := ParseEvent(raw)
		if err != nil || ev.Env["PARAM"] != "a=b=c" {
			t.Errorf("ParseEvent = %+v, %v; want PARAM=a=b=c", ev, err)
		}
	})
}

func TestEventRelevant(t *testing.T) {
	tests := []struct {
		ev   Event
		want bool
	}{
		{Event{Lost: true}, true},
		{Event{Lost: true, Connected: true}, true},
		{Event{Connected: true}, true},
		{Event{Action: "add", DevPath: "/devices/virtual/bdi/253:1"}, true},
		{Event{Action: "remove"}, true},
		{Event{Action: "move"}, true},
		{Event{Action: "change", DevName: "ttyS0"}, true},
		{Event{Action: "bind", DevName: "bus/usb/001/002"}, true},
		{Event{Action: "change", DevPath: "/devices/virtual/power_supply/BAT0"}, false},
		{Event{Action: "add", Subsystem: "bdi", DevPath: "/devices/virtual/bdi/253:1"}, false},
		{Event{Action: "remove", Subsystem: "bdi", DevPath: "/devices/virtual/bdi/253:1"}, false},
		{Event{Action: "bind"}, false},
		{Event{}, false},
	}
	for _, tt := range tests {
		if got := tt.ev.Relevant(); got != tt.want {
			t.Errorf("%+v.Relevant() = %v, want %v", tt.ev, got, tt.want)
		}
	}
}

// FuzzParseEvent feeds ParseEvent arbitrary messages, as a forger on the
// netlink socket could. An accepted event must be made of the input's own
// bytes and say the same whichever framing carried it: the same properties
// in the other format parse to the same event.
func FuzzParseEvent(f *testing.F) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".bin") {
			f.Add(readFixture(f, e.Name()))
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := ParseEvent(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		checkParsed(t, raw, ev)
		// The same properties in the other framing.
		props := maps.Clone(ev.Env)
		props["ACTION"], props["DEVPATH"] = ev.Action, ev.DevPath
		other := encodeUdev(props)
		if ev.Source == SourceUdev {
			if strings.Contains(ev.Action, "@") {
				return // a kernel header cannot carry it: "action@devpath"
			}
			other = encodeKernel(ev.Action, ev.DevPath, props)
		}
		ev2, err := ParseEvent(other)
		if err != nil {
			t.Fatalf("%v event %+v re-encoded as %q: %v", ev.Source, ev, other, err)
		}
		checkParsed(t, other, ev2)
		want := ev
		want.Env, want.Source = props, ev2.Source
		if d := diffEvent(want, ev2); d != "" {
			t.Fatalf("the other framing parses differently (-%v +%v):\n%s", ev.Source, ev2.Source, d)
		}
	})
}

// checkParsed checks what holds for every event ParseEvent accepts from raw.
func checkParsed(t *testing.T, raw []byte, ev Event) {
	t.Helper()
	if ev.Action == "" || ev.DevPath == "" || ev.Subsystem == "" {
		t.Fatalf("accepted event without required fields: %+v", ev)
	}
	if ev.Lost || ev.Connected {
		t.Fatalf("a message parsed as a notice: %+v", ev)
	}
	if want := map[bool]Source{true: SourceUdev, false: SourceKernel}[bytes.HasPrefix(raw, []byte(libudevPrefix))]; ev.Source != want {
		t.Fatalf("Source %v, want %v from the framing", ev.Source, want)
	}
	if ev.DevName != strings.TrimPrefix(ev.Env["DEVNAME"], "/dev/") || strings.HasPrefix(ev.DevName, "/dev/") {
		t.Fatalf("DevName %q from DEVNAME=%q", ev.DevName, ev.Env["DEVNAME"])
	}
	if ev.Env["SUBSYSTEM"] != ev.Subsystem || ev.Env["SEQNUM"] != ev.Seqnum {
		t.Fatalf("fields disagree with Env: %+v", ev)
	}
	for key, field := range map[string]string{"ACTION": ev.Action, "DEVPATH": ev.DevPath} {
		if v, ok := ev.Env[key]; (ok || ev.Source == SourceUdev) && v != field {
			t.Fatalf("%s=%q (present %v), field %q", key, v, ok, field)
		}
	}
	// Every property is a KEY=VALUE of the input, and the header's fields
	// come from it too.
	for k, v := range ev.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(v, "\x00") || !bytes.Contains(raw, []byte(k+"="+v)) {
			t.Fatalf("property %q=%q is not in the input", k, v)
		}
	}
	if !bytes.Contains(raw, []byte(ev.Action)) || !bytes.Contains(raw, []byte(ev.DevPath)) {
		t.Fatalf("action %q or devpath %q is not in the input", ev.Action, ev.DevPath)
	}
}

// encodeKernel frames props as the kernel does: "action@devpath\0" then
// KEY=VALUE\0 each, in key order.
func encodeKernel(action, devpath string, props map[string]string) []byte {
	raw := []byte(action + "@" + devpath + "\x00")
	for _, k := range slices.Sorted(maps.Keys(props)) {
		raw = append(append(raw, k+"="+props[k]...), 0)
	}
	return raw
}

// encodeUdev frames props as udevd does, behind a libudev header.
func encodeUdev(props map[string]string) []byte {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(props)) {
		kv = append(kv, k+"="+props[k])
	}
	return udevMsg(kv...)
}

func BenchmarkParseEvent(b *testing.B) {
	for _, name := range []string{"kernel-add-zram.bin", "udev-add-zram.bin", "hand-kernel-value-equals.bin"} {
		raw := readFixture(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := ParseEvent(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
