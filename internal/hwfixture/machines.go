package hwfixture

// Machines are whole hosts from the catalog, by name: what tests plug in
// together, and what TestMatchesRealUdev checks against Debian's udevd.
var Machines = map[string]func(udev bool) *Machine{
	// A PC with USB serial adapters: FTDI and CP2102N with serial numbers,
	// two CH340 clones without, one behind a hub.
	"pc-serial": func(udev bool) *Machine {
		m := New(udev)
		m.Plug(FT232R(IntelXHCI, "1", "A1B2C3"))
		m.Plug(CP2102N(IntelXHCI, "2", "d4f0c5b1e3a2ec11b5d1c2a3b4c5d6e7"))
		m.Plug(CH340(IntelXHCI, "3"))
		m.Plug(CH340(IntelXHCI, "4.2"))
		return m
	},
	// A PC with a UVC webcam (video and microphone), a USB sound card and
	// its own HD Audio.
	"pc-av": func(udev bool) *Machine {
		m := New(udev)
		m.Plug(HDAudio("3", -1))
		m.Plug(C270(IntelXHCI, "1", "5C4F2E10"))
		m.Plug(CM108(IntelXHCI, "2"))
		return m
	},
	// A Raspberry Pi 4 with I2C, SPI, GPIO, VideoCore, and a CH340 and a
	// webcam in its USB sockets.
	"pi4": func(udev bool) *Machine {
		m := New(udev)
		m.Plug(PiGPIO)
		m.Plug(PiI2C1)
		m.Plug(PiSPI0)
		m.Plug(PiVideoCore)
		m.Plug(CH340(Pi4VL805, "1.3"))
		m.Plug(C270(Pi4VL805, "1.4", "5C4F2E10"))
		return m
	},
	"jetson-xavier": func(udev bool) *Machine {
		m := New(udev)
		m.Plug(JetsonXavier)
		return m
	},
	"jetson-orin": func(udev bool) *Machine {
		m := New(udev)
		m.Plug(JetsonOrin)
		return m
	},
}

// Catalog is a host with the catalog's hardware of every kind a rule
// shape serves, for the golden tests of what the daemon publishes:
// adapters with and without serials (an FT232R, two CP2102N, one of them
// with the factory serial "0001", a CH340), a webcam with a microphone, a
// PCI sound card and a discrete GPU. It returns what it plugged, in that
// order.
func Catalog() (*Machine, []*Plugged) {
	m := New(true)
	plugged := []*Plugged{
		m.Plug(FT232R(IntelXHCI, "1", "A1B2C3")),
		m.Plug(CP2102N(IntelXHCI, "2", "0001")),
		m.Plug(CP2102N(IntelXHCI, "3", "d4f2b8c1e0a3eb11a1b2c3d4e5f6a7b8")),
		m.Plug(CH340(IntelXHCI, "4")),
		m.Plug(C270(IntelXHCI, "5", "5C4F2E10")),
		m.Plug(HDAudio("3", 0)),
		m.Plug(NvidiaGPU("0000:3b:00.0", 0, 1)),
	}
	return m, plugged
}
