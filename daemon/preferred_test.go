package daemon

import (
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// The kubelet calls GetPreferredAllocation before every Allocate with more
// free IDs than it needs, when the plugin offers it. A plain resource's IDs
// all hand out the same node, so it does not offer it; a class resource's
// IDs are different devices, so it does. What the kubelet sees: the
// options in the RegisterRequest, and GetDevicePluginOptions' answer.
func TestPreferredAllocationOffered(t *testing.T) {
	rules := "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    count: 3\n  - match: ^ttyACM[0-9]+$\n    class: modems\n"
	h := newHarness(t, rules, nil)
	h.dev.Set("ttyUSB0", charDev)
	h.dev.Set("ttyACM0", charDev)
	h.dev.Set("ttyACM1", charDev)
	h.events.fire("add", "ttyUSB0")
	for res, want := range map[string]bool{"smarter-devices/ttyUSB0": false, "smarter-devices/modems": true} {
		h.waitFor(res, "registered", func(devs []*pluginapi.Device) bool { return len(devs) > 0 })
		reg, answered := h.kubelet.Request(res).GetOptions(), h.kubelet.PluginOptions(res)
		if reg.GetGetPreferredAllocationAvailable() != want || answered.GetGetPreferredAllocationAvailable() != want {
			t.Errorf("%s: GetPreferredAllocationAvailable registered %v, answered %v; want %v",
				res, reg.GetGetPreferredAllocationAvailable(), answered.GetGetPreferredAllocationAvailable(), want)
		}
	}
}

func TestPreferredAllocationPolicy(t *testing.T) {
	plain := settings{name: "smarter-devices/ttyUSB0", count: 2}
	class := settings{name: "smarter-devices/modems", class: true}
	one := []unit{{device: "ttyUSB0"}}
	numa := []unit{{device: "ttyUSB0", content: Content{NUMANode: 1, HasNUMA: true}}}
	for _, tc := range []struct {
		name string
		res  resource
		want bool
	}{
		{"plain", resource{plain, one}, false},
		{"plain on a NUMA node", resource{plain, numa}, true},
		{"class", resource{class, []unit{{key: "a"}, {key: "b"}}}, true},
		{"class with no member present", resource{class, []unit{{key: "a", absentSince: time.Unix(1, 0)}}}, true},
	} {
		if got := preferredAllocation(tc.res); got != tc.want {
			t.Errorf("%s: preferredAllocation = %v; want %v", tc.name, got, tc.want)
		}
	}
}
