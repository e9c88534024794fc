package daemon

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
)

// fakeOutput is an Output that records every Update in order.
type fakeOutput struct {
	updates    chan outputUpdate
	registered atomic.Bool
	runErr     error
}

type outputUpdate struct {
	res     []Resource
	changes []Change
}

func newFakeOutput() *fakeOutput { return &fakeOutput{updates: make(chan outputUpdate, 100)} }

func (f *fakeOutput) Run(ctx context.Context) error {
	if f.runErr != nil {
		return f.runErr
	}
	<-ctx.Done()
	return nil
}

func (f *fakeOutput) Update(res []Resource, changes []Change) {
	select {
	case f.updates <- outputUpdate{res, changes}:
	default:
		panic("fakeOutput: 100 updates not read") // a test that stopped reading
	}
}

func (f *fakeOutput) Registered() bool { return f.registered.Load() }

// next waits for the next Update.
func (f *fakeOutput) next(t *testing.T, what string) outputUpdate {
	t.Helper()
	select {
	case u := <-f.updates:
		return u
	case <-time.After(20 * time.Second):
		t.Fatalf("no update: %s", what)
	}
	return outputUpdate{}
}

func withOutput(out Output, m *hwfixture.Machine, removeAfter time.Duration) func(*Options) {
	return func(o *Options) {
		o.DevFS, o.SysFS, o.RunFS = m.Dev, m.Sys, m.Run
		o.Output, o.RemoveAfter = out, removeAfter
	}
}

// The FT232R plugged, unplugged and replugged in another port, as an
// Output sees it: one unit under its member key, described by sysfs and
// udev; absent with what it had until it is back; the same key back with
// its new port. No plugin server starts.
func TestOutputFollowsHotplug(t *testing.T) {
	m := hwfixture.New(true)
	out := newFakeOutput()
	rules := "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: usb-serial\n    count: 2\n    evict_on_unplug: true\n"
	h := newHarness(t, rules, withOutput(out, m, time.Hour))
	h.settle() // the first read is done: each event below makes one
	// The first read reaches the output with nothing in it: "none", not
	// "not read yet".
	if u := out.next(t, "the first read"); len(u.res) != 0 || len(u.changes) != 0 {
		t.Fatalf("the first read, no device plugged: %+v", u)
	}

	adapter := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	h.events.fire("add", "ttyUSB0")
	u := out.next(t, "plugged")
	if len(u.res) != 1 || len(u.res[0].Units) != 1 {
		t.Fatalf("plugged: %+v", u.res)
	}
	r := u.res[0]
	if r.Name != "smarter-devices/usb-serial" || !r.Class || r.Count != 2 || !r.EvictOnUnplug {
		t.Errorf("resource %+v", r)
	}
	unit := r.Units[0]
	want := Identity{Path: "ttyUSB0", Subsystem: "tty", Major: 188, Minor: 0, HasDevNum: true, Bus: "usb", BusAddress: "1-1",
		Vendor: "0403", Product: "6001", Serial: "A1B2C3", Model: "FT232R USB UART", Port: "1-1", Driver: "ftdi_sio"}
	if unit.Key != "0403_6001_A1B2C3" || unit.Identity != want || !unit.Healthy || !unit.AbsentSince.IsZero() {
		t.Errorf("unit %+v\nwant key 0403_6001_A1B2C3, identity %+v, present and healthy", unit, want)
	}
	if len(unit.Content.Nodes) != 1 || unit.Content.Nodes[0].HostPath != "/dev/ttyUSB0" {
		t.Errorf("content %+v", unit.Content)
	}
	if len(u.changes) != 1 || u.changes[0] != (Change{Resource: r.Name, Key: unit.Key, Device: "ttyUSB0", Kind: UnitAdded}) {
		t.Errorf("changes %+v", u.changes)
	}

	m.Unplug(adapter)
	h.events.fire("remove", "ttyUSB0")
	u = out.next(t, "unplugged")
	if len(u.res) != 1 || len(u.res[0].Units) != 1 {
		t.Fatalf("unplugged: %+v", u.res)
	}
	if gone := u.res[0].Units[0]; gone.AbsentSince.IsZero() || gone.Healthy || gone.Identity != want {
		t.Errorf("unplugged unit %+v; want absent, unhealthy, with the identity it had", gone)
	}
	if len(u.changes) != 1 || u.changes[0].Kind != UnitGone {
		t.Errorf("changes %+v", u.changes)
	}

	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "3", "A1B2C3"))
	h.events.fire("add", "ttyUSB0")
	u = out.next(t, "replugged")
	back := u.res[0].Units[0]
	if back.Key != unit.Key || !back.Healthy || !back.AbsentSince.IsZero() || back.Identity.Port != "1-3" {
		t.Errorf("replugged unit %+v; want the same key, present, on port 1-3", back)
	}
	if len(u.changes) != 1 || u.changes[0].Kind != UnitBack {
		t.Errorf("changes %+v", u.changes)
	}
	if len(sockets(t, h.dir)) != 0 {
		t.Errorf("plugin sockets %v: with an Output no plugin server starts", sockets(t, h.dir))
	}
}

// A unit absent longer than remove-after leaves, and the resource with
// it: the Output is handed a state without it.
func TestOutputRemovesAfter(t *testing.T) {
	m := hwfixture.New(false)
	adapter := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	out := newFakeOutput()
	h := newHarness(t, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n", withOutput(out, m, 10*time.Millisecond))
	if u := out.next(t, "plugged"); len(u.res) != 1 || u.res[0].Units[0].Identity.Serial != "A1B2C3" {
		t.Fatalf("plugged: %+v", u.res)
	}
	m.Unplug(adapter)
	h.events.fire("remove", "ttyUSB0")
	if u := out.next(t, "unplugged"); len(u.res) != 1 || u.res[0].Units[0].Present() {
		t.Fatalf("unplugged: %+v", u.res)
	}
	u := out.next(t, "removed after remove-after")
	if len(u.res) != 0 || len(u.changes) != 1 || u.changes[0].Kind != UnitRemoved {
		t.Errorf("after remove-after: resources %+v, changes %+v; want none, and the unit removed", u.res, u.changes)
	}
}

// The readiness report of an Output: each resource with its units as
// devices and the healthy ones, registered while the output is.
func TestOutputReport(t *testing.T) {
	m := hwfixture.New(false)
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	out := newFakeOutput()
	h := newHarness(t, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n", withOutput(out, m, time.Hour))
	out.next(t, "plugged")
	rep := h.report()
	if st := rep.Resources["smarter-devices/ttyUSB0"]; !rep.WaitingForKubelet || st.Registered || st.Devices != 1 || st.Healthy != 1 {
		t.Errorf("before registration: %+v", rep)
	}
	out.registered.Store(true)
	if rep = h.report(); rep.WaitingForKubelet || !rep.Resources["smarter-devices/ttyUSB0"].Registered {
		t.Errorf("registered: %+v", rep)
	}
}

// An Output that cannot serve stops the daemon, which returns its error.
func TestOutputErrorStopsDaemon(t *testing.T) {
	m := hwfixture.New(false)
	out := newFakeOutput()
	out.runErr = errors.New("no plugin directory")
	opts := Options{Config: parseRules(t, "r.yaml", "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n"), Resync: time.Hour}
	withOutput(out, m, 0)(&opts)
	done := make(chan error, 1)
	go func() { done <- Run(t.Context(), opts) }()
	select {
	case err := <-done:
		if !errors.Is(err, out.runErr) {
			t.Errorf("Run = %v, want the output's error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run still runs after its Output failed")
	}
}

// One adapter swapped for another between two reads, under the same node
// name: what a container gets is the same, what the unit is is not, and
// the Output hears of it.
func TestOutputSeesSwappedDevice(t *testing.T) {
	m := hwfixture.New(true)
	a := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	out := newFakeOutput()
	h := newHarness(t, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n", withOutput(out, m, time.Hour))
	if u := out.next(t, "plugged"); u.res[0].Units[0].Identity.Serial != "A1B2C3" {
		t.Fatalf("plugged: %+v", u.res)
	}
	m.Unplug(a)
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "ZZZ999")) // ttyUSB0 again
	h.events.fire("add", "ttyUSB0")
	if u := out.next(t, "swapped"); len(u.res) != 1 || u.res[0].Units[0].Identity.Serial != "ZZZ999" {
		t.Errorf("swapped: %+v; want ttyUSB0 with serial ZZZ999", u.res)
	}
}
