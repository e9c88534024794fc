package daemon

import (
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Nodes that give control of the host are refused unless the rule says
// allow_dangerous; the warning names the rule and the node.
func TestDangerousNodesRefused(t *testing.T) {
	h := newHarness(t, "version: v1\nrules:\n  - match: ^mem$\n    allow_dangerous: true\n  - match: ^(kmsg|port|null)$\n", nil)
	for _, n := range []string{"mem", "kmsg", "port", "null"} {
		h.dev.Set(n, charDev)
	}
	h.events.fire("add", "null")
	h.waitFor("smarter-devices/mem", "allowed by allow_dangerous", health(1, pluginapi.Healthy))
	h.waitFor("smarter-devices/null", "harmless node served", health(1, pluginapi.Healthy))
	// The read that served mem and null saw kmsg and port too: the daemon
	// runs exactly those two resources.
	rep := h.report()
	if _, ok := rep.Resources["smarter-devices/kmsg"]; ok || len(rep.Resources) != 2 {
		t.Errorf("resources %v; want only mem and null", rep.Resources)
	}
	for _, res := range []string{"smarter-devices/kmsg", "smarter-devices/port"} {
		if h.kubelet.Registrations(res) != 0 {
			t.Errorf("%s was registered", res)
		}
	}
	// The warning is what tells the user why a node is missing: its
	// wording is part of the behaviour.
	log := h.log.String()
	for _, want := range []string{`"device":"kmsg"`, `"device":"port"`, "refused: it gives access to the kernel log", "rules.yaml:5", `allow_dangerous: true`} {
		if !strings.Contains(log, want) {
			t.Errorf("the refusal does not say %q", want)
		}
	}
}

func TestParseMountinfo(t *testing.T) {
	got := parseMountinfo(strings.NewReader(
		"22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
			"23 22 0:21 / /proc rw shared:2 - proc proc rw\n"))
	if !got["254:0"] || !got["0:21"] || got["254:1"] {
		t.Errorf("parseMountinfo = %v", got)
	}
}

func TestPluginDirIsDangerous(t *testing.T) {
	s := &safety{devRoot: "/host", pluginDir: "/host/kubelet/device-plugins"}
	for rel, want := range map[string]bool{
		"kubelet":                  true, // holds it
		"kubelet/device-plugins":   true,
		"kubelet/device-plugins/x": true,
		"kubelet-other":            false,
		"ttyUSB0":                  false,
	} {
		if got := s.hazard(rel, fs.ModeDir) != ""; got != want {
			t.Errorf("hazard(%q) = %v, want %v", rel, got, want)
		}
	}
}

// The block device holding this machine's root filesystem is refused.
func TestMountedBlockDeviceRefused(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	b, err := os.ReadFile("/sys/dev/block/" + id + "/uevent")
	if err != nil {
		t.Skipf("skipping: the root filesystem (%s) is not on a block device here (overlay, tmpfs): %v", id, err)
	}
	var name string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			name = v
		}
	}
	if _, err := os.Stat("/dev/" + name); name == "" || err != nil {
		t.Skipf("skipping: no /dev node for the root filesystem's device %s", id)
	}
	s := &safety{devRoot: "/dev"}
	why := s.hazard(name, fs.ModeDevice)
	if !strings.Contains(why, "mounted filesystem") {
		t.Errorf("hazard(/dev/%s), the root filesystem's device = %q; want a refusal", name, why)
	}
	t.Logf("/dev/%s: %s", name, why)
}
