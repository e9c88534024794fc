package conf

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// fakeIdent is a device's identity as the daemon would read it; attrs are
// levels from the device up to its root ancestor.
type fakeIdent struct {
	subsystem string
	props     map[string]string
	levels    []map[string]string
	unit      UnitID
}

func (f fakeIdent) Unit() UnitID      { return f.unit }
func (f fakeIdent) Subsystem() string { return f.subsystem }
func (f fakeIdent) Property(k string) (string, bool) {
	v, ok := f.props[k]
	return v, ok
}
func (f fakeIdent) MatchAttributes(attrs map[string]*regexp.Regexp) bool {
	for _, level := range f.levels {
		all := true
		for k, re := range attrs {
			if v, ok := level[k]; !ok || !re.MatchString(v) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func ftdi(serial string) fakeIdent {
	return fakeIdent{
		subsystem: "tty",
		props:     map[string]string{"ID_VENDOR_ID": "0403", "ID_SERIAL_SHORT": serial},
		levels: []map[string]string{
			{"dev": "188:0"},
			{"bInterfaceNumber": "00"},
			{"idVendor": "0403", "idProduct": "6001", "serial": serial},
		},
	}
}

const gpsYAML = `version: v1
rules:
  - match: ^ttyUSB[0-9]+$
    name: gps
    subsystem: tty
    properties:
      ID_VENDOR_ID: "0403"
    attributes:
      idVendor: "0403"
      idProduct: "6001"
      serial: A1B2C3
  - match: ^ttyUSB[0-9]+$
    subsystem: tty
`

const gpsTOML = `version = "v1"
[[rule]]
match = "^ttyUSB[0-9]+$"
name = "gps"
subsystem = "tty"
[rule.properties]
ID_VENDOR_ID = "0403"
[rule.attributes]
idVendor = "0403"
idProduct = "6001"
serial = "A1B2C3"
[[rule]]
match = "^ttyUSB[0-9]+$"
subsystem = "tty"
`

func TestIdentityRulesParseAlike(t *testing.T) {
	y, err := Parse("r.yaml", []byte(gpsYAML))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := Parse("r.toml", []byte(gpsTOML))
	if err != nil {
		t.Fatal(err)
	}
	for i := range y.Rules {
		a, b := y.Rules[i], tm.Rules[i]
		if a.Subsystem != b.Subsystem || !reflect.DeepEqual(a.Properties, b.Properties) || !reflect.DeepEqual(a.Attributes, b.Attributes) {
			t.Errorf("rule %d: YAML %+v, TOML %+v", i, a, b)
		}
	}
	if got := y.Rules[0].Attributes["serial"]; got != "A1B2C3" {
		t.Errorf("serial = %q", got)
	}
}

// Two identical adapters told apart by serial: the named rule takes the one
// with the serial, the other falls to the generic rule; a device whose
// identity is unknown matches only rules that ask for none.
func TestResolveByIdentity(t *testing.T) {
	cfg, err := Parse("r.yaml", []byte(gpsYAML))
	if err != nil {
		t.Fatal(err)
	}
	res, warns := cfg.Resolve("smarter-devices", []Device{
		{Path: "ttyUSB0", Ident: ftdi("ZZZ999")},
		{Path: "ttyUSB1", Ident: ftdi("A1B2C3")},
		{Path: "ttyUSB2"}, // identity unknown
	}, nil)
	got := map[string]string{}
	for _, r := range res {
		got[r.Name] = r.Path
	}
	want := map[string]string{"smarter-devices/gps": "ttyUSB1", "smarter-devices/ttyUSB0": "ttyUSB0"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("resources = %v, want %v (warnings %v)", got, want, warns)
	}
	// The serial moves with the adapter: after a replug as ttyUSB0 the
	// resource name stays "gps".
	res, _ = cfg.Resolve("smarter-devices", []Device{{Path: "ttyUSB0", Ident: ftdi("A1B2C3")}}, nil)
	if len(res) != 1 || res[0].Name != "smarter-devices/gps" || res[0].Path != "ttyUSB0" {
		t.Errorf("after renumbering: %+v", res)
	}
}

// ATTRS semantics: every attribute on the same ancestor.
func TestAttributesOnOneAncestor(t *testing.T) {
	cfg, err := Parse("r.yaml", []byte("version: v1\nrules:\n  - match: ^ttyUSB0$\n    attributes:\n      idVendor: \"0403\"\n      bInterfaceNumber: \"00\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := cfg.Resolve("p", []Device{{Path: "ttyUSB0", Ident: ftdi("X")}}, nil); len(res) != 0 {
		t.Errorf("attributes split over two ancestors matched: %+v", res)
	}
}

// Whole-value patterns: "0403" does not match "04031".
func TestIdentityPatternsAreWhole(t *testing.T) {
	cfg, err := Parse("r.yaml", []byte("version: v1\nrules:\n  - match: ^ttyUSB0$\n    properties:\n      ID_VENDOR_ID: \"040\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := cfg.Resolve("p", []Device{{Path: "ttyUSB0", Ident: ftdi("X")}}, nil); len(res) != 0 {
		t.Errorf("a prefix pattern matched: %+v", res)
	}
}

func TestIdentityErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"r.yaml", "version: v1\nrules:\n  - match: ^a$\n    properties:\n      ID_MODEL: \"[\"\n", "r.yaml:5: rules[0].properties.ID_MODEL: invalid regexp"},
		{"r.yaml", "version: v1\nrules:\n  - match: ^a$\n    attributes:\n      ../../etc: x\n", "rules[0].attributes.../../etc: an attribute must be a relative path"},
		{"r.yaml", "version: v1\nrules:\n  - match: ^a$\n    properties: [x]\n", "r.yaml:4: rules[0].properties: must be a mapping"},
		{"r.yaml", "version: v1\nrules:\n  - match: nvidia-gpu\n    subsystem: tty\n", "do not apply to nvidia-gpu"},
		{"r.toml", "version = \"v1\"\n[[rule]]\nmatch = \"^a$\"\nsubsystem = 3\n", "rule[0].subsystem: must be a string"},
		{"r.yaml", "- devicematch: ^a$\n  subsystem: tty\n", `unknown field "subsystem"`},
	} {
		_, err := Parse(tc.name, []byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.text, err, tc.want)
		}
	}
	// Same match, different identity: not a duplicate.
	if _, err := Parse("r.yaml", []byte("version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    properties: {ID_SERIAL_SHORT: A}\n  - match: ^ttyUSB[0-9]+$\n    properties: {ID_SERIAL_SHORT: B}\n")); err != nil {
		t.Errorf("rules told apart by identity reported as duplicates: %v", err)
	}
}

func TestNameTemplates(t *testing.T) {
	cfg, err := Parse("r.yaml", []byte("version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    name: gps-{ID_SERIAL_SHORT}\n  - match: ^video[0-9]+$\n    name: cam-{path}-{ID_MODEL}\n"))
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("Very_Long_Camera_Model_", 5)
	cam := fakeIdent{props: map[string]string{"ID_MODEL": long}}
	res, warns := cfg.Resolve("smarter-devices", []Device{
		{Path: "ttyUSB3", Ident: ftdi("A1B2C3")},
		{Path: "ttyUSB4", Ident: fakeIdent{}}, // no serial: skipped, with a warning
		{Path: "video0", Ident: cam},
	}, nil)
	if len(res) != 2 {
		t.Fatalf("resources %+v, warnings %v", res, warns)
	}
	if res[1].Name != "smarter-devices/gps-A1B2C3" || res[1].Socket != "smarter-gps-A1B2C3.sock" {
		t.Errorf("serial template gave %+v", res[1])
	}
	part := strings.TrimPrefix(res[0].Name, "smarter-devices/")
	if len(part) > 63 || !strings.HasPrefix(part, "cam-video0-Very_Long") || ValidResourceName(res[0].Name) != nil {
		t.Errorf("long name %q (%d characters) not shortened to a valid name", part, len(part))
	}
	again, _ := cfg.Resolve("smarter-devices", []Device{{Path: "video0", Ident: cam}}, nil)
	if again[0].Name != res[0].Name {
		t.Errorf("shortened name not stable: %q then %q", res[0].Name, again[0].Name)
	}
	other, _ := cfg.Resolve("smarter-devices", []Device{{Path: "video0", Ident: fakeIdent{props: map[string]string{"ID_MODEL": long + "2"}}}}, nil)
	if other[0].Name == res[0].Name {
		t.Errorf("two long names that differ only at the end shortened to the same %q", res[0].Name)
	}
	if len(warns) != 1 || warns[0].Device != "ttyUSB4" || !strings.Contains(warns[0].Msg, "no property ID_SERIAL_SHORT") {
		t.Errorf("warnings %v; want one naming ttyUSB4 and the missing property", warns)
	}
	for _, bad := range []string{"gps-{ID SERIAL}", "gps-{", "-{path}"} {
		if _, err := Parse("r.yaml", []byte("version: v1\nrules:\n  - match: ^a$\n    name: \""+bad+"\"\n")); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

func TestClassResolve(t *testing.T) {
	cfg, err := Parse("r.toml", []byte("version = \"v1\"\n[[rule]]\nmatch = \"^ttyUSB[0-9]+$\"\nclass = \"usb-serial\"\n[[rule]]\nmatch = \"^video[0-9]+$\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	// Units as the daemon reads them from sysfs (hotplug.Reader.Unit).
	unit := func(key, port, sys string) fakeIdent {
		return fakeIdent{unit: UnitID{Key: key, PortKey: port, SysPath: sys}}
	}
	clone := func(port string) fakeIdent { // no serial number: keyed by port
		k := "usb-0000_00_14.0-" + port
		return unit(k, k, "devices/pci0000:00/0000:00:14.0/usb1/1-"+port)
	}
	// Two adapters that report the same serial number "0001".
	same := func(port string) fakeIdent {
		return unit("10c4_ea60_0001", "usb-0000_00_14.0-"+port, "devices/pci0000:00/0000:00:14.0/usb1/1-"+port)
	}
	res, warns := cfg.Resolve("smarter-devices", []Device{
		{Path: "ttyUSB0", Ident: unit("0403_6001_A1", "usb-0000_00_14.0-1", "devices/pci0000:00/0000:00:14.0/usb1/1-1")},
		{Path: "ttyUSB1", Ident: clone("2")},
		{Path: "ttyUSB2", Ident: clone("3")},  // a clone: told apart by its port
		{Path: "ttyUSB3"},                     // identity unknown: its path
		{Path: "ttyUSB4", Ident: clone("3")},  // a second node of the device on port 3
		{Path: "ttyUSB5", Ident: fakeIdent{}}, // sysfs does not know it: its path
		{Path: "ttyUSB6", Ident: same("4")},
		{Path: "ttyUSB7", Ident: same("5")},
		{Path: "video0"},
	}, nil)
	if len(res) != 2 || res[0].Name != "smarter-devices/usb-serial" || res[1].Name != "smarter-devices/video0" {
		t.Fatalf("resources %+v", res)
	}
	var keys []string
	for _, m := range res[0].Members {
		keys = append(keys, m.Key)
	}
	want := []string{"0403_6001_A1", "usb-0000_00_14.0-2", "usb-0000_00_14.0-3", "ttyUSB3", "ttyUSB5", "usb-0000_00_14.0-4", "usb-0000_00_14.0-5"}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("member keys %v, want %v", keys, want)
	}
	if o := res[0].Members[2].Others; len(o) != 1 || o[0].Path != "ttyUSB4" {
		t.Errorf("the device on port 3 has other nodes %v, want ttyUSB4", o)
	}
	if len(warns) != 2 || warns[0].Device != "ttyUSB6" || warns[1].Device != "ttyUSB7" {
		t.Errorf("warnings %v, want one for each adapter sharing serial 0001", warns)
	}
	if got := (Member{Key: "K"}).IDs(3); !reflect.DeepEqual(got, []string{"K-0", "K-1", "K-2"}) {
		t.Errorf("IDs(3) = %v", got)
	}
	for _, bad := range []string{
		"version: v1\nrules:\n  - match: ^a$\n    class: c\n    name: n\n",
		"version: v1\nrules:\n  - match: ^a$\n    class: c\n  - match: ^b$\n    class: c\n",
		"version: v1\nrules:\n  - match: ^a$\n    class: -c\n",
	} {
		if _, err := Parse("r.yaml", []byte(bad)); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}

func TestWithAndMounts(t *testing.T) {
	cfg, err := Parse("r.toml", []byte("version = \"v1\"\n[[rule]]\nmatch = \"^nvidia[0-9]+$\"\nwith = [\"nvidiactl\", \"nvidia-uvm-tools?\"]\nmounts = [\"/a:/b:ro\", \"/c:/d\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Rules[0]
	if !reflect.DeepEqual(r.With, []Companion{{"nvidiactl", false}, {"nvidia-uvm-tools", true}}) ||
		!reflect.DeepEqual(r.Mounts, []Mount{{"/a", "/b", true}, {"/c", "/d", false}}) {
		t.Errorf("with %v, mounts %v", r.With, r.Mounts)
	}
	for _, bad := range []string{
		"with: [../etc/passwd]", "with: [/dev/mem]", "mounts: [\"/a\"]", "mounts: [\"a:/b\"]", "mounts: [\"/a:/b:rx\"]", "with: nvidiactl",
	} {
		if _, err := Parse("r.yaml", []byte("version: v1\nrules:\n  - match: ^a$\n    "+bad+"\n")); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}
