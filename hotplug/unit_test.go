package hotplug

import (
	"testing"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
)

// unitOf reads the unit of node path on machine m.
func unitOf(t *testing.T, m *hwfixture.Machine, node string) Unit {
	t.Helper()
	major, minor, block, err := Rdev(m.Dev, node)
	if err != nil {
		t.Fatalf("%s: %v", node, err)
	}
	r := NewReader(m.Sys, m.Run)
	info, err := r.Info(major, minor, block)
	if err != nil {
		t.Fatalf("%s: %v", node, err)
	}
	return r.Unit(info)
}

// Every node of the catalog machines belongs to the physical device a user
// would name, with the same key whether udev runs or not.
func TestUnitFromSysfs(t *testing.T) {
	const xhci = "usb-0000_00_14.0-"
	cases := []struct {
		machine, node  string
		key, port, bus string
	}{
		// Serial adapters: a serial number names the device; without one,
		// the port does (a hub's port too).
		{"pc-serial", "ttyUSB0", "0403_6001_A1B2C3", xhci + "1", "usb"},
		{"pc-serial", "bus/usb/001/002", "0403_6001_A1B2C3", xhci + "1", "usb"}, // the adapter's own USB node
		{"pc-serial", "ttyUSB1", "10c4_ea60_d4f0c5b1e3a2ec11b5d1c2a3b4c5d6e7", xhci + "2", "usb"},
		{"pc-serial", "ttyUSB2", xhci + "3", xhci + "3", "usb"},
		{"pc-serial", "ttyUSB3", xhci + "4.2", xhci + "4.2", "usb"},
		// A webcam: both video nodes, its media node and its microphone's
		// control and PCM nodes are one device.
		{"pc-av", "video0", "046d_0825_5C4F2E10", xhci + "1", "usb"},
		{"pc-av", "video1", "046d_0825_5C4F2E10", xhci + "1", "usb"},
		{"pc-av", "media0", "046d_0825_5C4F2E10", xhci + "1", "usb"},
		{"pc-av", "snd/controlC1", "046d_0825_5C4F2E10", xhci + "1", "usb"},
		{"pc-av", "snd/pcmC1D0c", "046d_0825_5C4F2E10", xhci + "1", "usb"},
		// A PCI sound card: its PCI function.
		{"pc-av", "snd/controlC0", "pci-0000_00_1f.3", "pci-0000_00_1f.3", "pci"},
		{"pc-av", "snd/pcmC0D0p", "pci-0000_00_1f.3", "pci-0000_00_1f.3", "pci"},
		{"pc-av", "snd/hwC0D0", "pci-0000_00_1f.3", "pci-0000_00_1f.3", "pci"},
		// A USB sound card without a serial number: its port.
		{"pc-av", "snd/controlC2", xhci + "2", xhci + "2", "usb"},
		{"pc-av", "snd/pcmC2D0p", xhci + "2", xhci + "2", "usb"},
		{"pc-av", "hidraw0", xhci + "2", xhci + "2", "usb"}, // its volume buttons, below the HID device
		// A Raspberry Pi: the device on the nearest bus; each SPI chip
		// select is a device of its own, the codec's nodes are one device.
		{"pi4", "gpiochip0", "gpio-gpiochip0", "gpio-gpiochip0", "gpio"},
		{"pi4", "i2c-1", "i2c-i2c-1", "i2c-i2c-1", "i2c"},
		{"pi4", "spidev0.0", "spi-spi0.0", "spi-spi0.0", "spi"},
		{"pi4", "spidev0.1", "spi-spi0.1", "spi-spi0.1", "spi"},
		{"pi4", "vchiq", "platform-fe00b840.mailbox", "platform-fe00b840.mailbox", "platform"},
		{"pi4", "video10", "platform-bcm2835-codec", "platform-bcm2835-codec", "platform"},
		{"pi4", "video18", "platform-bcm2835-codec", "platform-bcm2835-codec", "platform"},
		{"pi4", "video13", "platform-bcm2835-isp", "platform-bcm2835-isp", "platform"},
		// USB behind the Pi 4's PCIe xHCI: the controller is its PCI function.
		{"pi4", "ttyUSB0", "usb-0000_01_00.0-1.3", "usb-0000_01_00.0-1.3", "usb"},
		{"pi4", "video0", "046d_0825_5C4F2E10", "usb-0000_01_00.0-1.4", "usb"},
	}
	for _, udev := range []bool{true, false} {
		machines := map[string]*hwfixture.Machine{}
		for _, c := range cases {
			m := machines[c.machine]
			if m == nil {
				m = hwfixture.Machines[c.machine](udev)
				machines[c.machine] = m
			}
			u := unitOf(t, m, c.node)
			if u.Key != c.key || u.PortKey != c.port || u.Bus != c.bus {
				t.Errorf("udev=%v %s %s: unit key %q port %q bus %q, want %q %q %q (%s)", udev, c.machine, c.node, u.Key, u.PortKey, u.Bus, c.key, c.port, c.bus, u.SysPath)
			}
		}
	}
}

// A port-keyed identity: the same adapter replugged into the same port
// gets its old key under another tty number; a different adapter there
// gets the port's key too; in another port, another key. A USB 3 device
// in the same socket (the xHCI's second root hub) has that socket's key.
func TestUnitPortKey(t *testing.T) {
	m := hwfixture.New(false)
	a := m.Plug(hwfixture.CH340(hwfixture.IntelXHCI, "3"))
	b := m.Plug(hwfixture.CH340(hwfixture.IntelXHCI, "4"))
	keyA, keyB := unitOf(t, m, a.Nodes[1].Path).Key, unitOf(t, m, b.Nodes[1].Path).Key
	if keyA == keyB {
		t.Fatalf("two identical adapters in ports 3 and 4 share key %q", keyA)
	}
	m.Unplug(a)
	m.Unplug(b)
	c := m.Plug(hwfixture.CH340(hwfixture.IntelXHCI, "4")) // now ttyUSB0, in b's port
	if got := unitOf(t, m, c.Node("ttyUSB*").Path); got.Key != keyB {
		t.Errorf("adapter replugged into port 4 as %s: key %q, want its old %q", c.Node("ttyUSB*").Path, got.Key, keyB)
	}
	d := m.Plug(hwfixture.CM108(hwfixture.IntelXHCI, "3")) // another device without a serial in a's port
	if got := unitOf(t, m, d.Node("snd/controlC*").Path); got.Key != keyA {
		t.Errorf("a sound card in port 3: key %q, want the port's %q", got.Key, keyA)
	}
	m.Unplug(d)
	usb3 := hwfixture.CH340(hwfixture.IntelXHCI, "3")
	usb3.USB3 = true
	e := m.Plug(usb3)
	if got := unitOf(t, m, e.Node("ttyUSB*").Path); got.Key != keyA || got.Port != "2-3" {
		t.Errorf("a USB 3 device in socket 3: key %q port %q, want %q on 2-3", got.Key, got.Port, keyA)
	}
}

// A node sysfs knows nothing of (no device directory) has no unit.
func TestUnitWithoutSysfs(t *testing.T) {
	r := NewReader(hwfixture.New(false).Sys, nil)
	if u := r.Unit(DeviceInfo{}); u != (Unit{}) {
		t.Errorf("unit of nothing: %+v", u)
	}
	// A virtual device: its own sysfs path.
	m := sysFS()
	r = NewReader(m, nil)
	info, err := r.Info(252, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if u := r.Unit(info); u.Key != "virtual-block-zram0" || u.Bus != "" {
		t.Errorf("zram0: %+v", u)
	}
}

// What a unit says of itself besides its key: a USB device's product
// string, and the driver nearest the node, read from sysfs alone.
func TestUnitModelAndDriver(t *testing.T) {
	cases := []struct {
		machine, node, model, driver string
	}{
		{"pc-serial", "ttyUSB0", "FT232R USB UART", "ftdi_sio"}, // the usb-serial port's driver, above the tty
		{"pc-serial", "ttyUSB2", "USB Serial", "ch341"},
		{"pc-av", "video0", "", "uvcvideo"}, // no product string; its interface's driver
		{"pc-av", "snd/controlC0", "", "snd_hda_intel"},
		{"pc-av", "snd/controlC1", "", "snd-usb-audio"},
	}
	for _, udev := range []bool{true, false} {
		machines := map[string]*hwfixture.Machine{}
		for _, c := range cases {
			m := machines[c.machine]
			if m == nil {
				m = hwfixture.Machines[c.machine](udev)
				machines[c.machine] = m
			}
			major, minor, block, err := Rdev(m.Dev, c.node)
			if err != nil {
				t.Fatal(err)
			}
			r := NewReader(m.Sys, m.Run)
			info, err := r.Info(major, minor, block)
			if err != nil {
				t.Fatal(err)
			}
			if u, d := r.Unit(info), r.Driver(info); u.Model != c.model || d != c.driver {
				t.Errorf("udev=%v %s %s: model %q driver %q, want %q %q", udev, c.machine, c.node, u.Model, d, c.model, c.driver)
			}
		}
	}
}

// A key keeps every letter and digit, the ends of each range included, and
// '.', '_', '-'; anything else becomes '_', one per character. (make
// mutate: 'Z' and '9' could have been turned into '_' unnoticed.)
func TestIDSafeRanges(t *testing.T) {
	for in, want := range map[string]string{
		"azAZ09._-":        "azAZ09._-",
		"usb-0403:6001 é/": "usb-0403_6001___",
		"`{@[/:":           "______",
	} {
		if got := idSafe(in); got != want {
			t.Errorf("idSafe(%q) = %q, want %q", in, got, want)
		}
	}
}
