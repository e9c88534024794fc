package conf

import (
	"fmt"
	"strings"
	"testing"
)

func TestValidResourceName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"smarter-devices/ttyUSB0", true},
		{"smarter-devices/net_tun", true},
		{"example.com/a.b-c_d", true},
		{"smarter-devices/" + strings.Repeat("a", 63), true},
		{"a/b", true},
		{strings.Repeat("a", 244) + "/x", true},  // "requests." + domain is 253
		{strings.Repeat("a", 245) + "/x", false}, // "requests." + domain is 254
		{"smarter-devices/" + strings.Repeat("a", 64), false},
		{"ttyUSB0", false},                // no domain: a native resource
		{"smarter-devices/", false},       // empty name
		{"/ttyUSB0", false},               // empty domain
		{"smarter-devices/_x", false},     // must start alphanumeric
		{"smarter-devices/x-", false},     // must end alphanumeric
		{"smarter-devices/a/b", false},    // one slash only
		{"smarter-devices/a b", false},    // no spaces
		{"Smarter-Devices/x", false},      // domain is lowercase
		{"-smarter/x", false},             // domain label starts alphanumeric
		{"smarter..devices/x", false},     // empty label
		{"kubernetes.io/x", false},        // native
		{"foo.kubernetes.io/x", false},    // native
		{"requests.example.com/x", false}, // would clash with quota names
		{"smarter-devices/nvidia-gpu0", true},
	}
	for _, tt := range tests {
		err := ValidResourceName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidResourceName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestValidPrefix(t *testing.T) {
	tests := []struct {
		prefix string
		ok     bool
	}{
		{"smarter-devices", true},
		{"devices.example.com", true},
		{"", false},
		{"UPPER", false},
		{"a_b", false},
		{"x/y", false},
		{"kubernetes.io", false},
		{"requests.x", false},
	}
	for _, tt := range tests {
		if err := ValidPrefix(tt.prefix); (err == nil) != tt.ok {
			t.Errorf("ValidPrefix(%q) = %v, want ok=%v", tt.prefix, err, tt.ok)
		}
	}
	// The length limit: a DNS subdomain's 253 less "requests.", which a
	// pod's requests put before an extended resource's name. Found by
	// make mutate: nothing reached it.
	subdomain := func(n int) string {
		b := []byte(strings.Repeat(strings.Repeat("a", 62)+".", n/63+1)[:n])
		if b[n-1] == '.' {
			b[n-1] = 'b'
		}
		return string(b)
	}
	if err := ValidPrefix(subdomain(244)); err != nil {
		t.Errorf("a 244-character prefix: %v, want ok", err)
	}
	want := fmt.Sprintf("resource prefix %q is longer than 244 characters", subdomain(245))
	if err := ValidPrefix(subdomain(245)); err == nil || err.Error() != want {
		t.Errorf("a 245-character prefix: %v, want %q", err, want)
	}
}

func TestSanitize(t *testing.T) {
	tests := map[string]string{
		"ttyUSB0":         "ttyUSB0",
		"net/tun":         "net_tun",
		"snd/controlC0":   "snd_controlC0",
		"i2c-1":           "i2c-1",
		"bus/usb/001/002": "bus_usb_001_002",
		"v4l/by-id/a:b.c": "v4l_by-id_a_b_c",
		"caf\u00e9":       "caf_", // one '_' per character, not per byte
	}
	for in, want := range tests {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

// Found by make mutate (conf's lived mutants): a device ID keeps '.',
// letters, digits, '_' and '-' and turns anything else into '_'; a name
// part of exactly 63 characters is kept, one of 64 shortened to 63; a
// rule needs a device's identity for any name variable but {path}.
func TestIDSafeShortenNeedsIdentity(t *testing.T) {
	if got := idSafe("usb-0403.6001 A1/B2é"); got != "usb-0403.6001_A1_B2_" {
		t.Errorf("idSafe = %q", got)
	}
	exact := strings.Repeat("a", 63)
	if got := shorten(exact); got != exact {
		t.Errorf("shorten(63 characters) = %q, want it kept", got)
	}
	if got := shorten(exact + "b"); len(got) != 63 || !strings.HasPrefix(got, strings.Repeat("a", 54)+"-") {
		t.Errorf("shorten(64 characters) = %q, want 54 of them, a dash and 8 hex digits", got)
	}
	for rules, want := range map[string]bool{
		"version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    name: gps-{path}\n":            false,
		"version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    name: gps-{ID_SERIAL_SHORT}\n": true,
		// A property after {path} counts as much as a first one.
		"version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    name: '{path}-{ID_SERIAL_SHORT}'\n": true,
		"version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n":                                       false,
	} {
		c, err := Parse("rules.yaml", []byte(rules))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Rules[0].NeedsIdentity(); got != want {
			t.Errorf("NeedsIdentity of %q = %v, want %v", rules, got, want)
		}
	}
}
