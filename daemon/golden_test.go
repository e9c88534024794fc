package daemon

import (
	"encoding/json"
	"maps"
	"os"
	"slices"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
	"github.com/smarter-project/smarter-device-manager/internal/natural"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// The extended-resource names the daemon registers, the IDs it
// advertises and the Allocate answer for each resource are what pods'
// requests, the kubelet's checkpoint and containers depend on across
// upgrades: under the old daemon's default rules and under a rule of
// every shape of the v1 format, on the same machine, they must equal
// daemon/testdata/deviceplugin.golden.json.
func TestDevicePluginGolden(t *testing.T) {
	shapes := `version: v1
rules:
  - match: ^ttyUSB[0-9]+$
    name: gps-{ID_SERIAL_SHORT}
    attributes: {idVendor: "0403", serial: A1B2C3}
    container_path: /dev/gps0
    expose_links: true
    describe_env: true
    env: {GPS_BAUD: "9600"}
  - match: ^ttyUSB[0-9]+$
    class: usb-serial
    attributes: {idVendor: "10c4"}
  - match: ^ttyUSB[0-9]+$
  - match: ^video[0-9]+$
    count: 4
  - match: ^snd$
    count: 2
    cdi: true
  - match: ^nvidia[0-9]+$
    with: [nvidiactl, nvidia-uvm, "nvidia-uvm-tools?"]
`
	type served struct {
		Resource string
		Devices  []*pluginapi.Device
		Allocate *pluginapi.ContainerAllocateResponse // for the first ID
	}
	// The embedded default: the old daemon's default file.
	legacy, err := os.ReadFile("../conf/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]served{}
	for name, rules := range map[string]string{"default": string(legacy), "shapes": shapes} {
		h := newHarnessFile(t, "rules.yaml", rules, onMachine(catalog()))
		for _, res := range slices.Sorted(maps.Keys(h.report().Resources)) {
			h.waitFor(res, "its IDs", func(d []*pluginapi.Device) bool { return len(d) > 0 })
			devs := h.kubelet.Devices(res)
			slices.SortFunc(devs, func(a, b *pluginapi.Device) int { return natural.Compare(a.ID, b.ID) })
			out[name] = append(out[name], served{Resource: res, Devices: devs, Allocate: h.allocate(res, devs[0].ID).ContainerResponses[0]})
		}
		h.stop()
	}
	got, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "testdata/deviceplugin.golden.json", append(got, '\n'))
}

func catalog() *hwfixture.Machine {
	m, _ := hwfixture.Catalog()
	return m
}
