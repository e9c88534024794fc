package hwfixture

import (
	"fmt"
	"strings"
)

// pciDev is a PCI function's directory (drivers/pci/pci-sysfs.c and
// pci_uevent in pci-driver.c). class is 6 hex digits.
func pciDev(addr, driver, vendor, device, class string) Dev {
	return Dev{
		Name: addr, Sub: "bus/pci", Driver: driver,
		Uevent: []string{
			"PCI_CLASS=" + strings.TrimLeft(strings.ToUpper(class), "0"),
			"PCI_ID=" + strings.ToUpper(vendor+":"+device),
			"PCI_SUBSYS_ID=" + strings.ToUpper(vendor+":"+device),
			"PCI_SLOT_NAME=" + addr,
			fmt.Sprintf("MODALIAS=pci:v0000%sd0000%ssv0000%ssd0000%sbc%ssc%si%s", strings.ToUpper(vendor), strings.ToUpper(device),
				strings.ToUpper(vendor), strings.ToUpper(device), strings.ToUpper(class[0:2]), strings.ToUpper(class[2:4]), strings.ToUpper(class[4:6])),
		},
		Attrs: map[string]string{"vendor": "0x" + vendor, "device": "0x" + device, "class": "0x" + class, "numa_node": "-1"},
	}
}

// platformDev is a platform device made from a device-tree node
// (drivers/base/platform.c platform_uevent, drivers/of/device.c
// of_device_uevent: OF_NAME, OF_FULLNAME, OF_COMPATIBLE_n, MODALIAS).
func platformDev(name, driver, ofPath string, compatible ...string) Dev {
	ofName := ofPath[strings.LastIndexByte(ofPath, '/')+1:]
	if i := strings.IndexByte(ofName, '@'); i >= 0 {
		ofName = ofName[:i]
	}
	ue := []string{"OF_NAME=" + ofName, "OF_FULLNAME=" + ofPath}
	alias := "of:N" + ofName + "T(null)"
	for i, c := range compatible {
		ue = append(ue, fmt.Sprintf("OF_COMPATIBLE_%d=%s", i, c))
		alias += "C" + c
	}
	ue = append(ue, fmt.Sprintf("OF_COMPATIBLE_N=%d", len(compatible)), "MODALIAS="+alias)
	return Dev{Name: name, Sub: "bus/platform", Driver: driver, Uevent: ue}
}

// PCIDevice is a PCI function and what its driver makes below it.
type PCIDevice struct {
	Bridge    string // root bus: "pci0000:00"
	Addr      string // "0000:00:1f.3"
	Driver    string
	Vendor    string // 4 hex digits
	Device    string
	Class     string // 6 hex digits
	NUMANode  int    // numa_node attribute; -1 for none
	Functions []Function
}

func (p PCIDevice) layout(b *builder) {
	root := b.ensure("devices", Dev{Name: p.Bridge})
	d := pciDev(p.Addr, p.Driver, p.Vendor, p.Device, p.Class)
	d.Attrs["numa_node"] = fmt.Sprint(p.NUMANode)
	dir := b.add(root, d, nil)
	for _, f := range p.Functions {
		f.layoutBelow(b, dir, funcCtx{})
	}
}

// Platform is a platform device below a chain of shared platform devices
// (the SoC's buses), and what its driver makes below it.
type Platform struct {
	Chain     []Dev // below devices/: "platform", "soc", ...
	Dev       Dev
	Shared    bool // the device itself is shared (stays on Unplug)
	Functions []Function
}

func (p Platform) layout(b *builder) {
	parent := b.chain("devices", p.Chain...)
	p.layoutBelow(b, parent, funcCtx{})
}

// layoutBelow makes Platform a Function too: a child platform device such
// as vchiq's bcm2835-codec.
func (p Platform) layoutBelow(b *builder, parent string, ctx funcCtx) {
	var dir string
	if p.Shared {
		dir = b.ensure(parent, p.Dev)
	} else {
		dir = b.add(parent, p.Dev, nil)
	}
	for _, f := range p.Functions {
		f.layoutBelow(b, dir, ctx)
	}
}

// GPIOChip is a GPIO character device: the chip's own device on the gpio
// bus is the node (drivers/gpio/gpiolib.c, gpiolib-cdev.c): …/gpiochip<n>,
// char 254:n.
type GPIOChip struct {
	N      int
	OF     []string // the controller's OF_* uevent lines, repeated on the chip
	Lines  int
	Label  string
	Driver string
}

func (g GPIOChip) layoutBelow(b *builder, parent string, _ funcCtx) {
	name := fmt.Sprintf("gpiochip%d", g.N)
	b.add(parent, Dev{Name: name, Sub: "bus/gpio", Uevent: g.OF}, &Node{Name: name, Major: 254, Minor: uint32(g.N)})
}

// I2CAdapter is I2C bus n: an adapter device on the i2c bus
// (DEVTYPE=i2c_adapter, drivers/i2c/i2c-core-base.c) with its i2c-dev
// class device below it, char 89:n (drivers/i2c/i2c-dev.c):
// …/i2c-1/i2c-dev/i2c-1.
type I2CAdapter struct {
	N    int
	Name string // the adapter's name attribute
}

func (a I2CAdapter) layoutBelow(b *builder, parent string, _ funcCtx) {
	name := fmt.Sprintf("i2c-%d", a.N)
	adapter := b.add(parent, Dev{Name: name, Sub: "bus/i2c", Uevent: []string{"DEVTYPE=i2c_adapter"}, Attrs: map[string]string{"name": a.Name}}, nil)
	b.add(adapter+"/i2c-dev", Dev{Name: name, Sub: "class/i2c-dev", Attrs: map[string]string{"name": a.Name}}, &Node{Name: name, Major: 89, Minor: uint32(a.N)})
}

// SPIDev is chip select CS of SPI controller Bus bound to spidev: the
// controller's spi_master class device, the SPI device spi<bus>.<cs> on
// the spi bus, and the spidev class device with the node, char 153
// (drivers/spi/spi.c, spidev.c): …/spi_master/spi0/spi0.0/spidev/spidev0.0.
type SPIDev struct {
	Bus, CS int
	Minor   int
}

func (s SPIDev) layoutBelow(b *builder, parent string, _ funcCtx) {
	ctl := b.ensure(parent+"/spi_master", Dev{Name: fmt.Sprintf("spi%d", s.Bus), Sub: "class/spi_master"})
	name := fmt.Sprintf("spi%d.%d", s.Bus, s.CS)
	dev := b.add(ctl, Dev{Name: name, Sub: "bus/spi", Driver: "spidev",
		Uevent: []string{fmt.Sprintf("OF_NAME=spidev"), fmt.Sprintf("OF_FULLNAME=/soc/spi@7e204000/spidev@%d", s.CS),
			"OF_COMPATIBLE_0=spidev", "OF_COMPATIBLE_N=1", "MODALIAS=spi:spidev"},
		Attrs: map[string]string{"modalias": "spi:spidev"}}, nil)
	node := "spidev" + name[3:]
	b.add(dev+"/spidev", Dev{Name: node, Sub: "class/spidev"}, &Node{Name: node, Major: 153, Minor: uint32(s.Minor)})
}

// ClassNode is a class device with a node right below a device, as
// …/fe00b840.mailbox/vchiq/vchiq: class dir, then the device.
type ClassNode struct {
	Class        string // "vchiq"
	Name         string // device and node name
	Major, Minor uint32
}

func (c ClassNode) layoutBelow(b *builder, parent string, _ funcCtx) {
	b.add(parent+"/"+c.Class, Dev{Name: c.Name, Sub: "class/" + c.Class}, &Node{Name: c.Name, Major: c.Major, Minor: c.Minor})
}

// JetsonGPU is an NVIDIA Jetson's integrated GPU: a platform device with
// no node. Jetson AGX Xavier (L4T R32–R35) has it at /sys/devices/gpu.0;
// Jetson Orin (L4T R36) only at /sys/devices/platform/gpu.0.
type JetsonGPU struct {
	N        int
	Platform bool   // below devices/platform (Orin) rather than devices/ (Xavier)
	Driver   string // "gv11b" (Xavier), "ga10b" (Orin)
}

func (g JetsonGPU) layout(b *builder) {
	parent := "devices"
	if g.Platform {
		parent = b.ensure("devices", Dev{Name: "platform"})
	}
	b.add(parent, platformDev(fmt.Sprintf("gpu.%d", g.N), g.Driver, "/gpu", "nvidia,"+g.Driver), nil)
}
