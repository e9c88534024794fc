package daemon

import (
	"strconv"

	"github.com/smarter-project/smarter-device-manager/conf"
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

// plainSnapshot renders the content of a plain resource for its server:
// count IDs that all hand out the same content, healthy unless told
// otherwise or a required companion is missing.
func plainSnapshot(count int, c content, healthy bool) plugin.Snapshot {
	snap := plugin.Snapshot{
		Devices: deviceIDs(count, healthy && !c.MissingCompanion),
		Specs:   deviceSpecs(c.Nodes),
		Envs:    c.Env,
		Mounts:  pluginMounts(c.Mounts),
	}
	for i := range snap.Devices {
		snap.Devices[i].NUMANode, snap.Devices[i].HasNUMA = c.NUMANode, c.HasNUMA
	}
	return snap
}

// deviceSpecs renders device nodes as Allocate returns them.
func deviceSpecs(nodes []deviceNode) []plugin.DeviceSpec {
	var specs []plugin.DeviceSpec
	for _, n := range nodes {
		specs = append(specs, plugin.DeviceSpec(n))
	}
	return specs
}

// pluginMounts renders mounts as Allocate returns them.
func pluginMounts(mounts []conf.Mount) []plugin.Mount {
	var out []plugin.Mount
	for _, m := range mounts {
		out = append(out, plugin.Mount(m))
	}
	return out
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
