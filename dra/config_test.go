package dra

import (
	"strings"
	"testing"

	"github.com/smarter-project/smarter-device-manager/conf"
)

// A claim's opaque config sets the owner part by part over the rule's,
// for the requests it names (none: all), later configs over earlier; what
// the driver cannot use fails, saying why.
func TestClaimOwner(t *testing.T) {
	d, err := New(Options{DriverName: testDriver, NodeName: testNode, Client: fakeAPI()})
	if err != nil {
		t.Fatal(err)
	}
	rule := conf.Owner{UID: 1000, GID: 1000, HasUID: true, HasGID: true}
	cases := []struct {
		name    string
		configs []string
		want    conf.Owner
		err     string
	}{
		{"none: the rule's", nil, rule, ""},
		{"uid only", []string{`{"owner": {"uid": 0}}`}, conf.Owner{UID: 0, GID: 1000, HasUID: true, HasGID: true}, ""},
		{"mode", []string{`{"apiVersion": "sdm.example.com/v1", "kind": "DeviceConfig", "owner": {"mode": "0666"}}`},
			conf.Owner{UID: 1000, GID: 1000, HasUID: true, HasGID: true, Mode: 0o666, HasMode: true}, ""},
		{"the later wins", []string{`{"owner": {"gid": 5}}`, `{"owner": {"gid": 6}}`}, conf.Owner{UID: 1000, GID: 6, HasUID: true, HasGID: true}, ""},
		{"another request's", []string{`{"owner": {"gid": 5}}`}, rule, ""}, // Requests set below
		{"unknown field", []string{`{"owner": {"user": 5}}`}, rule, `unknown field "user"`},
		{"uid out of range", []string{`{"owner": {"uid": -1}}`}, rule, "owner.uid: must be between 0"},
		{"mode not octal", []string{`{"owner": {"mode": "rw"}}`}, rule, "owner.mode"},
		{"another version", []string{`{"apiVersion": "sdm.example.com/v2"}`}, rule, "apiVersion"},
		{"another kind", []string{`{"kind": "Pod"}`}, rule, "kind"},
	}
	for _, c := range cases {
		claim := allocated("u", []string{"x"}, c.configs...)
		if c.name == "another request's" {
			claim.Status.Allocation.Devices.Config[0].Requests = []string{"camera"}
		}
		got, err := d.owner(claim, "gps", rule)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err == "" && got != c.want:
			t.Errorf("%s: owner %+v, want %+v", c.name, got, c.want)
		}
	}
}
