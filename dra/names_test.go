package dra

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// A device's name is a DNS label made from its resource and key alone:
// readable where it can be, cut with a stable hash where it must be.
func TestDeviceName(t *testing.T) {
	long := strings.Repeat("a", 70)
	cases := []struct {
		resource, key, want string
	}{
		{"smarter-devices/ttyUSB0", "", "ttyusb0"},
		{"smarter-devices/net_tun", "", "net-tun"},
		{"smarter-devices/usb-serial", "0403_6001_A1B2C3", "usb-serial-0403-6001-a1b2c3"},
		{"smarter-devices/camera", "usb-0000_00_14.0-1.4", "camera-usb-0000-00-14-0-1-4"},
		{"smarter-devices/gps-A1B2C3", "", "gps-a1b2c3"},
		{"smarter-devices/" + long, "", strings.Repeat("a", 54) + "-" + nameHash("smarter-devices/"+long, "")},
		{"smarter-devices/usb-serial", long, "usb-serial-" + strings.Repeat("a", 43) + "-" + nameHash("smarter-devices/usb-serial", long)},
	}
	for _, c := range cases {
		got := DeviceName(c.resource, c.key)
		if got != c.want {
			t.Errorf("DeviceName(%q, %q) = %q, want %q", c.resource, c.key, got, c.want)
		}
		if errs := validation.IsDNS1123Label(got); len(errs) > 0 {
			t.Errorf("DeviceName(%q, %q) = %q: not a DNS label: %v", c.resource, c.key, got, errs)
		}
	}
	// Two long keys that share their first 54 characters keep distinct names.
	a, b := DeviceName("smarter-devices/c", long+"1"), DeviceName("smarter-devices/c", long+"2")
	if a == b {
		t.Errorf("two long keys share the name %q", a)
	}
}

// Units whose names meet (they differ only in case or punctuation) each
// get a name of their own; the others keep theirs.
func TestUniqueNames(t *testing.T) {
	ids := [][2]string{{"smarter-devices/ttyUSB0", ""}, {"smarter-devices/ttyusb0", ""}, {"smarter-devices/snd", ""}}
	var names []string
	for _, id := range ids {
		names = append(names, DeviceName(id[0], id[1]))
	}
	got := uniqueNames(names, ids)
	want := []string{"ttyusb0-" + nameHash(ids[0][0], ""), "ttyusb0-" + nameHash(ids[1][0], ""), "snd"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("names %q, want %q", got, want)
			break
		}
	}
}
