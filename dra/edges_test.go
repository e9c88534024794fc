package dra

import (
	"slices"
	"strings"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/dynamic-resource-allocation/deviceattribute"
	"k8s.io/utils/ptr"

	"github.com/smarter-project/smarter-device-manager/daemon"
)

// A restart with every device unplugged: nothing to read, everything
// carried. The pool still holds each carried device as it was published,
// in resource and key order, until its time; the one whose time has come
// is dropped. (make mutate found no test with more carried devices than
// present ones.)
func TestRenderPoolOnlyCarried(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	dev := func(name string) resourceapi.Device { return resourceapi.Device{Name: name} }
	carry := []carried{
		{res: "smarter-devices/usb-serial", key: "b", dev: dev("usb-serial-b")},
		{res: "smarter-devices/gps", key: "", dev: dev("gps"), until: now.Add(time.Minute)},
		{res: "smarter-devices/usb-serial", key: "a", dev: dev("usb-serial-a"), until: now},
	}
	pool, byName, kept := renderPool("device-manager.example.com", nil, carry, now)
	if len(byName) != 0 {
		t.Errorf("units by name %v; want none (no device present)", byName)
	}
	if len(pool) != 1 {
		t.Fatalf("%d slices; want 1", len(pool))
	}
	var got []string
	for _, d := range pool[0].Devices {
		got = append(got, d.Name)
	}
	if want := []string{"gps", "usb-serial-b"}; !slices.Equal(got, want) {
		t.Errorf("pool devices %v; want %v (usb-serial-a's time has come)", got, want)
	}
	if len(kept) != 2 {
		t.Errorf("still carried: %d; want 2", len(kept))
	}
}

// What a device publishes at the edges (found by make mutate): NUMA node 0
// is a node like any other, and no NUMA node is no attribute; a string of
// exactly the API's 64 characters is published, one longer is not.
func TestRenderDeviceEdges(t *testing.T) {
	res := daemon.Resource{Name: "smarter-devices/ttyUSB0", Count: 1}
	long := strings.Repeat("s", maxAttrLen)
	for _, tc := range []struct {
		name     string
		numa     int
		hasNUMA  bool
		serial   string
		wantNUMA *int64
		wantSer  string
	}{
		{"NUMA node 0", 0, true, long, ptr.To[int64](0), long},
		{"NUMA node 1", 1, true, long + "x", ptr.To[int64](1), ""},
		{"no NUMA node", 0, false, "A1B2C3", nil, "A1B2C3"},
		{"NUMA -1, as sysfs says none", -1, true, "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := daemon.Unit{Device: "ttyUSB0", Identity: daemon.Identity{Path: "ttyUSB0", Serial: tc.serial}}
			u.Content.NUMANode, u.Content.HasNUMA = tc.numa, tc.hasNUMA
			dev := renderDevice("device-manager.example.com", res, u, "ttyusb0")
			got, ok := dev.Attributes[deviceattribute.StandardDeviceAttributeNUMANode]
			switch {
			case tc.wantNUMA == nil && ok:
				t.Errorf("numaNode attribute %v; want none", got)
			case tc.wantNUMA != nil && (!ok || got.IntValue == nil || *got.IntValue != *tc.wantNUMA):
				t.Errorf("numaNode attribute %v (present %v); want %d", got, ok, *tc.wantNUMA)
			}
			if s := dev.Attributes[AttrSerial].StringValue; s == nil || *s != tc.wantSer {
				t.Errorf("serial attribute %v; want %q", s, tc.wantSer)
			}
		})
	}
}

// A name of exactly 63 characters is kept as it is; two units whose long
// names meet are each cut to fit with their hash, and stay DNS labels.
func TestNamesAtTheLimit(t *testing.T) {
	exact := strings.Repeat("a", maxNameLen)
	if got := DeviceName("smarter-devices/"+exact, ""); got != exact {
		t.Errorf("DeviceName of a 63-character name = %q, want it kept", got)
	}
	ids := [][2]string{{"smarter-devices/" + exact, ""}, {"smarter-devices/" + strings.ToUpper(exact), ""}}
	names := uniqueNames([]string{DeviceName(ids[0][0], ""), DeviceName(ids[1][0], "")}, ids)
	if names[0] == names[1] {
		t.Errorf("two units share the name %q", names[0])
	}
	for _, n := range names {
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			t.Errorf("%q is no DNS label: %v", n, errs)
		}
	}
}

// A driver name is a DNS subdomain the kubelet can use as a directory and
// socket name: 63 characters at most (63 taken, 64 refused); none given
// is the default. (make mutate: the limit's > could be >= unnoticed.)
func TestNewDriverNameLength(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{strings.Repeat("a", 59) + ".com", true},
		{strings.Repeat("a", 60) + ".com", false},
		{"Not_A.Domain", false},
	} {
		_, err := New(Options{DriverName: tc.name, NodeName: testNode, Client: fakeAPI()})
		if (err == nil) != tc.ok {
			t.Errorf("New with a %d-character driver name %q: %v; want ok %v", len(tc.name), tc.name, err, tc.ok)
		}
	}
	d, err := New(Options{NodeName: testNode, Client: fakeAPI()})
	if err != nil || d.opts.DriverName != DefaultDriverName {
		t.Errorf("New with no driver name: %v; want %q", err, DefaultDriverName)
	}
}
