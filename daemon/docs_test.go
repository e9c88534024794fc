package daemon

import (
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
)

// TestDocsRuleExamples runs every rule file README.md and docs/ show, as a
// user copies it, on a machine with the hardware its text speaks of (the
// catalog's adapters, cameras, sound cards, a Raspberry Pi's buses, a
// discrete NVIDIA GPU), and checks what the text promises: which resources
// the node gets and no others, their device IDs, and the nodes, paths and
// environment a container is given. A block whose text offers
// alternatives ("…, or …") is also run one rule at a time. A new example
// fails here until it has a case: documentation nobody ran is a promise
// nobody kept.
func TestDocsRuleExamples(t *testing.T) {
	cases := docCases()
	used := make([]bool, len(cases))
	for _, b := range docRuleBlocks(t) {
		found := false
		for i, c := range cases {
			if c.file != b.file || !strings.Contains(b.text, c.marker) {
				continue
			}
			found, used[i] = true, true
			t.Run(c.name, func(t *testing.T) { runDocCase(t, b, c) })
		}
		if !found {
			t.Errorf("%s, the rule example at line %d, has no case in this test: say here what it does\n%s", b.file, b.line, b.text)
		}
	}
	for i, c := range cases {
		if !used[i] {
			t.Errorf("case %s: %s has no rule example containing %q any more", c.name, c.file, c.marker)
		}
	}
}

// docBlock is one rule example: a fenced yaml or toml block that is a
// rule file or a fragment of one (rules indented as under "rules:").
type docBlock struct {
	file, lang, text string
	line             int
}

func docRuleBlocks(t *testing.T) []docBlock {
	t.Helper()
	docs := []string{"README.md"}
	entries, err := os.ReadDir("../docs")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".md") {
			docs = append(docs, "docs/"+e.Name())
		}
	}
	fence := regexp.MustCompile("(?s)```(yaml|toml)\n(.*?)```")
	var blocks []docBlock
	for _, file := range docs {
		raw, err := os.ReadFile("../" + file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range fence.FindAllSubmatchIndex(raw, -1) {
			lang, text := string(raw[m[2]:m[3]]), string(raw[m[4]:m[5]])
			if lang == "yaml" && !strings.HasPrefix(text, "version: v1") && !strings.HasPrefix(text, "- devicematch") && !strings.HasPrefix(text, "  - match") {
				continue // a pod spec, a claim, a DeviceClass: not rules
			}
			blocks = append(blocks, docBlock{file: file, lang: lang, text: text, line: 1 + strings.Count(string(raw[:m[0]]), "\n")})
		}
	}
	return blocks
}

// docCase is what one example's text promises on one machine.
type docCase struct {
	name, file, marker string
	// rules picks the block's rules to apply, by index; nil applies all.
	rules   []int
	machine func() *hwfixture.Machine
	// want is every resource the daemon serves (no other may appear).
	want map[string]docResource
}

type docResource struct {
	ids []string // device IDs, all healthy
	// nodes are the host nodes one container gets for each ID listed.
	nodes map[string][]string
	// check looks further at the first ID's allocation.
	check func(t *testing.T, c *pluginapi.ContainerAllocateResponse)
	// noNUMA: no ID may advertise a NUMA node.
	noNUMA bool
}

func runDocCase(t *testing.T, b docBlock, c docCase) {
	text := b.text
	if c.rules != nil {
		text = pickRules(t, text, c.rules)
	}
	file := "rules.yaml"
	switch {
	case b.lang == "toml":
		file = "rules.toml"
	case strings.HasPrefix(text, "  - match"):
		text = "version: v1\nrules:\n" + text
	}
	m := c.machine()
	h := newHarnessFile(t, file, text, onMachine(m))
	for _, res := range slices.Sorted(maps.Keys(c.want)) {
		r := c.want[res]
		want := map[string]string{}
		for _, id := range r.ids {
			want[id] = pluginapi.Healthy
		}
		h.waitFor(res, fmt.Sprintf("IDs %v", r.ids), ids(want))
		for _, d := range h.kubelet.Devices(res) {
			if r.noNUMA && d.Topology != nil {
				t.Errorf("%s ID %s advertises NUMA %v, want none", res, d.ID, d.Topology)
			}
		}
		for _, id := range slices.Sorted(maps.Keys(r.nodes)) {
			if got := hostPaths(h.allocate(res, id).ContainerResponses[0]); !slices.Equal(got, r.nodes[id]) {
				t.Errorf("%s ID %s gives a container %v, want %v", res, id, got, r.nodes[id])
			}
		}
		if r.check != nil {
			r.check(t, h.allocate(res, r.ids[0]).ContainerResponses[0])
		}
	}
	if got := slices.Sorted(maps.Keys(h.report().Resources)); !slices.Equal(got, slices.Sorted(maps.Keys(c.want))) {
		t.Errorf("the daemon serves %v, want exactly %v", got, slices.Sorted(maps.Keys(c.want)))
	}
}

// pickRules keeps the rules of a block whose indexes are in keep: a rule
// starts at its "- match"/"- devicematch" line and takes the comment lines
// just above it.
func pickRules(t *testing.T, text string, keep []int) string {
	t.Helper()
	var head []string
	var rules [][]string
	var pending []string
	for _, l := range strings.SplitAfter(text, "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(trimmed, "- match") || strings.HasPrefix(trimmed, "- devicematch"):
			rules = append(rules, append(pending, l))
			pending = nil
		case strings.HasPrefix(trimmed, "#"):
			pending = append(pending, l)
		case len(rules) == 0:
			head = append(head, pending...)
			head = append(head, l)
			pending = nil
		default:
			rules[len(rules)-1] = append(rules[len(rules)-1], pending...)
			rules[len(rules)-1] = append(rules[len(rules)-1], l)
			pending = nil
		}
	}
	out := strings.Join(head, "")
	for _, i := range keep {
		if i >= len(rules) {
			t.Fatalf("the block has %d rules, no rule %d", len(rules), i)
		}
		out += strings.Join(rules[i], "")
	}
	return out
}

// countIDs are the IDs of a resource with count n: 0 … n-1.
func countIDs(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

// perNode is one resource per node, named after it, with count IDs, each
// giving the node.
func perNode(want map[string]docResource, count int, paths ...string) map[string]docResource {
	if want == nil {
		want = map[string]docResource{}
	}
	for _, p := range paths {
		want["smarter-devices/"+strings.NewReplacer("/", "_", ".", "_").Replace(p)] = docResource{ids: countIDs(count), nodes: map[string][]string{"0": {"/dev/" + p}}}
	}
	return want
}

// nodesBelow are the machine's nodes in a directory of /dev, as host paths.
func nodesBelow(m *hwfixture.Machine, dir string) []string {
	var out []string
	for _, p := range m.NodePaths() {
		if strings.HasPrefix(p, dir+"/") {
			out = append(out, "/dev/"+p)
		}
	}
	slices.Sort(out)
	return out
}

// wantEnv checks an allocation's environment.
func wantEnv(want map[string]string) func(t *testing.T, c *pluginapi.ContainerAllocateResponse) {
	return func(t *testing.T, c *pluginapi.ContainerAllocateResponse) {
		t.Helper()
		for k, v := range want {
			if got, ok := c.Envs[k]; !ok || (v != "*" && got != v) {
				t.Errorf("env %s = %q (set: %v), want %q; env %v", k, got, ok, v, c.Envs)
			}
		}
	}
}

// wantSpecs checks that an allocation holds these host→container paths.
func wantSpecs(paths ...string) func(t *testing.T, c *pluginapi.ContainerAllocateResponse) {
	return func(t *testing.T, c *pluginapi.ContainerAllocateResponse) {
		t.Helper()
		got := specPaths(c)
		for _, p := range paths {
			if !slices.Contains(got, p) {
				t.Errorf("the container's devices %v lack %s", got, p)
			}
		}
	}
}

func both(checks ...func(t *testing.T, c *pluginapi.ContainerAllocateResponse)) func(t *testing.T, c *pluginapi.ContainerAllocateResponse) {
	return func(t *testing.T, c *pluginapi.ContainerAllocateResponse) {
		t.Helper()
		for _, f := range checks {
			f(t, c)
		}
	}
}

// The machines the examples speak of. A PC at the edge with the catalog's
// serial adapters (ttyUSB0: FT232R A1B2C3, ttyUSB1: CP2102N, ttyUSB2 and
// ttyUSB3: CH340 clones), a webcam (video0, video1, its microphone) and
// sound cards; the configuration page's GPS and PLC line (two FT232Rs).
func edgePC() *hwfixture.Machine {
	m := hwfixture.Machines["pc-serial"](true)
	m.Plug(hwfixture.HDAudio("3", -1))
	m.Plug(hwfixture.C270(hwfixture.IntelXHCI, "5", "5C4F2E10"))
	m.Plug(hwfixture.CM108(hwfixture.IntelXHCI, "6"))
	return m
}

func gpsAndPLC() *hwfixture.Machine {
	m := hwfixture.New(true)
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))   // ttyUSB0: the GPS
	m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "2", "FT9XK2L1")) // ttyUSB1: PLC line 1
	m.Plug(hwfixture.CH340(hwfixture.IntelXHCI, "3"))              // ttyUSB2: any other
	return m
}

func pcSerial() *hwfixture.Machine { return hwfixture.Machines["pc-serial"](true) }

func gpuServer() *hwfixture.Machine {
	m := hwfixture.New(true)
	m.Plug(hwfixture.NvidiaGPU("0000:3b:00.0", 0, 0))
	return m
}

// The catalog's adapters' class keys: FT232R and CP2102N by serial, the
// CH340 clones by port.
var serialKeys = []string{"0403_6001_A1B2C3", "10c4_ea60_d4f0c5b1e3a2ec11b5d1c2a3b4c5d6e7", "usb-0000_00_14.0-3", "usb-0000_00_14.0-4.2"}

func usbSerialClass() map[string]docResource {
	return map[string]docResource{"smarter-devices/usb-serial": {ids: serialKeys, nodes: map[string][]string{
		serialKeys[0]: {"/dev/ttyUSB0"}, serialKeys[1]: {"/dev/ttyUSB1"}, serialKeys[2]: {"/dev/ttyUSB2"}, serialKeys[3]: {"/dev/ttyUSB3"}}}}
}

const c270 = "046d_0825_5C4F2E10"

func docCases() []docCase {
	pc := edgePC
	return []docCase{
		{
			// "every USB serial adapter: smarter-devices/ttyUSB0, …", "every
			// camera as one resource, one ID per camera with all its nodes",
			// "a directory: every node below it", "ten pods may hold it".
			name: "README-first-rules", file: "README.md", marker: "every USB serial adapter: smarter-devices/ttyUSB0",
			machine: pc,
			want: func() map[string]docResource {
				w := perNode(nil, 1, "ttyUSB0", "ttyUSB1", "ttyUSB2", "ttyUSB3")
				w["smarter-devices/camera"] = docResource{ids: []string{c270}, nodes: map[string][]string{c270: {"/dev/video0", "/dev/video1"}}}
				w["smarter-devices/snd"] = docResource{ids: countIDs(10), nodes: map[string][]string{"0": nodesBelow(pc(), "snd"), "9": nodesBelow(pc(), "snd")}}
				return w
			}(),
		},
		{
			// The old daemon's format: a resource per node, nummaxdevices IDs.
			name: "legacy-yaml", file: "docs/configuration.md", marker: "- devicematch: ^ttyUSB[0-9]*$\n  nummaxdevices: 1",
			machine: pc,
			want:    perNode(perNode(nil, 1, "ttyUSB0", "ttyUSB1", "ttyUSB2", "ttyUSB3"), 10, "video0", "video1"),
		},
		{
			name: "versioned-yaml", file: "docs/configuration.md", marker: "# Go regexp over the path below /dev",
			machine: pc,
			want: func() map[string]docResource {
				w := perNode(nil, 1, "ttyUSB0", "ttyUSB1", "ttyUSB2", "ttyUSB3")
				r := w["smarter-devices/ttyUSB0"]
				r.check = func(t *testing.T, c *pluginapi.ContainerAllocateResponse) {
					if len(c.Devices) != 1 || c.Devices[0].Permissions != "rw" {
						t.Errorf("permissions: rw gives %+v", c.Devices)
					}
				}
				w["smarter-devices/ttyUSB0"] = r
				w["smarter-devices/snd"] = docResource{ids: countIDs(20), nodes: map[string][]string{"19": nodesBelow(pc(), "snd")}}
				return w
			}(),
		},
		{
			name: "toml", file: "docs/configuration.md", marker: "[[rule]]",
			machine: pc,
			want:    perNode(perNode(nil, 1, "ttyUSB0", "ttyUSB1", "ttyUSB2", "ttyUSB3"), 10, "video0", "video1"),
		},
		{
			// "This GPS receiver, whatever ttyUSB number it gets", "Two
			// identical adapters told apart by udev's serial property", "Any
			// other USB serial adapter keeps its path-derived name".
			name: "identity", file: "docs/configuration.md", marker: "name: plc-line-1",
			machine: gpsAndPLC,
			want: map[string]docResource{
				"smarter-devices/gps":        {ids: []string{"0"}, nodes: map[string][]string{"0": {"/dev/ttyUSB0"}}},
				"smarter-devices/plc-line-1": {ids: []string{"0"}, nodes: map[string][]string{"0": {"/dev/ttyUSB1"}}},
				"smarter-devices/ttyUSB2":    {ids: []string{"0"}, nodes: map[string][]string{"0": {"/dev/ttyUSB2"}}},
			},
		},
		{
			// "smarter-devices/gps-A1B2C3, whatever the tty number", "the
			// container always opens /dev/gps0", "and /dev/serial/by-id/…
			// too", "SMARTER_DEVICE_GPS_A1B2C3=/dev/gps0, …_SERIAL=A1B2C3,
			// …_GID". Every FTDI adapter (idVendor 0403) gets such a name.
			name: "gps-template", file: "docs/configuration.md", marker: "name: gps-{ID_SERIAL_SHORT}",
			machine: gpsAndPLC,
			want: map[string]docResource{
				"smarter-devices/gps-A1B2C3": {ids: []string{"0"},
					check: both(
						wantSpecs("/dev/ttyUSB0→/dev/gps0", "/dev/ttyUSB0→/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0"),
						wantEnv(map[string]string{"SMARTER_DEVICE_GPS_A1B2C3": "/dev/gps0", "SMARTER_DEVICE_GPS_A1B2C3_SERIAL": "A1B2C3",
							"SMARTER_DEVICE_GPS_A1B2C3_GID": "*", "GPS_BAUD": "9600"}))},
				"smarter-devices/gps-FT9XK2L1": {ids: []string{"0"}, check: wantEnv(map[string]string{"SMARTER_DEVICE_GPS_FT9XK2L1": "/dev/gps0"})},
			},
		},
		{
			// "one resource for every USB serial adapter, one ID per adapter
			// … a pod asking for 1 gets one adapter's node".
			name: "usb-serial-class", file: "docs/configuration.md", marker: "^tty(USB|ACM)[0-9]+$\n    class: usb-serial\n",
			machine: pcSerial,
			want:    usbSerialClass(),
		},
		{
			// "A serial adapter by its serial number, with a fixed path in
			// the container": only the FTDI FT232R (0403:6001) matches.
			name: "cookbook-modbus", file: "docs/configuration.md", marker: "name: modbus-{ID_SERIAL_SHORT}",
			machine: pc,
			want: map[string]docResource{"smarter-devices/modbus-A1B2C3": {ids: []string{"0"},
				check: both(wantSpecs("/dev/ttyUSB0→/dev/modbus0", "/dev/ttyUSB0→/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0"),
					wantEnv(map[string]string{"SMARTER_DEVICE_MODBUS_A1B2C3": "/dev/modbus0", "SMARTER_DEVICE_MODBUS_A1B2C3_SERIAL": "A1B2C3"}))}},
		},
		{
			// "every V4L2 camera one unit with all its nodes": the webcam's
			// video0 and video1 are one ID.
			name: "cookbook-cameras-class", file: "docs/configuration.md", marker: "class: camera\n    subsystem: video4linux",
			rules: []int{1}, machine: pc,
			want: map[string]docResource{"smarter-devices/camera": {ids: []string{c270}, nodes: map[string][]string{c270: {"/dev/video0", "/dev/video1"}}}},
		},
		{
			// "or one model by vendor/product": a resource per camera of that
			// model, named by its serial, the camera's first video node.
			name: "cookbook-cameras-model", file: "docs/configuration.md", marker: "class: camera\n    subsystem: video4linux",
			rules: []int{0}, machine: pc,
			want: map[string]docResource{"smarter-devices/cam-5C4F2E10": {ids: []string{"0"}, nodes: map[string][]string{"0": {"/dev/video0"}}}},
		},
		{
			// Both rules as the block has them: the model's rule first, so
			// that camera is cam-5C4F2E10 and other cameras (none here) the class.
			name: "cookbook-cameras", file: "docs/configuration.md", marker: "class: camera\n    subsystem: video4linux",
			machine: pc,
			want:    map[string]docResource{"smarter-devices/cam-5C4F2E10": {ids: []string{"0"}, nodes: map[string][]string{"0": {"/dev/video0"}}}},
		},
		{
			// Both rules as the block has them: the directory comes first,
			// so it holds every node below it and the class has none.
			name: "cookbook-audio", file: "docs/configuration.md", marker: "class: usb-audio",
			machine: pc,
			want:    map[string]docResource{"smarter-devices/snd": {ids: countIDs(10), nodes: map[string][]string{"3": nodesBelow(pc(), "snd")}}},
		},
		{
			// "the whole ALSA directory".
			name: "cookbook-audio-directory", file: "docs/configuration.md", marker: "class: usb-audio",
			rules: []int{0}, machine: pc,
			want: map[string]docResource{"smarter-devices/snd": {ids: countIDs(10), nodes: map[string][]string{"3": nodesBelow(pc(), "snd")}}},
		},
		{
			// "or every USB sound card as a class, one ID per card with its
			// control and PCM nodes": the webcam's microphone and the CM108,
			// not the PC's HD Audio.
			name: "cookbook-audio-usb", file: "docs/configuration.md", marker: "class: usb-audio",
			rules: []int{1}, machine: pc,
			want: map[string]docResource{"smarter-devices/usb-audio": {ids: []string{c270, "usb-0000_00_14.0-6"}, nodes: map[string][]string{
				c270:                 {"/dev/snd/controlC1", "/dev/snd/pcmC1D0c"},
				"usb-0000_00_14.0-6": {"/dev/snd/controlC2", "/dev/snd/pcmC2D0c", "/dev/snd/pcmC2D0p"}}}},
		},
		{
			// I2C, SPI and GPIO on a Raspberry Pi 4 (the catalog's has no
			// /dev/gpiomem: that rule serves nothing there).
			name: "cookbook-pi-buses", file: "docs/configuration.md", marker: "  - match: ^i2c-[0-9]+$\n  - match: ^spidev",
			machine: func() *hwfixture.Machine { return hwfixture.Machines["pi4"](true) },
			want:    perNode(perNode(nil, 1, "i2c-1", "spidev0.0", "spidev0.1"), 10, "gpiochip0"),
		},
		{
			// "a discrete NVIDIA GPU with its shared control nodes as one
			// unit": one ID, the GPU's node with every companion present.
			name: "cookbook-gpu", file: "docs/configuration.md", marker: "class: nvidia-gpu-dev",
			machine: gpuServer,
			want: map[string]docResource{"smarter-devices/nvidia-gpu-dev": {ids: []string{"nvidia0"}, noNUMA: true, nodes: map[string][]string{
				"nvidia0": {"/dev/nvidia-modeset", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0", "/dev/nvidiactl"}}}},
		},
		{
			// The configuration page's full example on a Raspberry Pi 4 with
			// a CH340 and the webcam: every rule that has a device there.
			name: "examples-pi4", file: "docs/configuration.md", marker: "# TUN/TAP for VPN sidecars.",
			machine: func() *hwfixture.Machine { return hwfixture.Machines["pi4"](true) },
			want: func() map[string]docResource {
				m := hwfixture.Machines["pi4"](true)
				w := perNode(nil, 1, "ttyUSB0", "i2c-1", "spidev0.0", "spidev0.1")
				w = perNode(w, 10, "video0", "video1", "video10", "video11", "video12", "video13", "video14", "video15", "video16", "video18", "gpiochip0")
				w["smarter-devices/snd"] = docResource{ids: countIDs(20), nodes: map[string][]string{"0": nodesBelow(m, "snd")}}
				return w
			}(),
		},
		{
			// The same example on a Jetson: its integrated GPU.
			name: "examples-jetson", file: "docs/configuration.md", marker: "# TUN/TAP for VPN sidecars.",
			machine: func() *hwfixture.Machine { return hwfixture.Machines["jetson-orin"](true) },
			want:    map[string]docResource{"smarter-devices/nvidia-gpu0": {ids: countIDs(10)}},
		},
		{
			// docs/dra.md's eviction example; in device-plugin mode the
			// adapters are one class (eviction is DRA's: TestNodeDeviceFollows).
			name: "dra-evict", file: "docs/dra.md", marker: "evict_on_unplug: true",
			machine: pcSerial,
			want:    usbSerialClass(),
		},
	}
}
