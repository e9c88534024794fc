package daemon

import (
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/hotplug"
	"github.com/smarter-project/smarter-device-manager/plugin"
)

// deviceIDs are "0" … "count-1": the old daemon's own IDs, so kubelet's
// checkpoint still matches after a restart or a switch between daemons.
func deviceIDs(count int, healthy bool) []plugin.Device {
	devs := make([]plugin.Device, count)
	for i := range devs {
		devs[i] = plugin.Device{ID: strconv.Itoa(i), Healthy: healthy}
	}
	return devs
}

// buildSnapshot is what one resource's server advertises and allocates:
// count IDs, and the device nodes a container gets. A directory resource
// (/dev/snd) expands to every device node below it in this scan.
func buildSnapshot(res conf.Resource, nodes []hotplug.Node, devRoot string, healthy bool) plugin.Snapshot {
	snap := plugin.Snapshot{Devices: deviceIDs(res.Count, healthy)}
	if res.GPU != "" {
		snap.Envs = map[string]string{"NVIDIA_VISIBLE_DEVICES": res.GPU}
		return snap
	}
	spec := func(rel string) plugin.DeviceSpec {
		return plugin.DeviceSpec{
			HostPath:      filepath.Join(devRoot, filepath.FromSlash(rel)),
			ContainerPath: path.Join("/dev", rel),
			Permissions:   res.Permissions,
		}
	}
	if !res.Dir {
		if filepath.IsLocal(res.Path) {
			snap.Specs = []plugin.DeviceSpec{spec(res.Path)}
		}
		return snap
	}
	prefix := res.Path + "/"
	for _, n := range nodes {
		// Scanned paths are relative and clean; IsLocal keeps that promise
		// explicit: no host path outside the device root, ever.
		if !n.Dir && strings.HasPrefix(n.Path, prefix) && filepath.IsLocal(n.Path) {
			snap.Specs = append(snap.Specs, spec(n.Path))
		}
	}
	return snap
}

// absentSnapshot is the snapshot of a resource whose device has gone: every
// ID unhealthy (Allocate refuses them), the last known nodes kept, and the
// rule's current count and permissions applied in case a reload changed them.
func absentSnapshot(res conf.Resource, last plugin.Snapshot) plugin.Snapshot {
	snap := plugin.Snapshot{Devices: deviceIDs(res.Count, false), Envs: last.Envs}
	for _, s := range last.Specs {
		s.Permissions = res.Permissions
		snap.Specs = append(snap.Specs, s)
	}
	return snap
}

func snapshotsEqual(a, b plugin.Snapshot) bool {
	return slices.Equal(a.Devices, b.Devices) && slices.Equal(a.Specs, b.Specs) && maps.Equal(a.Envs, b.Envs)
}
