package dra

import (
	"strconv"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"

	"github.com/smarter-project/smarter-device-manager/daemon"
	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

const serialClass = "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: usb-serial\n    evict_on_unplug: true\n"

// An FTDI adapter plugged, unplugged and replugged in another port, as
// the API server sees the node's pool: one device named from its serial,
// described by what sysfs and udev say; tainted NoExecute while away
// (the rule asks for eviction), with what it had; back untainted under
// the same name, on its new port.
func TestPublishFollowsHotplug(t *testing.T) {
	m := hwfixture.New(true)
	h := newHarness(t, m, serialClass, harnessOpts{removeAfter: time.Hour})
	const name = "usb-serial-0403-6001-a1b2c3"
	// Published at once: an empty pool says the driver runs.
	s := h.waitSlices("an empty pool", func(s []resourceapi.ResourceSlice) bool { return len(s) == 1 })
	if p := s[0].Spec; p.Pool.Name != testNode || p.NodeName == nil || *p.NodeName != testNode || len(p.Devices) != 0 {
		t.Errorf("the first slice %+v; want node %s's pool, empty", p, testNode)
	}

	adapter := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	h.fire("add", "ttyUSB0")
	devs := h.waitDevices("plugged", func(d map[string]resourceapi.Device) bool { return len(d) == 1 })
	d, ok := devs[name]
	if !ok {
		t.Fatalf("devices %v; want %s", devs, name)
	}
	for attr, want := range map[string]string{
		AttrResource: "smarter-devices/usb-serial", AttrKey: "0403_6001_A1B2C3", AttrPath: "/dev/ttyUSB0",
		AttrSubsystem: "tty", AttrBus: "usb", AttrVendor: "0403", AttrProduct: "6001", AttrSerial: "A1B2C3",
		AttrModel: "FT232R USB UART", AttrPort: "1-1", AttrDriver: "ftdi_sio",
	} {
		if got := str(d, attr); got != want {
			t.Errorf("attribute %s = %q, want %q", attr, got, want)
		}
	}
	if a := d.Attributes[AttrMajor]; a.IntValue == nil || *a.IntValue != 188 {
		t.Errorf("major %v, want 188", a)
	}
	if len(d.Taints) != 0 || d.AllowMultipleAllocations != nil {
		t.Errorf("plugged device: taints %v, multiple allocations %v; want none (count 1)", d.Taints, d.AllowMultipleAllocations)
	}

	m.Unplug(adapter)
	h.fire("remove", "ttyUSB0")
	devs = h.waitDevices("tainted when unplugged", func(d map[string]resourceapi.Device) bool { return len(d[name].Taints) > 0 })
	d = devs[name]
	if tt := d.Taints[0]; len(d.Taints) != 1 || tt.Key != testDriver+"/"+TaintUnplugged || tt.Effect != resourceapi.DeviceTaintEffectNoExecute || tt.TimeAdded == nil {
		t.Errorf("taints %+v; want one %s/unplugged NoExecute with its time", d.Taints, testDriver)
	}
	if str(d, AttrSerial) != "A1B2C3" || len(devs) != 1 {
		t.Errorf("unplugged: %v; want the one device, with the attributes it had", devs)
	}

	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "3", "A1B2C3"))
	h.fire("add", "ttyUSB0")
	devs = h.waitDevices("untainted when back", func(d map[string]resourceapi.Device) bool { return len(d) == 1 && len(d[name].Taints) == 0 })
	if str(devs[name], AttrPort) != "1-3" {
		t.Errorf("replugged into port 3: port %q", str(devs[name], AttrPort))
	}
}

// A device away longer than remove-after leaves the pool; the pool stays,
// empty. The rule does not ask for eviction: NoSchedule meanwhile.
func TestPublishRemovesAfter(t *testing.T) {
	m := hwfixture.New(false)
	adapter := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	h := newHarness(t, m, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n", harnessOpts{removeAfter: 300 * time.Millisecond})
	h.waitDevices("plugged", func(d map[string]resourceapi.Device) bool { return len(d["ttyusb0"].Attributes) > 0 })
	m.Unplug(adapter)
	h.fire("remove", "ttyUSB0")
	devs := h.waitDevices("tainted", func(d map[string]resourceapi.Device) bool { return len(d["ttyusb0"].Taints) > 0 })
	if e := devs["ttyusb0"].Taints[0].Effect; e != resourceapi.DeviceTaintEffectNoSchedule {
		t.Errorf("taint effect %s, want NoSchedule", e)
	}
	s := h.waitSlices("removed after remove-after", func(s []resourceapi.ResourceSlice) bool { return len(devicesOf(s)) == 0 })
	if len(s) != 1 {
		t.Errorf("%d slices after the last device left; want the pool's one, empty", len(s))
	}
}

// count: N lets N claims hold one device at once: it is one device with N
// shares, each claim taking one (consumable capacity).
func TestPublishCountAsShares(t *testing.T) {
	m := hwfixture.New(false)
	m.Plug(hwfixture.CM108(hwfixture.IntelXHCI, "2"))
	h := newHarness(t, m, "version: v1\nrules:\n  - match: ^snd$\n    count: 3\n  - match: ^hidraw[0-9]+$\n    count: 0\n", harnessOpts{removeAfter: time.Hour})
	devs := h.waitDevices("snd", func(d map[string]resourceapi.Device) bool { return len(d) > 0 })
	d, ok := devs["snd"]
	if !ok || len(devs) != 1 {
		t.Fatalf("devices %v; want snd alone (count 0 offers nothing)", devs)
	}
	c, ok := d.Capacity[CapacityShares]
	if d.AllowMultipleAllocations == nil || !*d.AllowMultipleAllocations || !ok || c.Value.Value() != 3 ||
		c.RequestPolicy == nil || c.RequestPolicy.Default == nil || c.RequestPolicy.Default.Value() != 1 {
		t.Errorf("snd: multiple allocations %v, capacity %+v; want 3 shares, one per claim by default", d.AllowMultipleAllocations, d.Capacity)
	}
	if str(d, AttrPath) != "/dev/snd" || str(d, AttrResource) != "smarter-devices/snd" {
		t.Errorf("snd attributes %v", d.Attributes)
	}
}

// A pool larger than one slice may hold is cut into slices of 64.
func TestRenderPoolSlices(t *testing.T) {
	m := hwfixture.New(false)
	for i := range 70 {
		m.Plug(hwfixture.CH340(hwfixture.IntelXHCI, "9."+strconv.Itoa(i+1)))
	}
	h := newHarness(t, m, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n", harnessOpts{removeAfter: time.Hour})
	s := h.waitSlices("70 devices", func(s []resourceapi.ResourceSlice) bool { return len(devicesOf(s)) == 70 })
	if len(s) != 2 || s[0].Spec.Pool.ResourceSliceCount != 2 {
		t.Errorf("%d slices; want 2 (64 devices each at most)", len(s))
	}
}

// Every device carries every attribute of the driver's domain, "" (or -1)
// where it has none: a CH340 has no serial, a directory no device number.
// A selector on a missing key is a CEL error, and the allocator fails the
// whole claim on it (e2e TestDRADocsClaims runs docs/dra.md's claims).
func TestEveryDeviceHasEveryAttribute(t *testing.T) {
	m := hwfixture.New(true)
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	m.Plug(hwfixture.CH340(hwfixture.IntelXHCI, "2"))
	m.Plug(hwfixture.CM108(hwfixture.IntelXHCI, "3"))
	h := newHarness(t, m, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n  - match: ^snd$\n", harnessOpts{removeAfter: time.Hour})
	devs := h.waitDevices("three devices", func(d map[string]resourceapi.Device) bool { return len(d) == 3 })
	strs := []string{AttrResource, AttrKey, AttrPath, AttrSubsystem, AttrBus, AttrVendor, AttrProduct, AttrSerial, AttrModel, AttrPort, AttrDriver}
	for name, d := range devs {
		for _, a := range strs {
			if v, ok := d.Attributes[resourceapi.QualifiedName(a)]; !ok || v.StringValue == nil {
				t.Errorf("%s: no string attribute %s (%v)", name, a, d.Attributes)
			}
		}
		for _, a := range []string{AttrMajor, AttrMinor} {
			if v, ok := d.Attributes[resourceapi.QualifiedName(a)]; !ok || v.IntValue == nil {
				t.Errorf("%s: no int attribute %s (%v)", name, a, d.Attributes)
			}
		}
	}
	if s := str(devs["ttyusb1"], AttrSerial); s != "" || str(devs["ttyusb0"], AttrSerial) != "A1B2C3" {
		t.Errorf("serials %q and %q; want A1B2C3 and \"\" (the CH340 has none)", str(devs["ttyusb0"], AttrSerial), s)
	}
	if v := devs["snd"].Attributes[AttrMajor]; v.IntValue == nil || *v.IntValue != -1 {
		t.Errorf("snd major %v; want -1, a directory", v)
	}
}

// An adapter that keeps coming and going costs the API server a bounded
// number of slice writes: the first changes are published at once, then
// the device is tainted flapping (NoExecute: the rule evicts on unplug)
// and its slice stays as it is whatever the adapter does; once quiet, the
// taint goes.
func TestPublishHoldsFlappingDevice(t *testing.T) {
	m := hwfixture.New(true)
	h := newHarness(t, m, serialClass, harnessOpts{removeAfter: time.Hour,
		flap: daemon.FlapDamping{HalfLife: 300 * time.Millisecond, Suppress: 3.5, MaxHold: 3 * time.Second}})
	const name = "usb-serial-0403-6001-a1b2c3"
	ft := hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3")
	p := m.Plug(ft)
	h.fire("add", "ttyUSB0")
	h.waitDevices("plugged", func(d map[string]resourceapi.Device) bool { return len(d) == 1 && len(d[name].Taints) == 0 })
	writes := func() int {
		n := 0
		for _, a := range h.client.Actions() {
			if a.GetResource().Resource == "resourceslices" && (a.GetVerb() == "create" || a.GetVerb() == "update") {
				n++
			}
		}
		return n
	}
	before := writes()
	change := func(action string) {
		t.Helper()
		n := h.loop.Rescans.Load()
		h.fire(action, "ttyUSB0")
		testutil.Eventually(t, 20*time.Second, "a rescan after "+action, func() bool { return h.loop.Rescans.Load() > n })
	}
	const flaps = 50
	for range flaps {
		m.Unplug(p)
		change("remove")
		p = m.Plug(ft)
		change("add")
	}
	devs := h.waitDevices("tainted flapping", func(d map[string]resourceapi.Device) bool { return len(d[name].Taints) > 0 })
	if tt := devs[name].Taints; len(tt) != 1 || tt[0].Key != testDriver+"/"+TaintFlapping || tt[0].Effect != resourceapi.DeviceTaintEffectNoExecute {
		t.Errorf("taints while it flaps %+v; want one %s/%s NoExecute", tt, testDriver, TaintFlapping)
	}
	// The writer batches, so fewer than the changes shown; never more
	// than the 4 the damping lets through.
	if n := writes() - before; n > 4 {
		t.Errorf("%d changes cost %d slice writes, want at most 4", 2*flaps, n)
	}
	h.waitDevices("untainted once quiet", func(d map[string]resourceapi.Device) bool { return len(d) == 1 && len(d[name].Taints) == 0 })
	t.Logf("%d changes in a flap: %d slice writes in all", 2*flaps, writes()-before)
}
