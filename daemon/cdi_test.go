package daemon

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// cdi: true names CDI devices in Allocate and writes their spec (0644) for
// the runtime; the spec goes when the resource does.
func TestCDI(t *testing.T) {
	cdiDir := filepath.Join(testutil.ShortTempDir(t), "cdi")
	rules := "version: v1\nrules:\n  - match: ^null$\n    count: 2\n    cdi: true\n    env: {A: b}\n    mounts: [\"/etc/hostname:/etc/node-name:ro\"]\n"
	h := newHarness(t, rules, func(o *Options) {
		o.DevFS = os.DirFS("/dev")
		o.CDIDir = cdiDir
	})
	const res = "smarter-devices/null"
	h.waitFor(res, "served", health(2, pluginapi.Healthy))
	resp := h.allocate(res, "1")
	c := resp.ContainerResponses[0]
	if len(c.CdiDevices) != 1 || c.CdiDevices[0].Name != "smarter-devices/null=1" || len(c.Devices) != 0 {
		t.Errorf("allocation %v; want only the CDI device smarter-devices/null=1", c)
	}
	file := filepath.Join(cdiDir, "smarter-devices-null.json")
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("spec mode %v, want 0644", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(file)
	var spec cdispec.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Kind != "smarter-devices/null" || len(spec.Devices) != 2 || spec.Devices[1].Name != "1" {
		t.Fatalf("spec %s", raw)
	}
	edits := spec.Devices[1].ContainerEdits
	if len(edits.DeviceNodes) != 1 || edits.DeviceNodes[0].Path != "/dev/null" || edits.DeviceNodes[0].HostPath != "/dev/null" ||
		len(edits.Env) != 1 || edits.Env[0] != "A=b" || len(edits.Mounts) != 1 || edits.Mounts[0].Options[1] != "ro" {
		t.Errorf("device 1's edits: %s", raw)
	}
	if err := cdispec.ValidateVersion(&spec); err != nil {
		t.Errorf("spec version: %v", err)
	}
	h.stop()
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("spec still there after the daemon stopped: %v", err)
	}
}

// owner gives a CDI device's nodes the rule's owner and mode, so that a
// non-root container opens them with no extra group; a rule without owner
// leaves them to the runtime.
func TestCDIOwner(t *testing.T) {
	cdiDir := filepath.Join(testutil.ShortTempDir(t), "cdi")
	rules := "version: v1\nrules:\n  - match: ^null$\n    cdi: true\n    owner: {uid: 1000, gid: 1001, mode: \"0660\"}\n" +
		"  - match: ^zero$\n    cdi: true\n"
	h := newHarness(t, rules, func(o *Options) {
		o.DevFS = os.DirFS("/dev")
		o.CDIDir = cdiDir
	})
	h.waitFor("smarter-devices/null", "served", health(1, pluginapi.Healthy))
	h.waitFor("smarter-devices/zero", "served", health(1, pluginapi.Healthy))
	node := func(kind string) *cdispec.DeviceNode {
		t.Helper()
		raw, err := os.ReadFile(filepath.Join(cdiDir, kind+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var spec cdispec.Spec
		if err := json.Unmarshal(raw, &spec); err != nil {
			t.Fatal(err)
		}
		if err := cdispec.ValidateVersion(&spec); err != nil {
			t.Errorf("%s: spec version: %v", kind, err)
		}
		if len(spec.Devices) != 1 || len(spec.Devices[0].ContainerEdits.DeviceNodes) != 1 {
			t.Fatalf("%s: spec %s", kind, raw)
		}
		return spec.Devices[0].ContainerEdits.DeviceNodes[0]
	}
	n := node("smarter-devices-null")
	if n.UID == nil || *n.UID != 1000 || n.GID == nil || *n.GID != 1001 || n.FileMode == nil || *n.FileMode != 0o660 {
		t.Errorf("null's node: uid %v gid %v mode %v; want 1000, 1001, 0660", deref(n.UID), deref(n.GID), deref(n.FileMode))
	}
	if z := node("smarter-devices-zero"); z.UID != nil || z.GID != nil || z.FileMode != nil {
		t.Errorf("zero's node (no owner): uid %v gid %v mode %v; want none set", deref(z.UID), deref(z.GID), deref(z.FileMode))
	}
}

// deref shows a pointer's value in a message, or nil.
func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// A unit's whole content as CDI edits, for an output that hands each
// unit over on its own (a DRA claim): nodes with the rule's owner and
// mode, the environment sorted, mounts with their mode.
func TestContentCDIEdits(t *testing.T) {
	c := Content{
		Nodes:  []DeviceNode{{HostPath: "/dev/ttyUSB0", ContainerPath: "/dev/gps0", Permissions: "rw"}},
		Env:    map[string]string{"B": "2", "A": "1"},
		Mounts: []conf.Mount{{HostPath: "/etc/gps", ContainerPath: "/etc/gps", ReadOnly: true}},
		Owner:  conf.Owner{UID: 1000, HasUID: true, Mode: 0o660, HasMode: true},
	}
	e := c.CDIEdits()
	uid, mode := uint32(1000), fs.FileMode(0o660)
	want := cdispec.ContainerEdits{
		Env:         []string{"A=1", "B=2"},
		DeviceNodes: []*cdispec.DeviceNode{{Path: "/dev/gps0", HostPath: "/dev/ttyUSB0", Permissions: "rw", UID: &uid, FileMode: &mode}},
		Mounts:      []*cdispec.Mount{{HostPath: "/etc/gps", ContainerPath: "/etc/gps", Options: []string{"bind", "ro"}}},
	}
	if !reflect.DeepEqual(e, want) {
		got, _ := json.Marshal(e)
		exp, _ := json.Marshal(want)
		t.Errorf("edits\n got %s\nwant %s", got, exp)
	}
}
