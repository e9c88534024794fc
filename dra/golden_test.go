package dra

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"

	"github.com/smarter-project/smarter-device-manager/dra/internal/claimdata"
	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// goldenRules has a rule of every shape whose devices a pool publishes: a
// name template from udev's identity, a class keyed by serial, a plain
// path-named rule, shares (count above 1), a directory, and a GPU with
// its companions.
const goldenRules = `version: v1
rules:
  - match: ^ttyUSB[0-9]+$
    name: gps-{ID_SERIAL_SHORT}
    attributes: {idVendor: "0403", serial: A1B2C3}
  - match: ^ttyUSB[0-9]+$
    class: usb-serial
    attributes: {idVendor: "10c4"}
  - match: ^ttyUSB[0-9]+$
  - match: ^video[0-9]+$
    count: 4
  - match: ^snd$
    count: 2
  - match: ^nvidia[0-9]+$
    with: [nvidiactl, nvidia-uvm, "nvidia-uvm-tools?"]
`

// The names and attributes of the devices a node's pool publishes are
// an API contract: claims in running pods name devices, users' selectors
// read the attributes, and both must hold across upgrades. The pool of a
// machine with the catalog's hardware under a rule of every shape, one
// adapter unplugged, must equal dra/testdata/pool.golden.json.
func TestPoolGolden(t *testing.T) {
	m, plugged := hwfixture.Catalog()
	gone := plugged[1] // ttyUSB1: a CP2102N, a class member, unplugged below
	h := newHarness(t, m, goldenRules, harnessOpts{removeAfter: time.Hour})
	h.waitDevices("the pool", func(d map[string]resourceapi.Device) bool { return len(d) > 0 })
	m.Unplug(gone)
	h.fire("remove", "ttyUSB1")
	slices := h.waitSlices("one unplugged", func(s []resourceapi.ResourceSlice) bool {
		for _, d := range devicesOf(s) {
			if len(d.Taints) > 0 {
				return true
			}
		}
		return false
	})
	var devices []resourceapi.Device
	for _, s := range slices {
		for _, d := range s.Spec.Devices {
			for i := range d.Taints {
				d.Taints[i].TimeAdded = nil // when it went: not part of the contract
			}
			devices = append(devices, d)
		}
	}
	got, err := json.MarshalIndent(devices, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "testdata/pool.golden.json", append(got, '\n'))
}

// What the kubelet and the container runtime are told of a prepared
// claim is a contract too: the CDI spec's file name (named by the claim's
// UID), its kind and device names, the CDI device IDs the kubelet hands
// the runtime, the container edits, and the checkpoint of prepared claims
// a later daemon reads. dra/testdata/cdi.golden.json.
func TestPreparedClaimGolden(t *testing.T) {
	h, _ := pluggedGPS(t, harnessOpts{removeAfter: time.Hour})
	const uid = "0b3c5e2a-7f41-4d7e-9a55-2c1f0e8d6b90"
	res := h.prepare(allocated(uid, []string{gpsDevice}, `{"owner": {"uid": 2000}}`))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	raw, err := os.ReadFile(h.drv.SpecFile(uid))
	if err != nil {
		t.Fatal(err)
	}
	var spec, checkpoint any
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	// The prepared claims' checkpoint: a restarted (or upgraded) daemon
	// reads what the one before it wrote.
	raw, err = os.ReadFile(filepath.Join(h.dir, "plugin", claimdata.File))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &checkpoint); err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(map[string]any{
		"specFile":   filepath.Base(h.drv.SpecFile(uid)),
		"devices":    res.Devices,
		"spec":       spec,
		"checkpoint": checkpoint,
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "testdata/cdi.golden.json", append(got, '\n'))
}
