package dra

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/smarter-project/smarter-device-manager/dra/internal/claimdata"
	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
)

// gpsRule makes each serial adapter a class member whose CDI device has
// udev's links, an environment variable, and nodes owned by 1000:1000.
const gpsRule = "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: gps\n    expose_links: true\n    env: {GPS_BAUD: \"9600\"}\n" +
	"    cdi: true\n    owner: {uid: 1000, gid: 1000, mode: \"0660\"}\n"

const gpsDevice = "gps-0403-6001-a1b2c3"

// allocated is a claim the scheduler allocated: request "gps" gets each
// device of this node's pool, with opaque configs of the driver's.
func allocated(uid string, devices []string, configs ...string) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "claim-" + uid, UID: types.UID(uid)},
		Status:     resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{}},
	}
	for _, d := range devices {
		c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results,
			resourceapi.DeviceRequestAllocationResult{Request: "gps", Driver: testDriver, Pool: testNode, Device: d})
	}
	for _, cfg := range configs {
		c.Status.Allocation.Devices.Config = append(c.Status.Allocation.Devices.Config, resourceapi.DeviceAllocationConfiguration{
			Source: resourceapi.AllocationConfigSourceClaim,
			DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
				Driver: testDriver, Parameters: runtime.RawExtension{Raw: []byte(cfg)}}},
		})
	}
	return c
}

// prepare asks the driver to prepare one claim, as the kubelet plugin
// helper does for NodePrepareResources.
func (h *harness) prepare(c *resourceapi.ResourceClaim) kubeletplugin.PrepareResult {
	h.t.Helper()
	res, err := h.drv.PrepareResourceClaims(context.Background(), []*resourceapi.ResourceClaim{c})
	if err != nil {
		h.t.Fatal(err)
	}
	return res[c.UID]
}

func (h *harness) unprepare(c *resourceapi.ResourceClaim) error {
	h.t.Helper()
	res, err := h.drv.UnprepareResourceClaims(context.Background(), []kubeletplugin.NamespacedObject{{UID: c.UID,
		NamespacedName: types.NamespacedName{Namespace: c.Namespace, Name: c.Name}}})
	if err != nil {
		h.t.Fatal(err)
	}
	return res[c.UID]
}

// spec reads a claim's CDI spec.
func (h *harness) spec(uid types.UID) (*cdispec.Spec, error) {
	raw, err := os.ReadFile(h.drv.SpecFile(uid))
	if err != nil {
		return nil, err
	}
	var s cdispec.Spec
	return &s, json.Unmarshal(raw, &s)
}

// plugged starts the daemon with the driver over a machine with the GPS
// adapter plugged, and waits for its device.
func pluggedGPS(t *testing.T, o harnessOpts) (*harness, *hwfixture.Plugged) {
	m := hwfixture.New(true)
	gps := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	h := newHarness(t, m, gpsRule, o)
	h.waitDevices("the GPS", func(d map[string]resourceapi.Device) bool { _, ok := d[gpsDevice]; return ok })
	return h, gps
}

// A prepared claim's CDI spec, named by its UID, holds the unit's node,
// udev's links to it, the rule's environment, and the owner the rule
// gives overridden where the claim's config says; the kubelet is told
// its CDI device. Asked again, the same answer; unprepared, the spec
// goes; unprepared again, no error.
func TestPrepareWritesClaimSpec(t *testing.T) {
	h, _ := pluggedGPS(t, harnessOpts{removeAfter: time.Hour})
	c := allocated("uid-1", []string{gpsDevice}, `{"owner": {"uid": 2000}}`)
	res := h.prepare(c)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	wantID := testDriver + "/claim=uid-1-" + gpsDevice
	if len(res.Devices) != 1 || res.Devices[0].DeviceName != gpsDevice || res.Devices[0].PoolName != testNode ||
		!slices.Equal(res.Devices[0].CDIDeviceIDs, []string{wantID}) || !slices.Equal(res.Devices[0].Requests, []string{"gps"}) {
		t.Fatalf("prepared %+v; want %s as %s", res.Devices, gpsDevice, wantID)
	}
	spec, err := h.spec("uid-1")
	if err != nil {
		t.Fatal(err)
	}
	if spec.Kind != testDriver+"/claim" || len(spec.Devices) != 1 || spec.Devices[0].Name != "uid-1-"+gpsDevice {
		t.Fatalf("spec %+v", spec)
	}
	e := spec.Devices[0].ContainerEdits
	var paths []string
	for _, n := range e.DeviceNodes {
		paths = append(paths, n.Path)
		if n.HostPath != "/dev/ttyUSB0" || n.UID == nil || *n.UID != 2000 || n.GID == nil || *n.GID != 1000 || n.FileMode == nil || *n.FileMode != 0o660 {
			t.Errorf("node %+v; want /dev/ttyUSB0 owned by 2000 (the claim's) : 1000 (the rule's), 0660", n)
		}
	}
	if !slices.Contains(paths, "/dev/ttyUSB0") || !slices.Contains(paths, "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0") {
		t.Errorf("nodes %v; want the node and its by-id link", paths)
	}
	if !slices.Equal(e.Env, []string{"GPS_BAUD=9600"}) {
		t.Errorf("env %v", e.Env)
	}

	before, _ := os.ReadFile(h.drv.SpecFile("uid-1"))
	if again := h.prepare(c); again.Err != nil || !slices.Equal(again.Devices[0].CDIDeviceIDs, res.Devices[0].CDIDeviceIDs) {
		t.Errorf("prepared again: %+v, want the same answer", again)
	}
	if after, _ := os.ReadFile(h.drv.SpecFile("uid-1")); string(after) != string(before) {
		t.Error("a second prepare rewrote the spec differently")
	}
	if err := h.unprepare(c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h.drv.SpecFile("uid-1")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("spec after unprepare: %v; want it gone", err)
	}
	if err := h.unprepare(c); err != nil {
		t.Errorf("unprepared twice: %v", err)
	}
	// Nothing above failed: the daemon's errors_total says so too.
	// (make mutate: a successful unprepare counted as an error.)
	if n := h.stats.Errors.Load(); n != 0 {
		t.Errorf("errors counted: %d; want 0", n)
	}
}

// What a claim cannot get fails its preparation, with no spec written:
// an unplugged device, one not in the pool, one held by another claim (count 1),
// a config the driver does not understand.
func TestPrepareRefuses(t *testing.T) {
	h, gps := pluggedGPS(t, harnessOpts{removeAfter: time.Hour})
	refused := func(c *resourceapi.ResourceClaim, want string) {
		t.Helper()
		if r := h.prepare(c); r.Err == nil || !strings.Contains(r.Err.Error(), want) {
			t.Errorf("claim %s: %v, want an error saying %q", c.UID, r.Err, want)
		}
		if _, err := os.Stat(h.drv.SpecFile(c.UID)); err == nil {
			t.Errorf("claim %s: a spec was written", c.UID)
		}
	}
	refused(allocated("unknown", []string{"gps-nothing"}), "no device gps-nothing")
	refused(allocated("badcfg", []string{gpsDevice}, `{"ownr": {"uid": 1}}`), `unknown field "ownr"`)
	refused(allocated("badmode", []string{gpsDevice}, `{"owner": {"mode": "777x"}}`), "owner.mode")
	if r := h.prepare(allocated("holder", []string{gpsDevice})); r.Err != nil {
		t.Fatal(r.Err)
	}
	refused(allocated("second", []string{gpsDevice}), "held by 1 other prepared claims")
	if err := h.unprepare(allocated("holder", nil)); err != nil {
		t.Fatal(err)
	}
	h.m.Unplug(gps)
	h.fire("remove", "ttyUSB0")
	h.waitDevices("tainted", func(d map[string]resourceapi.Device) bool { return len(d[gpsDevice].Taints) > 0 })
	if r := h.prepare(allocated("late", []string{gpsDevice})); r.Err == nil || !strings.Contains(r.Err.Error(), "unplugged") {
		t.Errorf("a claim for the unplugged GPS: %v, want an error saying it is unplugged", r.Err)
	}
}

// A device with count 2 is held by two claims at once, not three.
func TestPrepareShares(t *testing.T) {
	m := hwfixture.New(false)
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	h := newHarness(t, m, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    count: 2\n", harnessOpts{removeAfter: time.Hour})
	h.waitDevices("ttyusb0", func(d map[string]resourceapi.Device) bool { _, ok := d["ttyusb0"]; return ok })
	for i, uid := range []string{"a", "b", "c"} {
		r := h.prepare(allocated(uid, []string{"ttyusb0"}))
		if (r.Err == nil) != (i < 2) {
			t.Errorf("claim %d of a device with count 2: %v", i+1, r.Err)
		}
	}
}

// Prepared claims survive a restart of the daemon: the new process
// answers a repeated prepare as the old one did (though the device has
// gone meanwhile), and unprepares what the old one prepared. The pool's
// slice is taken over, not duplicated.
func TestPreparedClaimsSurviveRestart(t *testing.T) {
	h, gps := pluggedGPS(t, harnessOpts{removeAfter: time.Hour})
	c := allocated("uid-r", []string{gpsDevice})
	first := h.prepare(c)
	if first.Err != nil {
		t.Fatal(first.Err)
	}
	h.stop()
	h.m.Unplug(gps)

	h2 := newHarness(t, h.m, gpsRule, harnessOpts{removeAfter: time.Hour, client: h.client, dir: h.dir})
	h2.waitSlices("the pool, taken over", func(s []resourceapi.ResourceSlice) bool {
		return len(s) == 1 && len(devicesOf(s)) == 0 // the new process's pool: the GPS is not here
	})
	again := h2.prepare(c)
	if again.Err != nil || len(again.Devices) != 1 || !slices.Equal(again.Devices[0].CDIDeviceIDs, first.Devices[0].CDIDeviceIDs) {
		t.Errorf("prepared again after a restart: %+v (%v); want %+v", again.Devices, again.Err, first.Devices)
	}
	if err := h2.unprepare(c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h2.drv.SpecFile(c.UID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("spec after unprepare in the new process: %v; want it gone", err)
	}
	raw, err := os.ReadFile(filepath.Join(h.dir, "plugin", claimdata.File))
	if err != nil || strings.Contains(string(raw), "uid-r") {
		t.Errorf("checkpoint after unprepare: %s (%v); want no uid-r", raw, err)
	}
}

// A device whose rule requires a companion node that is missing
// (docs/dra.md: a GPU without nvidia-uvm) is published tainted
// <driver>/incomplete NoSchedule, refused at prepare, and reported
// unhealthy to the kubelet; once the companion is there, all three
// clear. NVIDIA's nodes come from mknod (hwfixture.NvidiaGPU).
func TestIncompleteDevice(t *testing.T) {
	m := hwfixture.New(true)
	m.Plug(hwfixture.NvidiaGPU("0000:3b:00.0", 0, 0))
	const rules = "version: v1\nrules:\n  - match: ^nvidia[0-9]+$\n    with: [nvidiactl, nvidia-uvm, \"nvidia-uvm-tools?\"]\n"
	h := newHarness(t, m, rules, harnessOpts{removeAfter: time.Hour})
	const gpu = "nvidia0"
	h.waitDevices("the GPU, whole", func(d map[string]resourceapi.Device) bool { dev, ok := d[gpu]; return ok && len(dev.Taints) == 0 })
	health := func() kubeletplugin.DeviceHealth {
		h.drv.mu.Lock()
		defer h.drv.mu.Unlock()
		for _, dh := range h.drv.healthReport(time.Now()).Devices {
			if dh.DeviceName == gpu {
				return dh
			}
		}
		t.Fatalf("no health for %s", gpu)
		return kubeletplugin.DeviceHealth{}
	}
	if hs := health(); hs.Health != kubeletplugin.HealthStatusHealthy {
		t.Errorf("whole: health %v (%s), want healthy", hs.Health, hs.Message)
	}

	uvm, ok := m.Dev.Snapshot()["nvidia-uvm"]
	if !ok {
		t.Fatal("the fixture has no /dev/nvidia-uvm")
	}
	m.Dev.Remove("nvidia-uvm")
	h.fire("remove", "nvidia-uvm")
	devs := h.waitDevices("tainted incomplete", func(d map[string]resourceapi.Device) bool { return len(d[gpu].Taints) > 0 })
	if tt := devs[gpu].Taints; len(tt) != 1 || tt[0].Key != testDriver+"/"+TaintIncomplete || tt[0].Effect != resourceapi.DeviceTaintEffectNoSchedule {
		t.Errorf("taints without nvidia-uvm %+v; want one %s/%s NoSchedule", tt, testDriver, TaintIncomplete)
	}
	if r := h.prepare(allocated("incomplete", []string{gpu})); r.Err == nil || !strings.Contains(r.Err.Error(), "misses a companion") {
		t.Errorf("a claim for the incomplete GPU: %v, want an error saying it misses a companion", r.Err)
	}
	if hs := health(); hs.Health != kubeletplugin.HealthStatusUnhealthy || !strings.Contains(hs.Message, "companion") {
		t.Errorf("incomplete: health %v (%q), want unhealthy, naming the companion", hs.Health, hs.Message)
	}

	m.Dev.Put("nvidia-uvm", uvm)
	h.fire("add", "nvidia-uvm")
	h.waitDevices("whole again", func(d map[string]resourceapi.Device) bool { return len(d[gpu].Taints) == 0 })
	if r := h.prepare(allocated("whole", []string{gpu})); r.Err != nil {
		t.Errorf("a claim for the GPU once whole: %v", r.Err)
	}
	if hs := health(); hs.Health != kubeletplugin.HealthStatusHealthy {
		t.Errorf("whole again: health %v (%s), want healthy", hs.Health, hs.Message)
	}
}

// One device given to one claim for two of its requests (a device with
// shares): each request gets a CDI device of its own, so that each can
// carry its request's owner. (make mutate: the test for "another request"
// could be inverted unnoticed.)
func TestPrepareOneDeviceForTwoRequests(t *testing.T) {
	m := hwfixture.New(false)
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	h := newHarness(t, m, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    count: 3\n", harnessOpts{removeAfter: time.Hour})
	h.waitDevices("ttyusb0", func(d map[string]resourceapi.Device) bool { _, ok := d["ttyusb0"]; return ok })
	c := allocated("two", nil)
	for _, req := range []string{"reader", "writer"} {
		c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results,
			resourceapi.DeviceRequestAllocationResult{Request: req, Driver: testDriver, Pool: testNode, Device: "ttyusb0"})
	}
	r := h.prepare(c)
	if r.Err != nil || len(r.Devices) != 2 {
		t.Fatalf("prepare: %+v, %v", r.Devices, r.Err)
	}
	ids := func(i int) string { return strings.Join(r.Devices[i].CDIDeviceIDs, ",") }
	if ids(0) == ids(1) {
		t.Errorf("requests reader and writer share CDI device %s; want one each", ids(0))
	}
}
