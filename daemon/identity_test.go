package daemon

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/sys/unix"
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
	resp := h.allocate("smarter-devices/bit-bucket", "0")
	if specs := resp.ContainerResponses[0].Devices; len(specs) != 1 || specs[0].HostPath != "/dev/null" {
		t.Errorf("bit-bucket allocates %v, want /dev/null", specs)
	}
}

// usbSerial adds to the fake trees a USB serial adapter: /dev/ttyUSBn
// (188:n), its sysfs device below a USB device with the given serial, and
// udev's database entry with a by-id link.
func usbSerial(h *harness, sys, run *devFS, n int, serial string) {
	name := fmt.Sprintf("ttyUSB%d", n)
	usb := fmt.Sprintf("devices/pci0000:00/0000:00:14.0/usb1/1-%d", n+1)
	dev := usb + fmt.Sprintf("/1-%d:1.0/%s/tty/%s", n+1, name, name)
	// sysfs and udev first: a daemon that sees the node must find them.
	sys.put(fmt.Sprintf("dev/char/188:%d", n), &fstest.MapFile{Mode: fs.ModeSymlink | 0o777, Data: []byte("../../" + dev)})
	sys.put(dev+"/uevent", &fstest.MapFile{Data: []byte(fmt.Sprintf("MAJOR=188\nMINOR=%d\nDEVNAME=%s\n", n, name))})
	sys.put(dev+"/subsystem", &fstest.MapFile{Mode: fs.ModeSymlink | 0o777, Data: []byte("../../../../../../../../class/tty")})
	sys.put(usb+"/idVendor", &fstest.MapFile{Data: []byte("0403\n")})
	sys.put(usb+"/serial", &fstest.MapFile{Data: []byte(serial + "\n")})
	run.put(fmt.Sprintf("udev/data/c188:%d", n), &fstest.MapFile{Data: []byte(
		"S:serial/by-id/usb-FTDI_FT232R_" + serial + "-if00-port0\nS:serial/by-path/pci-0000:00:14.0-usb-0:" + fmt.Sprint(n+1) + ":1.0-port0\nE:ID_SERIAL_SHORT=" + serial + "\nE:ID_SERIAL=FTDI_FT232R_" + serial + "\n")})
	h.dev.put(name, &fstest.MapFile{Mode: charDev, Sys: &syscall.Stat_t{Rdev: unix.Mkdev(188, uint32(n))}})
}

// A serial adapter named by its serial keeps its resource across
// renumbering (ttyUSB0 → ttyUSB1), with udev's by-id link and the
// describing environment in the container, and no re-registration.
func TestRenumberedAdapterKeepsItsResource(t *testing.T) {
	sys, run := &devFS{m: fstest.MapFS{}}, &devFS{m: fstest.MapFS{}}
	rules := "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    name: gps-{ID_SERIAL_SHORT}\n    attributes: {idVendor: \"0403\"}\n" +
		"    expose_links: true\n    describe_env: true\n    env: {GPS_BAUD: \"9600\"}\n"
	var h *harness
	h = newHarness(t, rules, func(o *Options) { o.SysFS, o.RunFS = sys, run })
	// The fake sysfs is filled before the first event; the daemon reads it
	// only on a rescan.
	usbSerial(h, sys, run, 0, "A1B2C3")
	h.events.fire("add", "ttyUSB0")
	const res = "smarter-devices/gps-A1B2C3"
	h.waitFor(res, "named by serial", health(1, pluginapi.Healthy))
	allocate := func() *pluginapi.ContainerAllocateResponse {
		t.Helper()
		client, err := h.kubelet.Client(res)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Allocate(t.Context(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0"}}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.ContainerResponses[0]
	}
	got := allocate()
	var paths []string
	for _, s := range got.Devices {
		paths = append(paths, s.HostPath+"→"+s.ContainerPath)
	}
	want := []string{
		"/dev/ttyUSB0→/dev/ttyUSB0",
		"/dev/ttyUSB0→/dev/serial/by-id/usb-FTDI_FT232R_A1B2C3-if00-port0",
		"/dev/ttyUSB0→/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0",
	}
	if !slices.Equal(paths, want) {
		t.Errorf("specs %v, want %v", paths, want)
	}
	for k, v := range map[string]string{
		"GPS_BAUD":                         "9600",
		"SMARTER_DEVICE_GPS_A1B2C3":        "/dev/ttyUSB0",
		"SMARTER_DEVICE_GPS_A1B2C3_STABLE": "/dev/serial/by-id/usb-FTDI_FT232R_A1B2C3-if00-port0",
		"SMARTER_DEVICE_GPS_A1B2C3_SERIAL": "A1B2C3",
	} {
		if got.Envs[k] != v {
			t.Errorf("env %s = %q, want %q (all: %v)", k, got.Envs[k], v, got.Envs)
		}
	}

	// Unplugged: the resource stays, unhealthy.
	h.dev.remove("ttyUSB0")
	h.events.fire("remove", "ttyUSB0")
	h.waitFor(res, "unhealthy while unplugged", health(1, pluginapi.Unhealthy))
	// Replugged as ttyUSB1: healthy again under the same name.
	usbSerial(h, sys, run, 1, "A1B2C3")
	h.events.fire("add", "ttyUSB1")
	h.waitFor(res, "healthy after renumbering", health(1, pluginapi.Healthy))
	if got := allocate(); got.Devices[0].HostPath != "/dev/ttyUSB1" || got.Devices[0].ContainerPath != "/dev/ttyUSB1" {
		t.Errorf("after renumbering allocates %v", got.Devices[0])
	}
	if n := h.kubelet.Registrations(res); n != 1 {
		t.Errorf("registered %d times; a replug must not re-register", n)
	}
	// A different adapter does not inherit the name.
	usbSerial(h, sys, run, 2, "ZZZ999")
	h.events.fire("add", "ttyUSB2")
	h.waitFor("smarter-devices/gps-ZZZ999", "the other adapter, its own resource", health(1, pluginapi.Healthy))
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
	sys, run := &devFS{m: fstest.MapFS{}}, &devFS{m: fstest.MapFS{}}
	rules := "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: usb-serial\n    attributes: {idVendor: \"0403\"}\n"
	h := newHarness(t, rules, func(o *Options) { o.SysFS, o.RunFS = sys, run })
	usbSerial(h, sys, run, 0, "A1B2C3")
	usbSerial(h, sys, run, 1, "ZZZ999")
	h.events.fire("add", "ttyUSB1")
	const res = "smarter-devices/usb-serial"
	ids := func(want map[string]string) func([]*pluginapi.Device) bool {
		return func(devs []*pluginapi.Device) bool {
			got := map[string]string{}
			for _, d := range devs {
				got[d.ID] = d.Health
			}
			return maps.Equal(got, want)
		}
	}
	const a, z = "FTDI_FT232R_A1B2C3", "FTDI_FT232R_ZZZ999"
	h.waitFor(res, "both adapters", ids(map[string]string{a: pluginapi.Healthy, z: pluginapi.Healthy}))
	allocate := func(id string) []string {
		t.Helper()
		client, err := h.kubelet.Client(res)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Allocate(t.Context(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{id}}}})
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, s := range resp.ContainerResponses[0].Devices {
			paths = append(paths, s.HostPath)
		}
		return paths
	}
	if got := allocate(a); !slices.Equal(got, []string{"/dev/ttyUSB0"}) {
		t.Errorf("ID %s allocates %v, want only its own /dev/ttyUSB0", a, got)
	}
	if got := allocate(z); !slices.Equal(got, []string{"/dev/ttyUSB1"}) {
		t.Errorf("ID %s allocates %v, want /dev/ttyUSB1", z, got)
	}

	h.dev.remove("ttyUSB0")
	h.events.fire("remove", "ttyUSB0")
	h.waitFor(res, "A unplugged", ids(map[string]string{a: pluginapi.Unhealthy, z: pluginapi.Healthy}))
	usbSerial(h, sys, run, 2, "A1B2C3") // A comes back as ttyUSB2
	h.events.fire("add", "ttyUSB2")
	h.waitFor(res, "A back under its ID", ids(map[string]string{a: pluginapi.Healthy, z: pluginapi.Healthy}))
	if got := allocate(a); !slices.Equal(got, []string{"/dev/ttyUSB2"}) {
		t.Errorf("after renumbering ID %s allocates %v, want /dev/ttyUSB2", a, got)
	}
	usbSerial(h, sys, run, 3, "NEW111")
	h.events.fire("add", "ttyUSB3")
	h.waitFor(res, "a new adapter, a new ID", ids(map[string]string{a: pluginapi.Healthy, z: pluginapi.Healthy, "FTDI_FT232R_NEW111": pluginapi.Healthy}))
	if n := h.kubelet.Registrations(res); n != 1 {
		t.Errorf("class resource registered %d times, want 1", n)
	}
}

// A class member that stays away loses its IDs after RemoveAfter; the
// resource stays for the others, and goes when none is left.
func TestClassMemberRemoveAfter(t *testing.T) {
	sys, run := &devFS{m: fstest.MapFS{}}, &devFS{m: fstest.MapFS{}}
	rules := "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: usb-serial\n"
	h := newHarness(t, rules, func(o *Options) {
		o.SysFS, o.RunFS = sys, run
		o.RemoveAfter = 200 * time.Millisecond
	})
	usbSerial(h, sys, run, 0, "A1B2C3")
	usbSerial(h, sys, run, 1, "ZZZ999")
	h.events.fire("add", "ttyUSB1")
	const res = "smarter-devices/usb-serial"
	h.waitFor(res, "both", health(2, pluginapi.Healthy))
	h.dev.remove("ttyUSB0")
	h.events.fire("remove", "ttyUSB0")
	h.waitFor(res, "A's ID gone after remove-after", func(devs []*pluginapi.Device) bool {
		return len(devs) == 1 && devs[0].ID == "FTDI_FT232R_ZZZ999" && devs[0].Health == pluginapi.Healthy
	})
	h.dev.remove("ttyUSB1")
	h.events.fire("remove", "ttyUSB1")
	h.waitStreamEnd(res)
}

// A device below a PCI function with a NUMA node is advertised with it.
func TestNUMATopology(t *testing.T) {
	sys, run := &devFS{m: fstest.MapFS{}}, &devFS{m: fstest.MapFS{}}
	h := newHarness(t, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: usb-serial\n", func(o *Options) { o.SysFS, o.RunFS = sys, run })
	sys.put("devices/pci0000:00/0000:00:14.0/numa_node", &fstest.MapFile{Data: []byte("1\n")})
	usbSerial(h, sys, run, 0, "A1B2C3")
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
	h.dev.set("nvidia0", charDev)
	h.dev.set("nvidiactl", charDev)
	h.events.fire("add", "nvidia0")
	const res = "smarter-devices/nvidia0"
	h.waitFor(res, "unhealthy without nvidia-uvm", health(1, pluginapi.Unhealthy))
	h.dev.set("nvidia-uvm", charDev)
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

// camera adds a USB camera's two V4L2 nodes (video<2n>, video<2n+1>, 81:x)
// below one USB interface, as the kernel makes them, with udev's ID_PATH.
func camera(h *harness, sys, run *devFS, n int) {
	usb := fmt.Sprintf("devices/pci0000:00/0000:00:14.0/usb1/1-%d/1-%d:1.0", n+1, n+1)
	for _, minor := range []int{2 * n, 2*n + 1} {
		name := fmt.Sprintf("video%d", minor)
		dev := usb + "/video4linux/" + name
		sys.put(fmt.Sprintf("dev/char/81:%d", minor), &fstest.MapFile{Mode: fs.ModeSymlink | 0o777, Data: []byte("../../" + dev)})
		sys.put(dev+"/uevent", &fstest.MapFile{Data: []byte(fmt.Sprintf("MAJOR=81\nMINOR=%d\nDEVNAME=%s\n", minor, name))})
		run.put(fmt.Sprintf("udev/data/c81:%d", minor), &fstest.MapFile{Data: []byte(fmt.Sprintf("E:ID_PATH=pci-0000:00:14.0-usb-0:%d:1.0\nE:ID_SERIAL=Cam_Model\n", n+1))})
		h.dev.put(name, &fstest.MapFile{Mode: charDev, Sys: &syscall.Stat_t{Rdev: unix.Mkdev(81, uint32(minor))}})
	}
}

// A USB camera's nodes are one allocatable unit of a class: one ID per
// camera (two cameras of a model without serial numbers told apart by the
// port), and a pod given it gets both nodes.
func TestCameraNodesAreOneUnit(t *testing.T) {
	sys, run := &devFS{m: fstest.MapFS{}}, &devFS{m: fstest.MapFS{}}
	h := newHarness(t, "version: v1\nrules:\n  - match: ^video[0-9]+$\n    class: camera\n", func(o *Options) { o.SysFS, o.RunFS = sys, run })
	camera(h, sys, run, 0)
	camera(h, sys, run, 1)
	h.events.fire("add", "video3")
	const res = "smarter-devices/camera"
	h.waitFor(res, "two cameras, one ID each", health(2, pluginapi.Healthy))
	devs := h.kubelet.Devices(res)
	resp := h.allocate(res, devs[1].ID)
	var paths []string
	for _, s := range resp.ContainerResponses[0].Devices {
		paths = append(paths, s.HostPath)
	}
	if !slices.Equal(paths, []string{"/dev/video2", "/dev/video3"}) {
		t.Errorf("camera %s allocates %v, want both of its nodes", devs[1].ID, paths)
	}
}

// alsaCard adds sound card n's nodes below /dev/snd (116:x), each in sysfs
// below the card's PCI function, with udev's ID_PATH of the card.
func alsaCard(h *harness, sys, run *devFS, n int, names ...string) {
	card := fmt.Sprintf("devices/pci0000:00/0000:00:1f.%d/sound/card%d", n, n)
	for i, name := range names {
		minor := 32*n + i
		dev := card + "/" + name
		sys.put(fmt.Sprintf("dev/char/116:%d", minor), &fstest.MapFile{Mode: fs.ModeSymlink | 0o777, Data: []byte("../../" + dev)})
		sys.put(dev+"/uevent", &fstest.MapFile{Data: []byte(fmt.Sprintf("MAJOR=116\nMINOR=%d\nDEVNAME=snd/%s\n", minor, name))})
		run.put(fmt.Sprintf("udev/data/c116:%d", minor), &fstest.MapFile{Data: []byte(fmt.Sprintf("E:ID_PATH=pci-0000:00:1f.%d\n", n))})
		h.dev.put("snd/"+name, &fstest.MapFile{Mode: charDev, Sys: &syscall.Stat_t{Rdev: unix.Mkdev(116, uint32(minor))}})
	}
}

// An ALSA card's nodes are one unit: a pod given card 1 gets its control
// and PCM nodes, and none of card 0's.
func TestALSACardIsOneUnit(t *testing.T) {
	sys, run := &devFS{m: fstest.MapFS{}}, &devFS{m: fstest.MapFS{}}
	h := newHarness(t, "version: v1\nrules:\n  - match: ^snd/(controlC|pcmC)[0-9]+\n    class: sound-card\n", func(o *Options) { o.SysFS, o.RunFS = sys, run })
	h.dev.set("snd", fs.ModeDir|0o755)
	alsaCard(h, sys, run, 0, "controlC0", "pcmC0D0p")
	alsaCard(h, sys, run, 1, "controlC1", "pcmC1D0c", "pcmC1D0p")
	h.events.fire("add", "snd/controlC1")
	const res = "smarter-devices/sound-card"
	h.waitFor(res, "two cards", health(2, pluginapi.Healthy))
	client, err := h.kubelet.Client(res)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Allocate(t.Context(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"pci-0000_00_1f.1"}}}})
	if err != nil {
		t.Fatalf("Allocate card 1: %v (IDs: %v)", err, h.kubelet.Devices(res))
	}
	var paths []string
	for _, s := range resp.ContainerResponses[0].Devices {
		paths = append(paths, s.ContainerPath)
	}
	if want := []string{"/dev/snd/controlC1", "/dev/snd/pcmC1D0c", "/dev/snd/pcmC1D0p"}; !slices.Equal(paths, want) {
		t.Errorf("card 1 allocates %v, want %v", paths, want)
	}
}
