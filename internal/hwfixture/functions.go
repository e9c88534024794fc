package hwfixture

import (
	"fmt"
	"strconv"
	"strings"
)

// A Function is what a driver makes below its device: a tty, video nodes,
// a sound card.
type Function interface {
	layoutBelow(b *builder, parent string, ctx funcCtx)
}

// funcCtx tells a function about the device it is made for.
type funcCtx struct {
	usbName string // the USB device's name ("1-1.4"), or ""
}

// USBSerial is a usb-serial port (drivers/usb/serial/bus.c): a device
// ttyUSB<n> on the usb-serial bus, with the tty class device below it
// (…/1-1:1.0/ttyUSB0/tty/ttyUSB0), char 188:n.
type USBSerial struct {
	Driver string // "ftdi_sio", "cp210x", "ch341"
	Port   int    // port_number on a multi-port adapter
}

func (s USBSerial) layoutBelow(b *builder, parent string, _ funcCtx) {
	n := b.lowest("ttyUSB")
	name := "ttyUSB" + strconv.Itoa(n)
	port := b.add(parent, Dev{Name: name, Sub: "bus/usb-serial", Driver: s.Driver, Attrs: map[string]string{"port_number": strconv.Itoa(s.Port)}}, nil)
	b.add(port+"/tty", Dev{Name: name, Sub: "class/tty"}, &Node{Name: name, Major: 188, Minor: uint32(n)})
}

// ACM is a CDC ACM modem port: .../1-1:1.0/tty/ttyACM<n>, char 166:n
// (drivers/usb/class/cdc-acm.c).
type ACM struct{}

func (ACM) layoutBelow(b *builder, parent string, _ funcCtx) {
	n := b.lowest("ttyACM")
	name := "ttyACM" + strconv.Itoa(n)
	b.add(parent+"/tty", Dev{Name: name, Sub: "class/tty"}, &Node{Name: name, Major: 166, Minor: uint32(n)})
}

// V4L is one video4linux node: .../video4linux/video<n>, char 81:n, with
// the name and index attributes (drivers/media/v4l2-core/v4l2-dev.c). A
// UVC camera makes two below its control interface: index 0 for frames,
// index 1 for metadata.
type V4L struct {
	Card  string // the name attribute
	Index int
}

func (v V4L) layoutBelow(b *builder, parent string, _ funcCtx) {
	n := b.lowest("video")
	name := "video" + strconv.Itoa(n)
	b.add(parent+"/video4linux", Dev{Name: name, Sub: "class/video4linux",
		Attrs: map[string]string{"name": v.Card, "index": strconv.Itoa(v.Index), "dev_debug": "0"}},
		&Node{Name: name, Major: 81, Minor: uint32(n)})
}

// Media is a media controller node: .../media<n> (drivers/media/mc/mc-devnode.c).
type Media struct{ Model string }

func (md Media) layoutBelow(b *builder, parent string, _ funcCtx) {
	n := b.lowest("media")
	name := "media" + strconv.Itoa(n)
	b.add(parent, Dev{Name: name, Sub: "class/media", Attrs: map[string]string{"model": md.Model}},
		&Node{Name: name, Major: 238, Minor: uint32(n)})
}

// SoundCard is an ALSA card: .../sound/card<c> (a class device with no
// node) and its nodes below it, char 116 with the static minors of
// sound/core/sound.c (control c*32, PCM playback c*32+16+d, capture
// c*32+24+d, hwdep c*32+4+d).
type SoundCard struct {
	ID      string   // the card's id attribute ("U0x46d0x825", "PCH")
	Devices []string // "pcm0p", "pcm0c", "hw0": PCM and hwdep devices besides the control
}

func (s SoundCard) layoutBelow(b *builder, parent string, _ funcCtx) {
	c := b.lowest("snd/controlC")
	card := b.add(parent+"/sound", Dev{Name: fmt.Sprintf("card%d", c), Sub: "class/sound",
		Attrs: map[string]string{"id": s.ID, "number": strconv.Itoa(c)}}, nil)
	ctl := fmt.Sprintf("controlC%d", c)
	b.add(card, Dev{Name: ctl, Sub: "class/sound"}, &Node{Name: "snd/" + ctl, Major: 116, Minor: uint32(c * 32)})
	for _, d := range s.Devices {
		var name string
		var minor int
		switch {
		case strings.HasPrefix(d, "pcm"):
			dev, _ := strconv.Atoi(d[3 : len(d)-1])
			dir := d[len(d)-1:]
			name = fmt.Sprintf("pcmC%dD%d%s", c, dev, dir)
			minor = c*32 + 16 + dev
			if dir == "c" {
				minor = c*32 + 24 + dev
			}
		case strings.HasPrefix(d, "hw"):
			dev, _ := strconv.Atoi(d[2:])
			name = fmt.Sprintf("hwC%dD%d", c, dev)
			minor = c*32 + 4 + dev
		default:
			panic("hwfixture: unknown sound device " + d)
		}
		attrs := map[string]string{}
		if strings.HasPrefix(name, "pcm") {
			attrs["pcm_class"] = "generic"
		}
		b.add(card, Dev{Name: name, Sub: "class/sound", Attrs: attrs}, &Node{Name: "snd/" + name, Major: 116, Minor: uint32(minor)})
	}
}

// HIDRaw is what usbhid makes below a HID interface: the HID device
// <bus>:<vendor>:<product>.<seq> on the hid bus (drivers/hid/hid-core.c
// hid_add_device) and its hidraw node (drivers/hid/hidraw.c), class
// hidraw, a dynamic char major (241 here):
// …/1-2:1.3/0003:0D8C:013C.0001/hidraw/hidraw0.
type HIDRaw struct {
	Vendor, Product string // 4 hex digits, as the USB device's
	Name            string // HID_NAME: manufacturer and product strings
}

func (h HIDRaw) layoutBelow(b *builder, parent string, ctx funcCtx) {
	b.m.hidSeq++
	v, p := strings.ToUpper(h.Vendor), strings.ToUpper(h.Product)
	dev := b.add(parent, Dev{Name: fmt.Sprintf("0003:%s:%s.%04X", v, p, b.m.hidSeq), Sub: "bus/hid", Driver: "hid-generic",
		Uevent: []string{"HID_ID=0003:0000" + v + ":0000" + p, "HID_NAME=" + h.Name,
			"HID_PHYS=usb-" + baseName(strings.TrimSuffix(parent, "/"+baseName(parent))) + "/input" + parent[len(parent)-1:],
			"HID_UNIQ=", "MODALIAS=hid:b0003g0001v0000" + v + "p0000" + p},
		Raw: map[string][]byte{"report_descriptor": {0x05, 0x0c, 0x09, 0x01, 0xa1, 0x01, 0x15, 0x00, 0x25, 0x01, 0x09, 0xe9, 0x09, 0xea, 0x75, 0x01, 0x95, 0x02, 0x81, 0x02, 0x95, 0x06, 0x81, 0x01, 0xc0}}}, nil)
	n := b.lowest("hidraw")
	name := "hidraw" + strconv.Itoa(n)
	b.add(dev+"/hidraw", Dev{Name: name, Sub: "class/hidraw"}, &Node{Name: name, Major: 241, Minor: uint32(n)})
}
