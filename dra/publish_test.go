package dra

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/equality"

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
	writes := func() int { return sliceWrites(h.client) }
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

// A node's pool is written only when what it shows changes (the fleet
// benchmark's finding, kept): with ten adapters published, uevents that
// change nothing (udev's "change", a re-sent "add") and a full re-read
// write nothing, and a restarted daemon takes its slice over as it is.
// Each check ends with a real change, published in order after what came
// before it: one write each, or the no-ops wrote too.
func TestPublishWritesOnlyChanges(t *testing.T) {
	m := hwfixture.New(true)
	const rules = "- devicematch: ^ttyUSB[0-9]*$\n  nummaxdevices: 1\n" // the old daemon's default rule for them
	var adapters []*hwfixture.Plugged
	for i := range 10 {
		adapters = append(adapters, m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, strconv.Itoa(i+1), fmt.Sprintf("FT%06d", i))))
	}
	h := newHarness(t, m, rules, harnessOpts{removeAfter: time.Hour})
	h.waitDevices("ten adapters", func(d map[string]resourceapi.Device) bool { return len(d) == 10 })
	client, dir := h.client, h.dir
	writes := func() int { return sliceWrites(client) }
	tainted := func(want int) func(map[string]resourceapi.Device) bool {
		return func(d map[string]resourceapi.Device) bool {
			n := 0
			for _, dev := range d {
				if len(dev.Taints) > 0 {
					n++
				}
			}
			return len(d) == 10 && n == want
		}
	}
	before := writes()
	for i := range 20 {
		n := h.loop.Rescans.Load()
		h.fire([]string{"change", "add"}[i%2], "ttyUSB"+strconv.Itoa(i%10))
		testutil.Eventually(t, 20*time.Second, "a rescan", func() bool { return h.loop.Rescans.Load() > n })
	}
	m.Unplug(adapters[9])
	h.fire("remove", "ttyUSB9")
	h.waitDevices("ttyUSB9 tainted", tainted(1))
	if n := writes() - before; n != 1 {
		t.Errorf("20 uevents that change nothing and one unplug: %d slice writes, want 1", n)
	}

	adapters[9] = m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "10", "FT000009"))
	h.fire("add", "ttyUSB9")
	h.waitDevices("ttyUSB9 back", tainted(0))
	before = writes()
	h.stop()
	h = newHarness(t, m, rules, harnessOpts{removeAfter: time.Hour, client: client, dir: dir})
	// A takeover that rewrote would do it now, on its own: give its
	// controller the time (it syncs at once) so the unplug below is not
	// folded into the same write.
	time.Sleep(2 * time.Second)
	m.Unplug(adapters[0])
	h.fire("remove", "ttyUSB0")
	h.waitDevices("ttyUSB0 tainted after the restart", tainted(1))
	if n := writes() - before; n != 1 {
		t.Errorf("a restart and one unplug: %d slice writes, want 1 (the restart rewrote the pool)", n)
	}
}

// A restarted daemon cannot read a device that is unplugged, but the
// previous process published it, tainted: the new one carries it over as
// it was (its taint and the time it went), writing nothing, until it
// comes back (then it is the daemon's again) or until --remove-after has
// passed since it went.
func TestPublishCarriesUnpluggedOverRestart(t *testing.T) {
	m := hwfixture.New(true)
	const gone = "usb-serial-0403-6001-a1b2c3"
	ft := hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3")
	a := m.Plug(ft)
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "2", "D4E5F6"))
	h := newHarness(t, m, serialClass, harnessOpts{removeAfter: time.Hour})
	h.waitDevices("two adapters", func(d map[string]resourceapi.Device) bool { return len(d) == 2 })
	m.Unplug(a)
	h.fire("remove", "ttyUSB0")
	before := h.waitSlices("one unplugged", func(s []resourceapi.ResourceSlice) bool {
		d := devicesOf(s)
		return len(d) == 2 && len(d[gone].Taints) == 1
	})
	client, dir := h.client, h.dir
	writes := func() int { return sliceWrites(client) }
	w := writes()

	h.stop()
	h = newHarness(t, m, serialClass, harnessOpts{removeAfter: time.Hour, client: client, dir: dir})
	time.Sleep(2 * time.Second) // a rewrite would come now
	if n := writes() - w; n != 0 {
		t.Errorf("the restart wrote the pool %d times; want none (nothing changed)", n)
	}
	after := h.slices()
	if len(after) != 1 || !equality.Semantic.DeepEqual(after[0].Spec.Devices, before[0].Spec.Devices) {
		t.Errorf("after the restart %s; want the pool as it was: %s", describe(after), describe(before))
	}
	// Back: the daemon's again, untainted, one write.
	a = m.Plug(ft)
	h.fire("add", "ttyUSB0")
	h.waitDevices("back, untainted", func(d map[string]resourceapi.Device) bool { return len(d) == 2 && len(d[gone].Taints) == 0 })

	// Gone again, and a restart whose --remove-after has nearly passed
	// since: carried only until it has.
	m.Unplug(a)
	h.fire("remove", "ttyUSB0")
	went := h.waitDevices("unplugged again", func(d map[string]resourceapi.Device) bool { return len(d[gone].Taints) == 1 })[gone].Taints[0].TimeAdded.Time
	h.stop()
	h = newHarness(t, m, serialClass, harnessOpts{removeAfter: time.Until(went) + 4*time.Second, client: client, dir: dir})
	if d := devicesOf(h.slices()); len(d) != 2 {
		t.Errorf("just after the restart: devices %v; want both, one carried", slices.Collect(maps.Keys(d)))
	}
	h.waitDevices("gone once --remove-after has passed since it went", func(d map[string]resourceapi.Device) bool {
		_, ok := d[gone]
		return len(d) == 1 && !ok
	})
	if left := time.Since(went); left < 3*time.Second {
		t.Errorf("dropped %v after it went; want --remove-after (4 s)", left)
	}
}

// Without --remove-after an unplugged device is kept for good, and a
// restarted daemon carries it over for good too, where it was in the pool:
// here after the adapter still plugged in, as its key sorts. (make mutate:
// a carried device's expiry taken from a zero --remove-after, or its
// resource and key read as empty, left every other test green.)
func TestPublishCarriesUnpluggedWithoutRemoveAfter(t *testing.T) {
	m := hwfixture.New(true)
	const gone = "usb-serial-0403-6001-d4e5f6"
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	b := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "2", "D4E5F6"))
	h := newHarness(t, m, serialClass, harnessOpts{})
	h.waitDevices("two adapters", func(d map[string]resourceapi.Device) bool { return len(d) == 2 })
	m.Unplug(b)
	h.fire("remove", "ttyUSB1")
	before := h.waitSlices("one unplugged", func(s []resourceapi.ResourceSlice) bool {
		d := devicesOf(s)
		return len(d) == 2 && len(d[gone].Taints) == 1
	})
	client, dir := h.client, h.dir
	h.stop()
	h = newHarness(t, m, serialClass, harnessOpts{client: client, dir: dir})
	time.Sleep(2 * time.Second) // a rewrite would come now
	after := h.slices()
	if len(after) != 1 || !equality.Semantic.DeepEqual(after[0].Spec.Devices, before[0].Spec.Devices) {
		t.Errorf("after the restart %s; want the pool as it was: %s", describe(after), describe(before))
	}
}
