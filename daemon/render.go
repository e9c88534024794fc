package daemon

import (
	"strconv"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/plugin"
)

// The device plugin's rendering of a resource: its ListAndWatch list and
// Allocate answer (a plugin.Snapshot), and the CDI spec of a rule with
// cdi: true (cdi.go). Both come from pluginEdits, so they cannot disagree.

// unitIDs are a unit's device IDs: a plain resource's are "0" …
// "count-1", the old daemon's own, so the kubelet's checkpoint still
// matches after a restart or a switch between daemons; a class member's
// are derived from its key (conf.Member.IDs).
func unitIDs(key string, count int) []string {
	if key != "" {
		return conf.Member{Key: key}.IDs(count)
	}
	ids := make([]string, count)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	return ids
}

// healthy reports whether the device plugin advertises a unit's IDs as
// healthy: present, and for a plain resource, with its required
// companions. A class member counts as healthy while present, as class
// resources always have: checking its companions too would make a class
// whose companion appears late (nvidia-uvm) unallocatable until it does.
func healthy(r resource, u unit) bool {
	return u.present() && !u.flapping && (r.class || !u.content.MissingCompanion)
}

// pluginEdits is what the device plugin hands a container for one ID of
// unit u: its nodes, and for a plain resource its environment and mounts.
// A class's IDs are handed out several to one container, and Allocate
// answers one environment per container; class members get their nodes
// only.
func pluginEdits(r resource, u unit) ([]plugin.DeviceSpec, map[string]string, []plugin.Mount) {
	var specs []plugin.DeviceSpec
	for _, n := range u.content.Nodes {
		specs = append(specs, plugin.DeviceSpec(n))
	}
	if r.class {
		return specs, nil, nil
	}
	var mounts []plugin.Mount
	for _, m := range u.content.Mounts {
		mounts = append(mounts, plugin.Mount(m))
	}
	return specs, u.content.Env, mounts
}

// snapshot renders a resource for its plugin server.
func snapshot(r resource) plugin.Snapshot {
	snap := plugin.Snapshot{CDIKind: r.cdiKind}
	for _, u := range r.units {
		specs, env, mounts := pluginEdits(r, u)
		ids := unitIDs(u.key, r.count)
		for _, id := range ids {
			snap.Devices = append(snap.Devices, plugin.Device{ID: id, Healthy: healthy(r, u), NUMANode: u.content.NUMANode, HasNUMA: u.content.HasNUMA})
		}
		if !r.class {
			// A class of one: every ID hands out the same.
			snap.Specs, snap.Envs, snap.Mounts = specs, env, mounts
			continue
		}
		if snap.PerDevice == nil {
			snap.PerDevice = make(map[string][]plugin.DeviceSpec)
		}
		for _, id := range ids {
			snap.PerDevice[id] = specs
		}
	}
	return snap
}

// preferredAllocation reports whether a resource offers the kubelet
// GetPreferredAllocation: only where the choice of IDs matters. A class
// resource's IDs stand for different devices; IDs with a NUMA node let the
// choice follow the pod's placement. Every ID of any other resource hands
// out the same nodes, and the kubelet's extra round trip before each
// Allocate would be pure cost.
func preferredAllocation(r resource) bool {
	if r.class {
		return true
	}
	for _, u := range r.units {
		if u.content.HasNUMA {
			return true
		}
	}
	return false
}
