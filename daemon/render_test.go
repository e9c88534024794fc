package daemon

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/plugin"
)

// The device plugin renders one resource value two ways, its Allocate
// answer (a snapshot) and its CDI spec: for every ID the CDI device must
// hand a container exactly what Allocate would, and the snapshot must
// advertise each unit's IDs with its health and NUMA node.
func TestRenderings(t *testing.T) {
	away := time.Unix(100, 0)
	gps := node("ttyUSB0")
	gps.Env = map[string]string{"B": "2", "A": "1"}
	gps.Mounts = []conf.Mount{{HostPath: "/etc/hostname", ContainerPath: "/etc/node-name", ReadOnly: true}}
	gps.NUMANode, gps.HasNUMA = 1, true
	gpu := node("nvidia0")
	gpu.MissingCompanion = true
	for _, tc := range []struct {
		name    string
		res     resource
		devices []plugin.Device
	}{
		{
			name:    "plain: count IDs, all the same",
			res:     resource{settings{name: "smarter-devices/gps", count: 2, cdiKind: "smarter-devices/gps"}, []unit{{device: "ttyUSB0", content: gps}}},
			devices: []plugin.Device{{ID: "0", Healthy: true, NUMANode: 1, HasNUMA: true}, {ID: "1", Healthy: true, NUMANode: 1, HasNUMA: true}},
		},
		{
			name:    "plain, away",
			res:     resource{settings{name: "smarter-devices/gps", count: 1}, []unit{{device: "ttyUSB0", content: gps, absentSince: away}}},
			devices: []plugin.Device{{ID: "0", NUMANode: 1, HasNUMA: true}},
		},
		{
			name:    "plain, a required companion missing",
			res:     resource{settings{name: "smarter-devices/nvidia0", count: 1}, []unit{{device: "nvidia0", content: gpu}}},
			devices: []plugin.Device{{ID: "0"}},
		},
		{
			name: "class: IDs from member keys, one away",
			res: resource{settings{name: "smarter-devices/cam", count: 2, class: true}, []unit{
				{key: "A", device: "video0", content: node("video0")},
				{key: "B", device: "video2", content: node("video2"), absentSince: away},
				{key: "C", device: "nvidia0", content: gpu}, // a class member's companions are not checked
			}},
			devices: []plugin.Device{{ID: "A-0", Healthy: true}, {ID: "A-1", Healthy: true}, {ID: "B-0"}, {ID: "B-1"}, {ID: "C-0", Healthy: true}, {ID: "C-1", Healthy: true}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := snapshot(tc.res)
			if !slices.Equal(snap.Devices, tc.devices) {
				t.Errorf("devices %v, want %v", snap.Devices, tc.devices)
			}
			if snap.CDIKind != tc.res.cdiKind {
				t.Errorf("CDI kind %q, want %q", snap.CDIKind, tc.res.cdiKind)
			}
			spec := cdiSpec("smarter-devices/x", tc.res)
			if len(spec.Devices) != len(snap.Devices) {
				t.Fatalf("%d CDI devices for %d IDs", len(spec.Devices), len(snap.Devices))
			}
			for i, d := range spec.Devices {
				id := snap.Devices[i].ID
				if d.Name != id {
					t.Errorf("CDI device %d is %q, ID %q", i, d.Name, id)
				}
				// What Allocate returns for id, from the snapshot.
				var nodes []string
				for _, s := range append(slices.Clone(snap.Specs), snap.PerDevice[id]...) {
					nodes = append(nodes, s.HostPath+"→"+s.ContainerPath+":"+s.Permissions)
				}
				var env []string
				for _, k := range slices.Sorted(maps.Keys(snap.Envs)) {
					env = append(env, k+"="+snap.Envs[k])
				}
				var cdiNodes []string
				for _, n := range d.ContainerEdits.DeviceNodes {
					cdiNodes = append(cdiNodes, n.HostPath+"→"+n.Path+":"+n.Permissions)
				}
				if len(nodes) == 0 || !slices.Equal(cdiNodes, nodes) {
					t.Errorf("ID %s: CDI nodes %v, Allocate %v", id, cdiNodes, nodes)
				}
				if !slices.Equal(d.ContainerEdits.Env, env) {
					t.Errorf("ID %s: CDI env %v, Allocate %v", id, d.ContainerEdits.Env, env)
				}
				if len(d.ContainerEdits.Mounts) != len(snap.Mounts) {
					t.Fatalf("ID %s: %d CDI mounts, Allocate %d", id, len(d.ContainerEdits.Mounts), len(snap.Mounts))
				}
				for j, m := range snap.Mounts {
					c := d.ContainerEdits.Mounts[j]
					if c.HostPath != m.HostPath || c.ContainerPath != m.ContainerPath || slices.Contains(c.Options, "ro") != m.ReadOnly {
						t.Errorf("ID %s: CDI mount %+v, Allocate %+v", id, c, m)
					}
				}
			}
		})
	}
}
