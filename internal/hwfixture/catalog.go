package hwfixture

// The catalog: hardware users plug into edge nodes, as its descriptors
// and drivers present it. Sources for each layout are cited; the udev side
// is checked against Debian's udevd by TestMatchesRealUdev.

// FT232R is an FTDI FT232R USB serial adapter with a serial number
// (0403:6001, ftdi_sio: one usb-serial port below interface 0).
func FT232R(host Host, port, serial string) USBDevice {
	return USBDevice{Host: host, Port: port, Speed: "12",
		Vendor: "0403", Product: "6001", BCDDevice: "0600",
		Manufacturer: "FTDI", ProductName: "FT232R USB UART", Serial: serial,
		Interfaces: []Interface{{Class: "ff", SubClass: "ff", Protocol: "ff", Driver: "ftdi_sio", Functions: []Function{USBSerial{Driver: "ftdi_sio"}}}},
	}
}

// CP2102N is a Silicon Labs CP2102N bridge (10c4:ea60, cp210x). Its serial
// number is set in the factory; cheap boards ship older CP2102s that all
// report "0001".
func CP2102N(host Host, port, serial string) USBDevice {
	return USBDevice{Host: host, Port: port, Speed: "12",
		Vendor: "10c4", Product: "ea60", BCDDevice: "0100",
		Manufacturer: "Silicon Labs", ProductName: "CP2102N USB to UART Bridge Controller", Serial: serial,
		Interfaces: []Interface{{Class: "ff", SubClass: "00", Protocol: "00", Driver: "cp210x", Functions: []Function{USBSerial{Driver: "cp210x"}}}},
	}
}

// CH340 is a WCH CH340 clone (1a86:7523, ch341): no manufacturer string
// and no serial number (iManufacturer = iSerialNumber = 0), so udev's
// ID_SERIAL is only "1a86_USB_Serial" and every clone looks the same.
func CH340(host Host, port string) USBDevice {
	return USBDevice{Host: host, Port: port, Speed: "12",
		Vendor: "1a86", Product: "7523", BCDDevice: "0264", Class: "ff",
		ProductName: "USB Serial",
		Interfaces:  []Interface{{Class: "ff", SubClass: "01", Protocol: "02", Driver: "ch341", Functions: []Function{USBSerial{Driver: "ch341"}}}},
	}
}

// C270 is a Logitech C270 webcam (046d:0825): no manufacturer or product
// strings, a serial number; a UVC function (uvcvideo on interface 0 makes
// video<n> for frames and video<n+1> for metadata, and media<n>) and a USB
// audio microphone (snd-usb-audio on interface 2: controlC and a capture
// PCM). uvcvideo's button input device is left out.
func C270(host Host, port, serial string) USBDevice {
	return USBDevice{Host: host, Port: port,
		Vendor: "046d", Product: "0825", BCDDevice: "0012", Class: "ef", Serial: serial,
		Interfaces: []Interface{
			{Class: "0e", SubClass: "01", Protocol: "00", Driver: "uvcvideo", Functions: []Function{
				V4L{Card: "UVC Camera (046d:0825)", Index: 0}, V4L{Card: "UVC Camera (046d:0825)", Index: 1}, Media{Model: "UVC Camera (046d:0825)"}}},
			{Class: "0e", SubClass: "02", Protocol: "00", Driver: "uvcvideo"},
			{Class: "01", SubClass: "01", Protocol: "00", Driver: "snd-usb-audio", Functions: []Function{
				SoundCard{ID: "U0x46d0x825", Devices: []string{"pcm0c"}}}},
			{Class: "01", SubClass: "02", Protocol: "00", Driver: "snd-usb-audio"},
		},
	}
}

// CM108 is a C-Media CM108 USB sound card (0d8c:013c, "USB PnP Sound
// Device"): no serial number; snd-usb-audio on its audio control interface
// makes a card with playback and capture PCMs, usbhid on its HID interface
// (the volume buttons) a hidraw node.
func CM108(host Host, port string) USBDevice {
	return USBDevice{Host: host, Port: port, Speed: "12",
		Vendor: "0d8c", Product: "013c", BCDDevice: "0100",
		Manufacturer: "C-Media Electronics Inc.", ProductName: "USB PnP Sound Device",
		Interfaces: []Interface{
			{Class: "01", SubClass: "01", Protocol: "00", Driver: "snd-usb-audio", Functions: []Function{
				SoundCard{ID: "Device", Devices: []string{"pcm0p", "pcm0c"}}}},
			{Class: "01", SubClass: "02", Protocol: "00", Driver: "snd-usb-audio"},
			{Class: "01", SubClass: "02", Protocol: "00", Driver: "snd-usb-audio"},
			{Class: "03", SubClass: "00", Protocol: "00", Driver: "usbhid", Functions: []Function{
				HIDRaw{Vendor: "0d8c", Product: "013c", Name: "C-Media Electronics Inc.       USB PnP Sound Device"}}},
		},
	}
}

// HDAudio is a PC's Intel HD Audio controller (snd_hda_intel on PCI
// 0000:00:1f.<fn>) with one card: control, analog playback and capture,
// and the codec's hwdep node.
func HDAudio(fn string, numa int) PCIDevice {
	return PCIDevice{Bridge: "pci0000:00", Addr: "0000:00:1f." + fn, Driver: "snd_hda_intel",
		Vendor: "8086", Device: "a348", Class: "040300", NUMANode: numa,
		Functions: []Function{SoundCard{ID: "PCH", Devices: []string{"pcm0p", "pcm0c", "hw0"}}}}
}

// Raspberry Pi 4 (BCM2711) platform devices, as its device tree and the
// Raspberry Pi kernel (6.1, rpi-6.1.y) lay them out. Paths follow what
// users of such boards report (e.g. karloygard/xcomfortd-go#17: gpiochip0
// below …/soc/3f200000.gpio, vchiq at …/soc/3f00b840.mailbox/vchiq/vchiq,
// video10 at …/3f00b840.mailbox/bcm2835-codec/video4linux/video10; a Pi 4
// has the same layout at 0xfe000000).
var piSoC = []Dev{
	{Name: "platform"},
	platformDev("soc", "", "/soc", "simple-bus"),
}

// PiGPIO is the Pi 4's main GPIO controller and its chip gpiochip0.
var PiGPIO = Platform{Chain: piSoC,
	Dev: platformDev("fe200000.gpio", "pinctrl-bcm2835", "/soc/gpio@7e200000", "brcm,bcm2711-gpio"),
	Functions: []Function{GPIOChip{N: 0, OF: []string{"OF_NAME=gpio", "OF_FULLNAME=/soc/gpio@7e200000",
		"OF_COMPATIBLE_0=brcm,bcm2711-gpio", "OF_COMPATIBLE_N=1"}}}}

// PiI2C1 is the Pi's I2C bus 1 on the header (dtparam=i2c_arm=on): /dev/i2c-1.
var PiI2C1 = Platform{Chain: piSoC,
	Dev:       platformDev("fe804000.i2c", "i2c-bcm2835", "/soc/i2c@7e804000", "brcm,bcm2711-i2c", "brcm,bcm2835-i2c"),
	Functions: []Function{I2CAdapter{N: 1, Name: "bcm2835 (i2c@7e804000)"}}}

// PiSPI0 is SPI0 with both chip selects bound to spidev (dtparam=spi=on):
// /dev/spidev0.0 and /dev/spidev0.1, two peripherals on one controller.
var PiSPI0 = Platform{Chain: piSoC,
	Dev:       platformDev("fe204000.spi", "spi-bcm2835", "/soc/spi@7e204000", "brcm,bcm2835-spi"),
	Functions: []Function{SPIDev{Bus: 0, CS: 0, Minor: 0}, SPIDev{Bus: 0, CS: 1, Minor: 1}}}

// PiVideoCore is the VideoCore mailbox: /dev/vchiq (class vchiq, char
// 242:0 on 6.1) and the platform devices vchiq makes for its clients,
// bcm2835-codec (video10 decode, video11 encode, video12 isp, video18
// image_fx) and bcm2835-isp (video13 output, video14 and video15 capture,
// video16 stats), as their drivers number them (video_nr).
var PiVideoCore = Platform{Chain: piSoC,
	Dev: platformDev("fe00b840.mailbox", "bcm2835_vchiq", "/soc/mailbox@7e00b840", "brcm,bcm2711-vchiq"),
	Functions: []Function{
		ClassNode{Class: "vchiq", Name: "vchiq", Major: 242, Minor: 0},
		Platform{Dev: Dev{Name: "bcm2835-codec", Sub: "bus/platform", Driver: "bcm2835-codec", Uevent: []string{"MODALIAS=platform:bcm2835-codec"}},
			Functions: []Function{fixedV4L{10, "bcm2835-codec-decode"}, fixedV4L{11, "bcm2835-codec-encode"}, fixedV4L{12, "bcm2835-codec-isp"}, fixedV4L{18, "bcm2835-codec-image_fx"}}},
		Platform{Dev: Dev{Name: "bcm2835-isp", Sub: "bus/platform", Driver: "bcm2835-isp", Uevent: []string{"MODALIAS=platform:bcm2835-isp"}},
			Functions: []Function{fixedV4L{13, "bcm2835-isp"}, fixedV4L{14, "bcm2835-isp"}, fixedV4L{15, "bcm2835-isp"}, fixedV4L{16, "bcm2835-isp"}}},
	}}

// fixedV4L is a video node whose driver asks for a fixed number (video_nr).
type fixedV4L struct {
	n    int
	card string
}

func (f fixedV4L) layoutBelow(b *builder, parent string, _ funcCtx) {
	name := "video" + itoa(f.n)
	b.add(parent+"/video4linux", Dev{Name: name, Sub: "class/video4linux",
		Attrs: map[string]string{"name": f.card, "index": "0", "dev_debug": "0"}},
		&Node{Name: name, Major: 81, Minor: uint32(f.n)})
}

// JetsonXavier is a Jetson AGX Xavier's GPU at /sys/devices/gpu.0 (L4T
// R32–R35; autowarefoundation/autoware_universe#11326 reports both
// /sys/devices/gpu.0 and /sys/devices/platform/gpu.0 on Xavier).
var JetsonXavier = JetsonGPU{N: 0, Driver: "gv11b"}

// JetsonOrin is a Jetson Orin's GPU, only at /sys/devices/platform/gpu.0
// (L4T R36; same report).
var JetsonOrin = JetsonGPU{N: 0, Platform: true, Driver: "ga10b"}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
