package hwfixture

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Host is a USB host controller: the chain of shared devices from
// /sys/devices down to it, and its root hubs' bus numbers. An xHCI
// controller has two root hubs for the same sockets, one for USB 2 and one
// for USB 3 (drivers/usb/host/xhci-plat.c, xhci-pci.c).
type Host struct {
	Chain []Dev // below devices/, the controller last
	Bus   int   // root hub of USB 2 devices: usb<Bus>
	Bus3  int   // root hub of USB 3 devices; 0 for none
}

// A PC's Intel xHCI controller on PCI.
var IntelXHCI = Host{
	Chain: []Dev{
		{Name: "pci0000:00"},
		pciDev("0000:00:14.0", "xhci_hcd", "8086", "a36d", "0c0330"),
	},
	Bus: 1, Bus3: 2,
}

// A Raspberry Pi 4's USB-A sockets: the VL805 xHCI controller on the
// SoC's PCIe bridge (scb/fd500000.pcie), as in its device tree.
var Pi4VL805 = Host{
	Chain: []Dev{
		{Name: "platform"},
		platformDev("scb", "", "/scb", "simple-bus"),
		platformDev("fd500000.pcie", "brcm-pcie", "/scb/pcie@7d500000", "brcm,bcm2711-pcie"),
		{Name: "pci0000:00"},
		pciDev("0000:00:00.0", "pcieport", "14e4", "2711", "060400"),
		pciDev("0000:01:00.0", "xhci_hcd", "1106", "3483", "0c0330"),
	},
	Bus: 1, Bus3: 2,
}

// USBDevice is one USB device as its descriptors describe it, and where it
// is plugged in.
type USBDevice struct {
	Host Host
	// Port is the port chain below the root hub: "2" is the root hub's
	// port 2, "1.4" port 4 of a hub on port 1 (the hub is laid out too).
	Port  string
	USB3  bool   // a SuperSpeed device: below the USB 3 root hub
	Speed string // the speed attribute: "12", "480", "5000"

	Vendor, Product, BCDDevice string // idVendor, idProduct, bcdDevice: 4 hex digits
	// String descriptors; "" when the device has none (no sysfs file).
	Manufacturer, ProductName, Serial string
	Class                             string // bDeviceClass, 2 hex digits ("00", "ef", "ff")
	Interfaces                        []Interface

	// What Debian's hwdb (20-usb-vendor-model.hwdb) calls the vendor and
	// model; udev adds them as ID_VENDOR_FROM_DATABASE and
	// ID_MODEL_FROM_DATABASE where its rules import the hwdb.
	VendorDB, ModelDB string
}

// Interface is one USB interface and what its driver makes below it.
type Interface struct {
	Class, SubClass, Protocol string // 2 hex digits each
	Driver                    string // "" for an interface no driver took
	Functions                 []Function
}

func (u USBDevice) layout(b *builder) {
	host := b.chain("devices", u.Host.Chain...)
	bus := u.Host.Bus
	if u.USB3 && u.Host.Bus3 != 0 {
		bus = u.Host.Bus3
	}
	root := b.rootHub(host, bus)
	parent := root
	ports := strings.Split(u.Port, ".")
	for i := 1; i < len(ports); i++ {
		parent = b.hub(parent, bus, strings.Join(ports[:i], "."))
	}
	name := fmt.Sprintf("%d-%s", bus, u.Port)
	dir := b.add(parent, u.deviceDev(b, name, bus), u.node(b, bus))
	for i, intf := range u.Interfaces {
		idir := b.add(dir, u.interfaceDev(name, i, intf), nil)
		for _, f := range intf.Functions {
			f.layoutBelow(b, idir, funcCtx{usbName: name})
		}
	}
}

// node is the USB device's own node, /dev/bus/usb/BBB/DDD: char major 189,
// minor (bus-1)*128 + devnum-1 (drivers/usb/core/usb.c usb_devnode).
func (u USBDevice) node(b *builder, bus int) *Node {
	b.m.devnum[bus]++
	if b.m.devnum[bus] < 2 {
		b.m.devnum[bus] = 2 // 1 is the root hub
	}
	n := b.m.devnum[bus]
	return &Node{Name: fmt.Sprintf("bus/usb/%03d/%03d", bus, n), Major: 189, Minor: uint32((bus-1)*128 + n - 1), DevType: "usb_device"}
}

// deviceDev is the USB device's directory (drivers/usb/core/sysfs.c and
// usb_uevent in driver.c: PRODUCT, TYPE, BUSNUM, DEVNUM).
func (u USBDevice) deviceDev(b *builder, name string, bus int) Dev {
	devnum := b.m.devnum[bus] + 1
	if devnum < 2 {
		devnum = 2
	}
	class := u.Class
	if class == "" {
		class = "00"
	}
	attrs := map[string]string{
		"idVendor": u.Vendor, "idProduct": u.Product, "bcdDevice": u.BCDDevice,
		"bDeviceClass": class, "bDeviceSubClass": "00", "bDeviceProtocol": "00",
		"bNumInterfaces": fmt.Sprintf("%2d", len(u.Interfaces)), "bConfigurationValue": "1",
		"busnum": strconv.Itoa(bus), "devnum": strconv.Itoa(devnum), "devpath": u.Port,
		"speed": u.speed(), "maxchild": "0", "removable": "removable", "version": " 2.00",
	}
	if u.Manufacturer != "" {
		attrs["manufacturer"] = u.Manufacturer
	}
	if u.ProductName != "" {
		attrs["product"] = u.ProductName
	}
	if u.Serial != "" {
		attrs["serial"] = u.Serial
	}
	return Dev{
		Name: name, Sub: "bus/usb", Driver: "usb",
		Uevent: []string{
			"PRODUCT=" + u.productKey(),
			fmt.Sprintf("TYPE=%d/0/0", hexByte(class)),
			fmt.Sprintf("BUSNUM=%03d", bus), fmt.Sprintf("DEVNUM=%03d", devnum),
		},
		Attrs: attrs,
		Raw:   map[string][]byte{"descriptors": u.descriptors()},
	}
}

func (u USBDevice) speed() string {
	if u.Speed != "" {
		return u.Speed
	}
	if u.USB3 {
		return "5000"
	}
	return "480"
}

// productKey is usb_uevent's PRODUCT: vendor/product/bcdDevice in hex
// without leading zeros.
func (u USBDevice) productKey() string {
	return fmt.Sprintf("%x/%x/%x", hexWord(u.Vendor), hexWord(u.Product), hexWord(u.BCDDevice))
}

// interfaceDev is interface i's directory (usb_if_uevent: INTERFACE and
// MODALIAS, whose format is usb_device_id's in file2alias.c).
func (u USBDevice) interfaceDev(name string, i int, intf Interface) Dev {
	class := u.Class
	if class == "" {
		class = "00"
	}
	return Dev{
		Name: fmt.Sprintf("%s:1.%d", name, i), Sub: "bus/usb", Driver: intf.Driver,
		Uevent: []string{
			"DEVTYPE=usb_interface",
			"PRODUCT=" + u.productKey(),
			fmt.Sprintf("TYPE=%d/0/0", hexByte(class)),
			fmt.Sprintf("INTERFACE=%d/%d/%d", hexByte(intf.Class), hexByte(intf.SubClass), hexByte(intf.Protocol)),
			fmt.Sprintf("MODALIAS=usb:v%04Xp%04Xd%04Xdc%02Xdsc00dp00ic%02Xisc%02Xip%02Xin%02X",
				hexWord(u.Vendor), hexWord(u.Product), hexWord(u.BCDDevice), hexByte(class),
				hexByte(intf.Class), hexByte(intf.SubClass), hexByte(intf.Protocol), i),
		},
		Attrs: map[string]string{
			"bInterfaceNumber": fmt.Sprintf("%02x", i), "bAlternateSetting": " 0",
			"bInterfaceClass": intf.Class, "bInterfaceSubClass": intf.SubClass, "bInterfaceProtocol": intf.Protocol,
			"bNumEndpoints": "01",
		},
	}
}

// descriptors is the raw descriptors attribute: the device descriptor,
// then the active configuration with its interfaces and one endpoint each
// (USB 2.0 spec, 9.6; drivers/usb/core/sysfs.c read_descriptors).
func (u USBDevice) descriptors() []byte {
	class := u.Class
	if class == "" {
		class = "00"
	}
	d := []byte{18, 1, 0x00, 0x02, hexByte(class), 0, 0, 64}
	d = binary.LittleEndian.AppendUint16(d, hexWord(u.Vendor))
	d = binary.LittleEndian.AppendUint16(d, hexWord(u.Product))
	d = binary.LittleEndian.AppendUint16(d, hexWord(u.BCDDevice))
	idx := func(s string, i byte) byte {
		if s == "" {
			return 0
		}
		return i
	}
	d = append(d, idx(u.Manufacturer, 1), idx(u.ProductName, 2), idx(u.Serial, 3), 1)
	total := 9 + len(u.Interfaces)*(9+7)
	d = append(d, 9, 2)
	d = binary.LittleEndian.AppendUint16(d, uint16(total))
	d = append(d, byte(len(u.Interfaces)), 1, 0, 0x80, 50)
	for i, intf := range u.Interfaces {
		d = append(d, 9, 4, byte(i), 0, 1, hexByte(intf.Class), hexByte(intf.SubClass), hexByte(intf.Protocol), 0)
		d = append(d, 7, 5, 0x81+byte(i), 2, 64, 0, 0)
	}
	return d
}

// rootHub lays out (once) root hub usb<bus> below host: a USB device of
// the Linux Foundation (1d6b) whose serial is the controller's name
// (drivers/usb/core/hcd.c).
func (b *builder) rootHub(host string, bus int) string {
	product := "0002"
	if bus%2 == 0 { // the second root hub of an xHCI controller is USB 3
		product = "0003"
	}
	hub := USBDevice{Vendor: "1d6b", Product: product, BCDDevice: "0601", Class: "09",
		Manufacturer: "Linux 6.1.0-rpi7 xhci-hcd", ProductName: "xHCI Host Controller", Serial: baseName(host),
		Interfaces: []Interface{{Class: "09", SubClass: "00", Protocol: "00", Driver: "hub"}}}
	name := fmt.Sprintf("usb%d", bus)
	dir := host + "/" + name
	if b.m.Sys.Has(dir + "/uevent") {
		return dir
	}
	d := hub.deviceDev(b, name, bus)
	d.Attrs["devnum"], d.Attrs["devpath"] = "1", "0"
	d.Uevent[len(d.Uevent)-1] = "DEVNUM=001"
	b.write(dir, d, &Node{Name: fmt.Sprintf("bus/usb/%03d/001", bus), Major: 189, Minor: uint32((bus - 1) * 128), DevType: "usb_device"})
	b.p.Nodes = b.p.Nodes[:len(b.p.Nodes)-1] // shared: not this hardware's node
	b.write(dir+"/"+fmt.Sprintf("%d-0:1.0", bus), hub.interfaceDev(fmt.Sprintf("%d-0", bus), 0, hub.Interfaces[0]), nil)
	return dir
}

// hub lays out (once) a 4-port USB 2 hub at the given port chain.
func (b *builder) hub(parent string, bus int, ports string) string {
	name := fmt.Sprintf("%d-%s", bus, ports)
	dir := parent + "/" + name
	if b.m.Sys.Has(dir + "/uevent") {
		return dir
	}
	h := USBDevice{Port: ports, Vendor: "05e3", Product: "0608", BCDDevice: "6060", Class: "09", ProductName: "USB2.0 Hub",
		Interfaces: []Interface{{Class: "09", SubClass: "00", Protocol: "00", Driver: "hub"}}}
	b.write(dir, h.deviceDev(b, name, bus), h.node(b, bus))
	b.p.Nodes = b.p.Nodes[:len(b.p.Nodes)-1]
	b.write(dir+"/"+name+":1.0", h.interfaceDev(name, 0, h.Interfaces[0]), nil)
	return dir
}

func baseName(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

func hexByte(s string) byte {
	v, _ := strconv.ParseUint(s, 16, 8)
	return byte(v)
}

func hexWord(s string) uint16 {
	v, _ := strconv.ParseUint(s, 16, 16)
	return uint16(v)
}

// OnNUMANode returns the host with its controller on NUMA node n (the PCI
// function's numa_node attribute), as on a two-socket server.
func (h Host) OnNUMANode(n int) Host {
	chain := make([]Dev, len(h.Chain))
	copy(chain, h.Chain)
	last := &chain[len(chain)-1]
	attrs := make(map[string]string, len(last.Attrs))
	for k, v := range last.Attrs {
		attrs[k] = v
	}
	attrs["numa_node"] = strconv.Itoa(n)
	last.Attrs = attrs
	h.Chain = chain
	return h
}
