package daemon

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
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

// A block device that holds a mounted filesystem, itself or through a
// partition, or that a stacked device holds, is refused; its idle
// siblings are not.
func TestBlockDevicesInUseRefused(t *testing.T) {
	m := hwfixture.DiskVM()
	s := &safety{devRoot: "/dev", devFS: m.Dev, sysFS: m.Sys, procFS: m.Proc}
	for node, want := range map[string]string{
		"vda":  "it holds a mounted filesystem", // through vda1
		"vda1": "it holds a mounted filesystem",
		"vda2": "",
		"vdb":  "", // dm-0 holds its partition, not the disk
		"vdb1": "it is in use by dm-0",
		"dm-0": "it holds a mounted filesystem",
		"vdc":  "",
	} {
		if got := s.hazard(node, fs.ModeDevice|0o660); got != want {
			t.Errorf("hazard(%s) = %q, want %q", node, got, want)
		}
	}
}

// A verdict stands for the resync period, then the device is looked at
// again: a disk mounted meanwhile is refused from the first read after.
func TestBlockVerdictRenewedAfterResync(t *testing.T) {
	m := hwfixture.New(false)
	vdc := m.Plug(hwfixture.VirtioDisk{Addr: "0000:00:06.0", Virtio: 4, Index: 2})
	verdicts := map[string]verdict{}
	start := time.Now()
	read := func(at time.Time) string {
		s := &safety{devRoot: "/dev", devFS: m.Dev, sysFS: m.Sys, procFS: m.Proc, verdicts: verdicts, ttl: time.Minute, now: at}
		return s.hazard("vdc", fs.ModeDevice|0o660)
	}
	if why := read(start); why != "" {
		t.Fatalf("an unused disk refused: %q", why)
	}
	m.Mount(vdc.Node("vdc"), "/mnt", "ext4")
	if why := read(start.Add(30 * time.Second)); why != "" {
		t.Errorf("within the resync period the verdict changed: %q", why)
	}
	if why := read(start.Add(time.Minute)); why != "it holds a mounted filesystem" {
		t.Errorf("after the resync period a mounted disk gave %q", why)
	}
}

// The daemon refuses the disks in use on the device root and sysfs it was
// given (--sys-root), with a warning naming the node and why, and serves
// the others.
func TestDaemonRefusesDisksInUse(t *testing.T) {
	m := hwfixture.DiskVM()
	h := newHarness(t, "version: v1\nrules:\n  - match: ^(vd[a-z][0-9]*|dm-[0-9]+)$\n", func(o *Options) {
		o.DevFS, o.SysFS, o.ProcFS = m.Dev, m.Sys, m.Proc
	})
	h.events.fire("add", "vdc")
	h.waitFor("smarter-devices/vdc", "an unused disk served", health(1, pluginapi.Healthy))
	rep := h.report()
	got := slices.Sorted(maps.Keys(rep.Resources))
	if want := []string{"smarter-devices/vda2", "smarter-devices/vdb", "smarter-devices/vdc"}; !slices.Equal(got, want) {
		t.Errorf("resources %q, want %q", got, want)
	}
	log := h.log.String()
	for _, want := range []string{`"device":"vda1"`, `"device":"dm-0"`, "refused: it holds a mounted filesystem", `"device":"vdb1"`, "refused: it is in use by dm-0"} {
		if !strings.Contains(log, want) {
			t.Errorf("the refusals do not say %q", want)
		}
	}
}

// The block device holding this machine's root filesystem is refused,
// read from the real /dev, /sys and /proc.
func TestMountedBlockDeviceRefused(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	b, err := os.ReadFile("/sys/dev/block/" + id + "/uevent")
	if err != nil {
		testutil.SkipEnv(t, "skipping: the root filesystem (%s) is not on a block device here (overlay, tmpfs): %v", id, err)
	}
	var name string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			name = v
		}
	}
	if _, err := os.Stat("/dev/" + name); name == "" || err != nil {
		testutil.SkipEnv(t, "skipping: no /dev node for the root filesystem's device %s", id)
	}
	s := &safety{devRoot: "/dev", devFS: os.DirFS("/dev"), sysFS: os.DirFS("/sys"), procFS: os.DirFS("/proc")}
	why := s.hazard(name, fs.ModeDevice)
	if !strings.Contains(why, "mounted filesystem") {
		t.Errorf("hazard(/dev/%s), the root filesystem's device = %q; want a refusal", name, why)
	}
	t.Logf("/dev/%s: %s", name, why)
}
