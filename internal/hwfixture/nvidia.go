package hwfixture

import (
	"io/fs"
	"syscall"
	"testing/fstest"

	"golang.org/x/sys/unix"
)

// NvidiaGPU is a discrete NVIDIA GPU bound to NVIDIA's own driver
// (nvidia.ko, 10de:<device>, PCI class 030200 "3D controller"). That
// driver registers its character devices with register_chrdev and creates
// no class device, so its nodes have no sysfs directory and no
// /sys/dev/char link, and the kernel sends no uevent for them: nvidia-modprobe
// (or the CUDA installation guide's "Device Node Verification" script)
// makes them with mknod — /dev/nvidia<N> c 195 N, /dev/nvidiactl c 195 255,
// /dev/nvidia-modeset c 195 254, /dev/nvidia-uvm c <nvidia-uvm's dynamic
// major> 0 and /dev/nvidia-uvm-tools c <same> 1. udev knows none of them.
func NvidiaGPU(addr string, minor uint32, numa int) PCIDevice {
	return PCIDevice{Bridge: "pci0000:00", Addr: addr, Driver: "nvidia",
		Vendor: "10de", Device: "1eb8", Class: "030200", NUMANode: numa, // 1eb8: Tesla T4
		Functions: []Function{mknodNodes{
			{Name: "nvidia" + itoa(int(minor)), Major: 195, Minor: minor},
			{Name: "nvidiactl", Major: 195, Minor: 255},
			{Name: "nvidia-modeset", Major: 195, Minor: 254},
			{Name: "nvidia-uvm", Major: nvidiaUVMMajor, Minor: 0},
			{Name: "nvidia-uvm-tools", Major: nvidiaUVMMajor, Minor: 1},
		}}}
}

// nvidiaUVMMajor is nvidia-uvm's major: dynamic (alloc_chrdev_region), 508
// on many hosts; /proc/devices names it.
const nvidiaUVMMajor = 508

// mknodNodes are nodes a user-space tool made in /dev with mknod: no sysfs
// device, no udev database entry.
type mknodNodes []Node

func (ns mknodNodes) layoutBelow(b *builder, _ string, _ funcCtx) {
	for _, n := range ns {
		b.m.Dev.Put(n.Name, &fstest.MapFile{Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, Sys: &syscall.Stat_t{Rdev: unix.Mkdev(n.Major, n.Minor)}})
		b.m.used[n.Name] = true
		b.p.Nodes = append(b.p.Nodes, &PluggedNode{Path: n.Name, Major: n.Major, Minor: n.Minor})
	}
}
