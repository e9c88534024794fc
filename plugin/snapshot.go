package plugin

import (
	"maps"
	"slices"
)

// Device is one device of a resource, as ListAndWatch reports it.
type Device struct {
	// ID is the device ID the kubelet checkpoints; it must be stable
	// across restarts of the daemon.
	ID string
	// Healthy devices are allocatable; unhealthy ones are reported to the
	// kubelet but refused by Allocate.
	Healthy bool
	// NUMANode is the device's NUMA node when HasNUMA: the kubelet's
	// topology manager then aligns it with the pod's CPUs and memory.
	NUMANode int
	HasNUMA  bool
}

// DeviceSpec is one device node Allocate hands to a container.
type DeviceSpec struct {
	HostPath      string // path on the host, e.g. /dev/ttyUSB0
	ContainerPath string // path inside the container
	Permissions   string // cgroup permissions: some of "r", "w", "m"
}

// Mount is a host path mounted into a container.
type Mount struct {
	HostPath, ContainerPath string
	ReadOnly                bool
}

// Snapshot is the whole state of one resource. The server keeps its own
// copy; the caller may reuse its slices and map after Update returns.
type Snapshot struct {
	// Devices is the whole list, as every ListAndWatch message sends it.
	Devices []Device
	// Specs is what Allocate returns for a container; it is the same for
	// every device ID of this resource.
	Specs []DeviceSpec
	// Envs is the environment Allocate returns for a container
	// (e.g. NVIDIA_VISIBLE_DEVICES).
	Envs map[string]string
	// Mounts are host paths Allocate mounts into a container.
	Mounts []Mount
	// CDIKind, when set ("vendor/class"), makes Allocate name CDI devices
	// (kind=ID) for the runtime to apply from its spec file, instead of
	// returning specs, environment and mounts itself.
	CDIKind string
	// PerDevice holds the specs of IDs that stand for different devices
	// (a class resource: one ID per adapter): Allocate adds those of every
	// ID it hands out, after Specs.
	PerDevice map[string][]DeviceSpec
}

func (s Snapshot) clone() Snapshot {
	return Snapshot{
		Devices: slices.Clone(s.Devices),
		Specs:   slices.Clone(s.Specs),
		Envs:    maps.Clone(s.Envs),
		Mounts:  slices.Clone(s.Mounts),
		CDIKind: s.CDIKind,
		PerDevice: func() map[string][]DeviceSpec {
			if s.PerDevice == nil {
				return nil
			}
			m := make(map[string][]DeviceSpec, len(s.PerDevice))
			for id, specs := range s.PerDevice {
				m[id] = slices.Clone(specs)
			}
			return m
		}(),
	}
}

// Equal reports whether two snapshots would advertise and allocate the
// same: every field counts, so a change in any of them reaches the kubelet
// (a test fails when a field is added here and not compared).
func (s Snapshot) Equal(o Snapshot) bool {
	return slices.Equal(s.Devices, o.Devices) &&
		slices.Equal(s.Specs, o.Specs) &&
		maps.Equal(s.Envs, o.Envs) &&
		slices.Equal(s.Mounts, o.Mounts) && s.CDIKind == o.CDIKind &&
		maps.EqualFunc(s.PerDevice, o.PerDevice, slices.Equal[[]DeviceSpec])
}

// state is an immutable view of the current snapshot; Update replaces it
// whole, so readers may use it after releasing the lock.
type state struct {
	snap   Snapshot
	health map[string]bool // device ID → healthy
}

func newState(snap Snapshot) *state {
	st := &state{snap: snap, health: make(map[string]bool, len(snap.Devices))}
	for _, d := range snap.Devices {
		st.health[d.ID] = d.Healthy
	}
	return st
}
