package plugin

import (
	"reflect"
	"testing"
)

// fullSnapshot sets every field of Snapshot to something non-zero.
func fullSnapshot() Snapshot {
	return Snapshot{
		Devices:   []Device{{ID: "0", Healthy: true, NUMANode: 1, HasNUMA: true}},
		Specs:     []DeviceSpec{{HostPath: "/dev/ttyUSB0", ContainerPath: "/dev/gps0", Permissions: "rw"}},
		Envs:      map[string]string{"A": "b"},
		Mounts:    []Mount{{HostPath: "/etc/hostname", ContainerPath: "/etc/node-name", ReadOnly: true}},
		CDIKind:   "smarter-devices/null",
		PerDevice: map[string][]DeviceSpec{"0": {{HostPath: "/dev/video0", ContainerPath: "/dev/video0", Permissions: "rw"}}},
	}
}

// Equal and clone cover every field of Snapshot: a field added to the type
// and forgotten in either fails here, rather than making an update that
// changes only that field look like no change.
func TestSnapshotEqualCoversEveryField(t *testing.T) {
	full := fullSnapshot()
	v := reflect.ValueOf(full)
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if v.Field(i).IsZero() {
			t.Fatalf("fullSnapshot leaves %s zero: set it there, and compare it in Snapshot.Equal and copy it in clone", name)
		}
		// Only field i differs from the zero snapshot, and then from full.
		var only Snapshot
		reflect.ValueOf(&only).Elem().Field(i).Set(v.Field(i))
		if only.Equal(Snapshot{}) || (Snapshot{}).Equal(only) {
			t.Errorf("Snapshot.Equal ignores %s", name)
		}
		without := full
		reflect.ValueOf(&without).Elem().Field(i).SetZero()
		if without.Equal(full) || full.Equal(without) {
			t.Errorf("Snapshot.Equal ignores %s when the rest is set", name)
		}
	}
	if !full.Equal(fullSnapshot()) {
		t.Errorf("two equal snapshots are not Equal")
	}
	c := full.clone()
	if !reflect.DeepEqual(c, full) || !c.Equal(full) {
		t.Errorf("clone = %+v, want every field of %+v", c, full)
	}
}
