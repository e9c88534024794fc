package daemon

import (
	"maps"
	"os"
	"slices"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// Rules that match on subsystem and sysfs attributes, against the real /dev
// and /sys (no root needed): /dev/null is char 1:3 in subsystem "mem".
func TestIdentityRulesOnRealDevices(t *testing.T) {
	if _, err := os.Stat("/sys/dev/char/1:3"); err != nil {
		testutil.SkipEnv(t, "skipping: no sysfs entry for /dev/null: %v", err)
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
	resp := h.allocate("smarter-devices/bit-bucket", "0")
	if specs := resp.ContainerResponses[0].Devices; len(specs) != 1 || specs[0].HostPath != "/dev/null" {
		t.Errorf("bit-bucket allocates %v, want /dev/null", specs)
	}
}

// onMachine runs the daemon on a fake machine's /dev, /sys and /run.
func onMachine(m *hwfixture.Machine) func(*Options) {
	return func(o *Options) { o.DevFS, o.SysFS, o.RunFS = m.Dev, m.Sys, m.Run }
}

// specPaths are an allocation's "host→container" paths.
func specPaths(c *pluginapi.ContainerAllocateResponse) []string {
	var paths []string
	for _, s := range c.Devices {
		paths = append(paths, s.HostPath+"→"+s.ContainerPath)
	}
	return paths
}

// hostPaths are an allocation's host paths, sorted.
func hostPaths(c *pluginapi.ContainerAllocateResponse) []string {
	var paths []string
	for _, s := range c.Devices {
		paths = append(paths, s.HostPath)
	}
	slices.Sort(paths)
	return paths
}

// ids is a condition on a resource's device IDs and their health.
func ids(want map[string]string) func([]*pluginapi.Device) bool {
	return func(devs []*pluginapi.Device) bool {
		got := map[string]string{}
		for _, d := range devs {
			got[d.ID] = d.Health
		}
		return maps.Equal(got, want)
	}
}

// A serial adapter named by its serial keeps its resource across
// renumbering (ttyUSB0 → ttyUSB1), with udev's by-id link and the
// describing environment in the container, and no re-registration.
func TestRenumberedAdapterKeepsItsResource(t *testing.T) {
	m := hwfixture.New(true)
	rules := "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    name: gps-{ID_SERIAL_SHORT}\n    attributes: {idVendor: \"0403\"}\n" +
		"    expose_links: true\n    describe_env: true\n    env: {GPS_BAUD: \"9600\"}\n"
	h := newHarness(t, rules, onMachine(m))
	gps := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	h.events.fire("add", "ttyUSB0")
	const res = "smarter-devices/gps-A1B2C3"
	h.waitFor(res, "named by serial", health(1, pluginapi.Healthy))
	got := h.allocate(res, "0").ContainerResponses[0]
	// The links are the ones Debian's 60-serial.rules makes.
	want := []string{
		"/dev/ttyUSB0→/dev/ttyUSB0",
		"/dev/ttyUSB0→/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0",
		"/dev/ttyUSB0→/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0",
	}
	if paths := specPaths(got); !slices.Equal(paths, want) {
		t.Errorf("specs %v, want %v", paths, want)
	}
	for k, v := range map[string]string{
		"GPS_BAUD":                         "9600",
		"SMARTER_DEVICE_GPS_A1B2C3":        "/dev/ttyUSB0",
		"SMARTER_DEVICE_GPS_A1B2C3_STABLE": "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0",
		"SMARTER_DEVICE_GPS_A1B2C3_SERIAL": "A1B2C3",
	} {
		if got.Envs[k] != v {
			t.Errorf("env %s = %q, want %q (all: %v)", k, got.Envs[k], v, got.Envs)
		}
	}

	// Unplugged: the resource stays, unhealthy.
	m.Unplug(gps)
	h.events.fire("remove", "ttyUSB0")
	h.waitFor(res, "unhealthy while unplugged", health(1, pluginapi.Unhealthy))
	// A clone takes ttyUSB0; the GPS comes back in another port as ttyUSB1.
	m.Plug(hwfixture.CH340(hwfixture.IntelXHCI, "2"))
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "3", "A1B2C3"))
	h.events.fire("add", "ttyUSB1")
	h.waitFor(res, "healthy after renumbering", health(1, pluginapi.Healthy))
	if got := h.allocate(res, "0").ContainerResponses[0]; got.Devices[0].HostPath != "/dev/ttyUSB1" || got.Devices[0].ContainerPath != "/dev/ttyUSB1" {
		t.Errorf("after renumbering allocates %v", got.Devices[0])
	}
	if n := h.kubelet.Registrations(res); n != 1 {
		t.Errorf("registered %d times; a replug must not re-register", n)
	}
	// A different adapter does not inherit the name.
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "4", "ZZZ999"))
	h.events.fire("add", "ttyUSB2")
	h.waitFor("smarter-devices/gps-ZZZ999", "the other adapter, its own resource", health(1, pluginapi.Healthy))
}

// describe_env's serial comes from the USB device itself where udev's
// database is missing (a container without /run/udev).
func TestDescribeEnvSerialWithoutUdev(t *testing.T) {
	m := hwfixture.New(false)
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	h := newHarness(t, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    describe_env: true\n", onMachine(m))
	h.waitFor("smarter-devices/ttyUSB0", "served", health(1, pluginapi.Healthy))
	env := h.allocate("smarter-devices/ttyUSB0", "0").ContainerResponses[0].Envs
	if env["SMARTER_DEVICE_TTYUSB0_SERIAL"] != "A1B2C3" || env["SMARTER_DEVICE_TTYUSB0_STABLE"] != "" {
		t.Errorf("env %v; want the serial from sysfs and no stable link (udev makes those)", env)
	}
}

// container_path moves the node in the container.
func TestContainerPath(t *testing.T) {
	rules := "version: v1\nrules:\n  - match: ^null$\n    container_path: /dev/bitbucket\n    describe_env: true\n"
	h := newHarness(t, rules, func(o *Options) { o.DevFS = os.DirFS("/dev") })
	h.waitFor("smarter-devices/null", "served", health(1, pluginapi.Healthy))
	resp := h.allocate("smarter-devices/null", "0")
	c := resp.ContainerResponses[0]
	if len(c.Devices) != 1 || c.Devices[0].HostPath != "/dev/null" || c.Devices[0].ContainerPath != "/dev/bitbucket" {
		t.Errorf("specs %v", c.Devices)
	}
	if c.Envs["SMARTER_DEVICE_NULL"] != "/dev/bitbucket" || c.Envs["SMARTER_DEVICE_NULL_GID"] == "" {
		t.Errorf("env %v; want the container path and the node's group", c.Envs)
	}
}

// A class resource: one resource for every USB serial adapter, one ID per
// adapter derived from its serial. An unplugged adapter's ID turns
// unhealthy while the others stay; replugged under another tty number it
// is healthy again under the same ID; a new adapter gets a new ID.
func TestClassResource(t *testing.T) {
	m := hwfixture.New(true)
	rules := "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: usb-serial\n    attributes: {idVendor: \"0403\"}\n"
	h := newHarness(t, rules, onMachine(m))
	adapterA := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "2", "ZZZ999"))
	h.events.fire("add", "ttyUSB1")
	const res = "smarter-devices/usb-serial"
	const a, z = "0403_6001_A1B2C3", "0403_6001_ZZZ999"
	h.waitFor(res, "both adapters", ids(map[string]string{a: pluginapi.Healthy, z: pluginapi.Healthy}))
	if got := hostPaths(h.allocate(res, a).ContainerResponses[0]); !slices.Equal(got, []string{"/dev/ttyUSB0"}) {
		t.Errorf("ID %s allocates %v, want only its own /dev/ttyUSB0", a, got)
	}
	if got := hostPaths(h.allocate(res, z).ContainerResponses[0]); !slices.Equal(got, []string{"/dev/ttyUSB1"}) {
		t.Errorf("ID %s allocates %v, want /dev/ttyUSB1", z, got)
	}

	m.Unplug(adapterA)
	h.events.fire("remove", "ttyUSB0")
	h.waitFor(res, "A unplugged", ids(map[string]string{a: pluginapi.Unhealthy, z: pluginapi.Healthy}))
	m.Plug(hwfixture.CH340(hwfixture.IntelXHCI, "3"))            // a clone, not in the class, takes ttyUSB0
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "4", "A1B2C3")) // A comes back as ttyUSB2
	h.events.fire("add", "ttyUSB2")
	h.waitFor(res, "A back under its ID", ids(map[string]string{a: pluginapi.Healthy, z: pluginapi.Healthy}))
	if got := hostPaths(h.allocate(res, a).ContainerResponses[0]); !slices.Equal(got, []string{"/dev/ttyUSB2"}) {
		t.Errorf("after renumbering ID %s allocates %v, want /dev/ttyUSB2", a, got)
	}
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "5", "NEW111"))
	h.events.fire("add", "ttyUSB3")
	h.waitFor(res, "a new adapter, a new ID", ids(map[string]string{a: pluginapi.Healthy, z: pluginapi.Healthy, "0403_6001_NEW111": pluginapi.Healthy}))
	if n := h.kubelet.Registrations(res); n != 1 {
		t.Errorf("class resource registered %d times, want 1", n)
	}
}

// A class member that stays away loses its IDs after RemoveAfter; the
// resource stays for the others, and goes when none is left.
func TestClassMemberRemoveAfter(t *testing.T) {
	m := hwfixture.New(true)
	h := newHarness(t, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: usb-serial\n", func(o *Options) {
		onMachine(m)(o)
		o.RemoveAfter = 200 * time.Millisecond
	})
	adapterA := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
	adapterZ := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "2", "ZZZ999"))
	h.events.fire("add", "ttyUSB1")
	const res = "smarter-devices/usb-serial"
	h.waitFor(res, "both", health(2, pluginapi.Healthy))
	m.Unplug(adapterA)
	h.events.fire("remove", "ttyUSB0")
	h.waitFor(res, "A's ID gone after remove-after", ids(map[string]string{"0403_6001_ZZZ999": pluginapi.Healthy}))
	m.Unplug(adapterZ)
	h.events.fire("remove", "ttyUSB1")
	h.waitStreamEnd(res)
}

// A device below a PCI function with a NUMA node is advertised with it.
func TestNUMATopology(t *testing.T) {
	m := hwfixture.New(true)
	h := newHarness(t, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: usb-serial\n", onMachine(m))
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI.OnNUMANode(1), "1", "A1B2C3"))
	h.events.fire("add", "ttyUSB0")
	h.waitFor("smarter-devices/usb-serial", "advertised on NUMA node 1", func(devs []*pluginapi.Device) bool {
		return len(devs) == 1 && devs[0].GetTopology() != nil && len(devs[0].GetTopology().GetNodes()) == 1 &&
			devs[0].GetTopology().GetNodes()[0].GetID() == 1
	})
}

// A GPU node with its shared control nodes as one unit: companions and
// mounts come with every allocation; a required companion missing makes
// the device unhealthy, an optional one is left out.
func TestCompanionsAndMounts(t *testing.T) {
	rules := "version: v1\nrules:\n  - match: ^nvidia[0-9]+$\n    with: [nvidiactl, nvidia-uvm, \"nvidia-uvm-tools?\"]\n" +
		"    mounts: [\"/usr/lib/nvidia:/usr/local/nvidia/lib:ro\"]\n"
	h := newHarness(t, rules, nil)
	h.dev.Set("nvidia0", charDev)
	h.dev.Set("nvidiactl", charDev)
	h.events.fire("add", "nvidia0")
	const res = "smarter-devices/nvidia0"
	h.waitFor(res, "unhealthy without nvidia-uvm", health(1, pluginapi.Unhealthy))
	h.dev.Set("nvidia-uvm", charDev)
	h.events.fire("add", "nvidia-uvm")
	h.waitFor(res, "healthy with its companions", health(1, pluginapi.Healthy))
	resp := h.allocate(res, "0")
	c := resp.ContainerResponses[0]
	var paths []string
	for _, s := range c.Devices {
		paths = append(paths, s.ContainerPath)
	}
	if want := []string{"/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"}; !slices.Equal(paths, want) {
		t.Errorf("devices %v, want %v (the optional nvidia-uvm-tools is absent)", paths, want)
	}
	if len(c.Mounts) != 1 || c.Mounts[0].HostPath != "/usr/lib/nvidia" || c.Mounts[0].ContainerPath != "/usr/local/nvidia/lib" || !c.Mounts[0].ReadOnly {
		t.Errorf("mounts %v", c.Mounts)
	}
}

// A USB camera's nodes are one allocatable unit of a class: one ID per
// camera (a camera without a serial number told apart by its port), and a
// pod given it gets both its video nodes and its media node.
func TestCameraNodesAreOneUnit(t *testing.T) {
	m := hwfixture.New(true)
	h := newHarness(t, "version: v1\nrules:\n  - match: ^(video|media)[0-9]+$\n    class: camera\n", onMachine(m))
	m.Plug(hwfixture.C270(hwfixture.IntelXHCI, "1", "5C4F2E10"))
	m.Plug(hwfixture.C270(hwfixture.IntelXHCI, "2", "")) // no serial number
	h.events.fire("add", "video3")
	const res = "smarter-devices/camera"
	const withSerial, byPort = "046d_0825_5C4F2E10", "usb-0000_00_14.0-2"
	h.waitFor(res, "two cameras, one ID each", ids(map[string]string{withSerial: pluginapi.Healthy, byPort: pluginapi.Healthy}))
	if got := hostPaths(h.allocate(res, withSerial).ContainerResponses[0]); !slices.Equal(got, []string{"/dev/media0", "/dev/video0", "/dev/video1"}) {
		t.Errorf("camera %s allocates %v, want all of its nodes", withSerial, got)
	}
	if got := hostPaths(h.allocate(res, byPort).ContainerResponses[0]); !slices.Equal(got, []string{"/dev/media1", "/dev/video2", "/dev/video3"}) {
		t.Errorf("camera %s allocates %v, want all of its nodes", byPort, got)
	}
}

// A sound card is one unit of a class however udev tagged its nodes:
// Debian's udev gives ID_SERIAL and ID_PATH to a card's control node only
// (60-persistent-alsa.rules: KERNEL!="controlC[0-9]*", GOTO end), so a
// webcam's microphone has a control node with the camera's serial and a
// PCM node with no identity properties at all. Grouped by sysfs, a pod
// given a card gets its control and PCM nodes, and no other card's.
func TestALSACardIsOneUnit(t *testing.T) {
	m := hwfixture.Machines["pc-av"](true) // HD Audio on PCI, a C270 webcam, a CM108 sound card
	h := newHarness(t, "version: v1\nrules:\n  - match: ^snd/(controlC|pcmC)[0-9]+\n    class: sound-card\n", onMachine(m))
	h.events.fire("add", "snd/controlC1")
	const res = "smarter-devices/sound-card"
	cards := map[string][]string{
		"pci-0000_00_1f.3":   {"/dev/snd/controlC0", "/dev/snd/pcmC0D0c", "/dev/snd/pcmC0D0p"},
		"046d_0825_5C4F2E10": {"/dev/snd/controlC1", "/dev/snd/pcmC1D0c"},
		"usb-0000_00_14.0-2": {"/dev/snd/controlC2", "/dev/snd/pcmC2D0c", "/dev/snd/pcmC2D0p"},
	}
	want := map[string]string{}
	for id := range cards {
		want[id] = pluginapi.Healthy
	}
	h.waitFor(res, "three cards, one ID each", ids(want))
	for id, nodes := range cards {
		if got := hostPaths(h.allocate(res, id).ContainerResponses[0]); !slices.Equal(got, nodes) {
			t.Errorf("card %s allocates %v, want %v", id, got, nodes)
		}
	}
}

// The README's cookbook rule for USB sound cards: selected by a sysfs
// attribute of the USB device above them, which every node of a card has,
// not by a udev property, which only its control node has.
func TestCookbookUSBAudio(t *testing.T) {
	m := hwfixture.Machines["pc-av"](true)
	rules := "version: v1\nrules:\n  - match: ^snd/(controlC|pcmC)[0-9]+\n    class: usb-audio\n    attributes: {idVendor: \"[0-9a-f]{4}\"}\n"
	h := newHarness(t, rules, onMachine(m))
	const res = "smarter-devices/usb-audio"
	h.waitFor(res, "the two USB cards, not the PCI one", ids(map[string]string{"046d_0825_5C4F2E10": pluginapi.Healthy, "usb-0000_00_14.0-2": pluginapi.Healthy}))
	if got := hostPaths(h.allocate(res, "046d_0825_5C4F2E10").ContainerResponses[0]); !slices.Equal(got, []string{"/dev/snd/controlC1", "/dev/snd/pcmC1D0c"}) {
		t.Errorf("the webcam's microphone allocates %v", got)
	}
}

// A member's key comes from sysfs alone: a node where udevd starts late, or
// a container without /run/udev, advertises the same IDs, so the kubelet
// sees no device vanish and come back under another name.
func TestMemberKeysIgnoreUdev(t *testing.T) {
	m := hwfixture.Machines["pc-serial"](false) // udevd not running yet
	stats := new(Stats)
	h := newHarness(t, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: usb-serial\n", func(o *Options) {
		onMachine(m)(o)
		o.Stats = stats
	})
	const res = "smarter-devices/usb-serial"
	want := ids(map[string]string{
		"0403_6001_A1B2C3":                           pluginapi.Healthy,
		"10c4_ea60_d4f0c5b1e3a2ec11b5d1c2a3b4c5d6e7": pluginapi.Healthy,
		"usb-0000_00_14.0-3":                         pluginapi.Healthy, // the two CH340 clones, by port
		"usb-0000_00_14.0-4.2":                       pluginapi.Healthy,
	})
	h.waitFor(res, "four adapters without udev", want)
	rescan := func(what string) {
		t.Helper()
		before := stats.Rescans.Load()
		h.events.fire("change", "ttyUSB0")
		testutil.Eventually(t, 20*time.Second, "a rescan after "+what, func() bool { return stats.Rescans.Load() > before })
		if got := h.kubelet.Devices(res); !want(got) {
			t.Errorf("after %s: devices %v", what, got)
		}
	}
	m.StartUdev()
	rescan("udevd started")
	m.StopUdev()
	rescan("udev's database went away")
	if n := h.kubelet.Registrations(res); n != 1 {
		t.Errorf("registered %d times, want 1", n)
	}
}

// Two adapters that report the same serial number (cheap CP2102 boards all
// say "0001") are two devices, told apart by their ports while both are
// there.
func TestSameSerialTwoDevices(t *testing.T) {
	m := hwfixture.New(true)
	m.Plug(hwfixture.CP2102N(hwfixture.IntelXHCI, "1", "0001"))
	m.Plug(hwfixture.CP2102N(hwfixture.IntelXHCI, "2", "0001"))
	h := newHarness(t, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: usb-serial\n", onMachine(m))
	const res = "smarter-devices/usb-serial"
	h.waitFor(res, "two devices", ids(map[string]string{"usb-0000_00_14.0-1": pluginapi.Healthy, "usb-0000_00_14.0-2": pluginapi.Healthy}))
	if got := hostPaths(h.allocate(res, "usb-0000_00_14.0-2").ContainerResponses[0]); !slices.Equal(got, []string{"/dev/ttyUSB1"}) {
		t.Errorf("the second adapter allocates %v, want only /dev/ttyUSB1", got)
	}
}

// A Raspberry Pi's platform devices as classes: each SPI chip select is a
// device of its own, the VideoCore codec's four nodes are one device and
// its ISP's four another.
func TestPiPlatformUnits(t *testing.T) {
	m := hwfixture.Machines["pi4"](true)
	rules := "version: v1\nrules:\n  - match: ^spidev[0-9.]+$\n    class: spi\n  - match: ^video1[0-9]$\n    class: videocore\n"
	h := newHarness(t, rules, onMachine(m))
	h.waitFor("smarter-devices/spi", "two chip selects", ids(map[string]string{"spi-spi0.0": pluginapi.Healthy, "spi-spi0.1": pluginapi.Healthy}))
	h.waitFor("smarter-devices/videocore", "codec and ISP", ids(map[string]string{"platform-bcm2835-codec": pluginapi.Healthy, "platform-bcm2835-isp": pluginapi.Healthy}))
	if got := hostPaths(h.allocate("smarter-devices/videocore", "platform-bcm2835-codec").ContainerResponses[0]); !slices.Equal(got, []string{"/dev/video10", "/dev/video11", "/dev/video12", "/dev/video18"}) {
		t.Errorf("the codec allocates %v", got)
	}
	if got := hostPaths(h.allocate("smarter-devices/spi", "spi-spi0.1").ContainerResponses[0]); !slices.Equal(got, []string{"/dev/spidev0.1"}) {
		t.Errorf("chip select 1 allocates %v", got)
	}
}
