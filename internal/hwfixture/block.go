package hwfixture

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
	"testing/fstest"
)

// Block devices, as the block layer lays them out (block/genhd.c
// device_add_disk, block/partitions/core.c add_partition, block/holder.c
// bd_link_disk_holder; Documentation/ABI/stable/sysfs-block): a disk is a
// class "block" device below its driver's device, …/block/<disk>, and its
// partitions are directories inside it, …/block/<disk>/<disk><n>.
// /sys/block/<disk> links to each disk (sys_block(5)), /sys/class/block and
// /sys/dev/block to disks and partitions alike. A disk has holders/ and
// slaves/ directories, a partition holders/ only; a device stacked on
// others (device-mapper, md) links slaves/<below> in itself and
// holders/<itself> in each device below it.
//
// udev's storage rules (60-persistent-storage.rules, which run blkid on
// the real device) are not mirrored: with udev, a block node's database
// entry carries none of their properties, a lack and never a property
// real udev would not set. No catalog machine has a disk, so
// TestMatchesRealUdev does not cover them.

// Block majors are dynamic (register_blkdev(0, …) hands out free ones from
// 254 down); these are what a Debian VM usually shows.
const (
	VirtblkMajor = 254 // virtio_blk ("virtblk")
	DMMajor      = 253 // device-mapper
)

// VirtioDisk is a virtio-blk disk (drivers/block/virtio_blk.c) on a PCI
// function of a VM, with partitions: /dev/vda, /dev/vda1, …
type VirtioDisk struct {
	Addr   string // the PCI function: "0000:00:04.0"
	Virtio int    // the virtio device's index: …/0000:00:04.0/virtio<Virtio>
	// Index is the disk's index: vda is 0, vdb 1. virtio_blk gives each
	// disk 16 minors (PART_BITS 4), so its minors start at Index*16.
	Index      int
	Partitions int // partitions 1 … Partitions
}

func (d VirtioDisk) layout(b *builder) {
	root := b.ensure("devices", Dev{Name: "pci0000:00"})
	// virtio-pci's block device as QEMU presents it (1af4:1042, class
	// 018000: mass storage, other).
	pci := b.add(root, pciDev(d.Addr, "virtio-pci", "1af4", "1042", "018000"), nil)
	// drivers/virtio/virtio.c virtio_uevent: MODALIAS=virtio:d<device>v<vendor>.
	vdev := b.add(pci, Dev{Name: fmt.Sprintf("virtio%d", d.Virtio), Sub: "bus/virtio", Driver: "virtio_blk",
		Uevent: []string{"MODALIAS=virtio:d00000002v00001AF4"},
		Attrs:  map[string]string{"device": "0x0002", "vendor": "0x1af4"}}, nil)
	name := "vd" + string(rune('a'+d.Index))
	minor := uint32(d.Index * 16)
	disk := b.disk(vdev+"/block", name, VirtblkMajor, minor, nil)
	for i := 1; i <= d.Partitions; i++ {
		b.partition(disk, i, VirtblkMajor, minor+uint32(i))
	}
}

// Mapper is a device-mapper device (drivers/md/dm.c; dm-sysfs.c for its
// dm/ attributes) mapped onto block devices already plugged, as LVM or
// dm-crypt make one: /sys/devices/virtual/block/dm-<N>, /dev/dm-<N>, and
// the holder links of bd_link_disk_holder to each device below it.
type Mapper struct {
	N    int            // dm-<N>, with minor N
	Name string         // its dm/name: "vg0-data"
	On   []*PluggedNode // the block devices it maps onto
}

func (mp Mapper) layout(b *builder) {
	name := fmt.Sprintf("dm-%d", mp.N)
	dm := b.disk("devices/virtual/block", name, DMMajor, uint32(mp.N), map[string]string{
		"dm/name": mp.Name, "dm/uuid": "LVM-" + strings.ReplaceAll(mp.Name, "-", ""), "dm/suspended": "0"})
	for _, n := range mp.On {
		b.link(dm+"/slaves/"+path.Base(n.SysPath), n.SysPath)
		b.link(n.SysPath+"/holders/"+name, dm)
	}
}

// DiskVM is a VM with three virtio disks in use in every way the daemon
// must notice: vda with two partitions, vda1 mounted at /var/lib/kubelet;
// vdb with one partition that dm-0 (LVM's vg0-data) maps onto, dm-0
// mounted at "/srv/my data"; vdc unused. It is not one of Machines, as no
// disk is (see above).
func DiskVM() *Machine {
	m := New(false)
	vda := m.Plug(VirtioDisk{Addr: "0000:00:04.0", Virtio: 2, Index: 0, Partitions: 2})
	vdb := m.Plug(VirtioDisk{Addr: "0000:00:05.0", Virtio: 3, Index: 1, Partitions: 1})
	m.Plug(VirtioDisk{Addr: "0000:00:06.0", Virtio: 4, Index: 2})
	dm := m.Plug(Mapper{N: 0, Name: "vg0-data", On: []*PluggedNode{vdb.Node("vdb1")}})
	m.Mount(vda.Node("vda1"), "/var/lib/kubelet", "ext4")
	m.Mount(dm.Node("dm-0"), "/srv/my data", "xfs")
	return m
}

// disk lays out the disk name below dir (…/block) with its node, its
// holders/ and slaves/ directories and its /sys/block link, and returns
// its directory.
func (b *builder) disk(dir, name string, major, minor uint32, attrs map[string]string) string {
	b.m.diskSeq++
	a := map[string]string{"size": "41943040", "ro": "0", "removable": "0"}
	for k, v := range attrs {
		a[k] = v
	}
	// block/genhd.c disk_uevent: DISKSEQ= after the node's lines.
	d := b.add(dir, Dev{Name: name, Sub: "class/block", Uevent: []string{fmt.Sprintf("DISKSEQ=%d", b.m.diskSeq)}, Attrs: a},
		&Node{Name: name, Major: major, Minor: minor, Block: true, DevType: "disk"})
	b.m.Sys.Put(d+"/holders", &fstest.MapFile{Mode: fs.ModeDir | 0o755})
	b.m.Sys.Put(d+"/slaves", &fstest.MapFile{Mode: fs.ModeDir | 0o755})
	b.link("block/"+name, d)
	return d
}

// partition lays out partition n of the disk at dir. Its name is the
// disk's and n, with a "p" between when the disk's name ends in a digit
// (add_partition: nvme0n1p1, mmcblk0p1).
func (b *builder) partition(dir string, n int, major, minor uint32) string {
	disk := path.Base(dir)
	name := fmt.Sprintf("%s%d", disk, n)
	if c := disk[len(disk)-1]; c >= '0' && c <= '9' {
		name = fmt.Sprintf("%sp%d", disk, n)
	}
	// block/partitions/core.c part_uevent: PARTN=.
	p := b.add(dir, Dev{Name: name, Sub: "class/block", Uevent: []string{fmt.Sprintf("PARTN=%d", n)},
		Attrs: map[string]string{"partition": fmt.Sprint(n), "start": fmt.Sprint(2048 * n), "size": "2097152", "ro": "0"}},
		&Node{Name: name, Major: major, Minor: minor, Block: true, DevType: "partition"})
	b.m.Sys.Put(p+"/holders", &fstest.MapFile{Mode: fs.ModeDir | 0o755})
	return p
}

// link makes the sysfs link at (a path below /sys) to the directory to,
// as part of the hardware being plugged.
func (b *builder) link(at, to string) {
	b.m.Sys.Put(at, linkFile(relLink(at, to)))
	b.p.owned = append(b.p.owned, at)
}

// relLink is the target sysfs writes for a link at `at` to `to`: up from
// the link's directory to their common ancestor, then down
// (fs/kernfs/symlink.c kernfs_get_target_path):
// block/vda → ../devices/…/block/vda, and
// devices/…/vdb1/holders/dm-0 → ../../../../../../../virtual/block/dm-0.
func relLink(at, to string) string {
	from, dst := strings.Split(path.Dir(at), "/"), strings.Split(to, "/")
	i := 0
	for i < len(from) && i < len(dst) && from[i] == dst[i] {
		i++
	}
	return strings.Repeat("../", len(from)-i) + strings.Join(dst[i:], "/")
}

// baseMounts is the mount table of a machine with nothing mounted from its
// disks: the daemon in a container (an overlay root) with /proc, the
// host's /dev and /sys, and a /run.
var baseMounts = []string{
	"21 1 0:40 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/containerd/l/A:/var/lib/containerd/l/B,upperdir=/var/lib/containerd/u,workdir=/var/lib/containerd/w",
	"22 21 0:42 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw",
	"23 21 0:5 / /dev rw,nosuid,relatime master:2 - devtmpfs udev rw,size=4017588k,nr_inodes=1004397,mode=755",
	"24 21 0:21 / /sys rw,nosuid,nodev,noexec,relatime master:3 - sysfs sysfs rw",
	"25 21 0:25 / /run rw,nosuid,nodev,noexec,relatime master:4 - tmpfs tmpfs rw,size=803520k,mode=755",
}

// Mount adds a filesystem of type fstype on the block device n, mounted at
// mountpoint, to the mount table, as a line of /proc/self/mountinfo
// (proc_pid_mountinfo(5); Documentation/filesystems/proc.rst, "3.5
// /proc/<pid>/mountinfo"): mount ID, parent ID, major:minor, root, mount
// point, options, optional fields, "-", type, source, super options.
func (m *Machine) Mount(n *PluggedNode, mountpoint, fstype string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := 21 + len(m.mountinfo)
	m.mountinfo = append(m.mountinfo, fmt.Sprintf("%d 21 %d:%d / %s rw,relatime shared:%d - %s /dev/%s rw",
		id, n.Major, n.Minor, mountEscape(mountpoint), id, fstype, n.Path))
	m.writeMounts()
}

func (m *Machine) writeMounts() {
	m.Proc.Put("self/mountinfo", textFile(strings.Join(m.mountinfo, "\n")))
}

// mountEscape writes space, tab, newline and backslash in octal, as the
// kernel's show_mountinfo (fs/proc_namespace.c, seq_path_root with
// " \t\n\\") does: "/mnt/my disk" → "/mnt/my\040disk".
func mountEscape(p string) string {
	var b strings.Builder
	for _, c := range []byte(p) {
		if strings.IndexByte(" \t\n\\", c) >= 0 {
			fmt.Fprintf(&b, "\\%03o", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
