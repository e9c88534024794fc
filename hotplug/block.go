package hotplug

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"strconv"
)

// BlockUse is how the host uses one block device, as sysfs and the mount
// table say.
type BlockUse struct {
	// Name is the kernel's name of the device: "vda1", "dm-0".
	Name string
	// Mounted is true when a filesystem in the mount table is on the
	// device or, for a disk, on one of its partitions.
	Mounted bool
	// Holders are the devices stacked on it (device-mapper, md), in name
	// order: the entries of its holders directory, which
	// bd_link_disk_holder (block/holder.c) fills, as
	// /sys/block/sda/holders/dm-0 for a dm-0 that maps onto sda.
	Holders []string
}

// WithProc has r read the mount table for BlockUse from procFS, rooted at
// the proc root (in production os.DirFS("/proc")): self/mountinfo, the
// mounts of the reading process's own mount namespace. It returns r.
// Without it BlockUse sees no mounted filesystem.
func (r *Reader) WithProc(procFS fs.FS) *Reader {
	r.proc = procFS
	return r
}

// BlockUse reads how the host uses the block device major:minor: it
// follows <sys>/dev/block/<major>:<minor> to the device directory, looks
// the device up in the mount table, and lists its holders directory. The
// mount table is read once per Reader, at the first call. A device
// unknown to sysfs is an error wrapping fs.ErrNotExist. An unreadable
// mount table counts as empty, and a device without a holders directory
// as held by none.
func (r *Reader) BlockUse(major, minor uint32) (BlockUse, error) {
	id := strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10)
	dir, err := r.resolve("dev/block/" + id)
	if err != nil {
		return BlockUse{}, fmt.Errorf("sysfs block %s: %w", id, err)
	}
	u := BlockUse{Name: path.Base(dir)}
	u.Mounted = r.mountedNames()[u.Name]
	if holders, err := fs.ReadDir(r.sys, dir+"/holders"); err == nil {
		for _, h := range holders {
			u.Holders = append(u.Holders, h.Name())
		}
	}
	return u, nil
}

// mountedNames returns the kernel names of the block devices holding a
// mounted filesystem, and of the disks those are partitions of: a
// partition's directory is inside its disk's (…/block/vda/vda1, Documentation/
// ABI/stable/sysfs-block), a disk's inside a plain "block" directory.
func (r *Reader) mountedNames() map[string]bool {
	if r.mounted != nil {
		return r.mounted
	}
	r.mounted = map[string]bool{}
	if r.proc == nil {
		return r.mounted
	}
	data, err := fs.ReadFile(r.proc, "self/mountinfo")
	if err != nil {
		return r.mounted
	}
	for id := range parseMountinfo(data) {
		dir, err := r.resolve("dev/block/" + id)
		if err != nil {
			continue // not a block device: proc, tmpfs, overlay (major 0)
		}
		r.mounted[path.Base(dir)] = true
		if parent := path.Base(path.Dir(dir)); parent != "block" {
			r.mounted[parent] = true
		}
	}
	return r.mounted
}

// parseMountinfo returns the device numbers ("major:minor") of the
// filesystems in a mountinfo file: the third field of each line
// (proc_pid_mountinfo(5); Documentation/filesystems/proc.rst, "3.5
// /proc/<pid>/mountinfo"), the st_dev of files on that filesystem.
func parseMountinfo(data []byte) map[string]bool {
	out := map[string]bool{}
	for line := range bytes.Lines(data) {
		if fields := bytes.Fields(line); len(fields) > 2 {
			out[string(fields[2])] = true
		}
	}
	return out
}
