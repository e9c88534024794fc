package daemon

import (
	"os"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Rules that match on subsystem and sysfs attributes, against the real /dev
// and /sys (no root needed): /dev/null is char 1:3 in subsystem "mem".
func TestIdentityRulesOnRealDevices(t *testing.T) {
	if _, err := os.Stat("/sys/dev/char/1:3"); err != nil {
		t.Skipf("skipping: no sysfs entry for /dev/null: %v", err)
	}
	rules := "version: v1\nrules:\n" +
		"  - match: ^null$\n    name: bit-bucket\n    subsystem: mem\n    attributes:\n      dev: \"1:3\"\n" +
		"  - match: ^zero$\n    subsystem: tty\n" + // wrong subsystem: never matches
		"  - match: ^full$\n    properties:\n      DEVNAME: full\n"
	h := newHarness(t, rules, func(o *Options) {
		o.DevFS = os.DirFS("/dev")
		o.SysFS = os.DirFS("/sys")
		o.RunFS = os.DirFS("/run")
	})
	h.waitFor("smarter-devices/bit-bucket", "null by subsystem and attribute", health(1, pluginapi.Healthy))
	h.waitFor("smarter-devices/full", "full by property", health(1, pluginapi.Healthy))
	if got := h.kubelet.Registrations("smarter-devices/zero"); got != 0 {
		t.Errorf("zero matched a rule for subsystem tty")
	}
	client, err := h.kubelet.Client("smarter-devices/bit-bucket")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Allocate(t.Context(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if specs := resp.ContainerResponses[0].Devices; len(specs) != 1 || specs[0].HostPath != "/dev/null" {
		t.Errorf("bit-bucket allocates %v, want /dev/null", specs)
	}
}
