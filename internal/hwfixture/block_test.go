package hwfixture

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// Unplugging a mapper and its disks leaves sysfs and /dev as they were,
// shared parents aside: no holder link dangles on a disk still there, no
// /sys/block link outlives its disk.
func TestBlockUnplugLeavesNothing(t *testing.T) {
	m := New(false)
	m.Plug(VirtioDisk{Addr: "0000:00:04.0", Virtio: 2, Index: 0, Partitions: 1}) // makes the shared PCI root
	sys, dev := slices.Sorted(maps.Keys(m.Sys.Snapshot())), slices.Sorted(maps.Keys(m.Dev.Snapshot()))

	vdb := m.Plug(VirtioDisk{Addr: "0000:00:05.0", Virtio: 3, Index: 1, Partitions: 2})
	dm := m.Plug(Mapper{N: 0, Name: "vg0-data", On: []*PluggedNode{vdb.Node("vdb1"), vdb.Node("vdb2")}})
	if !m.Sys.Has("devices/pci0000:00/0000:00:05.0/virtio3/block/vdb/vdb2/holders/dm-0") || !m.Sys.Has("block/dm-0") {
		t.Fatal("the mapper laid out no holder link or no /sys/block link")
	}
	m.Unplug(dm)
	if m.Sys.Has("devices/pci0000:00/0000:00:05.0/virtio3/block/vdb/vdb1/holders/dm-0") {
		t.Error("vdb1 still lists dm-0 as a holder after dm-0 went")
	}
	m.Unplug(vdb)
	if got := slices.Sorted(maps.Keys(m.Sys.Snapshot())); !slices.Equal(got, sys) {
		t.Errorf("sysfs after unplugging: only left %q, only gone %q", minus(got, sys), minus(sys, got))
	}
	if got := slices.Sorted(maps.Keys(m.Dev.Snapshot())); !slices.Equal(got, dev) {
		t.Errorf("/dev after unplugging: %q, want %q", got, dev)
	}
}

// A mount table line is what the kernel writes: the device number in the
// third field, a mount point with a space in octal.
func TestMountLine(t *testing.T) {
	m := New(false)
	vda := m.Plug(VirtioDisk{Addr: "0000:00:04.0", Virtio: 2, Index: 0, Partitions: 1})
	m.Mount(vda.Node("vda1"), "/srv/my data", "ext4")
	data, err := m.Proc.ReadFile("self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	want := "26 21 254:1 / /srv/my\\040data rw,relatime shared:26 - ext4 /dev/vda1 rw"
	if last := lines[len(lines)-1]; last != want {
		t.Errorf("mount line %q, want %q", last, want)
	}
}
