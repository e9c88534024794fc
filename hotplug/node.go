package hotplug

import (
	"fmt"
	"io/fs"
	"syscall"

	"golang.org/x/sys/unix"
)

// What the inode of a device node says: its device number and owner. The
// FileInfo comes from fs.Stat or fs.Lstat over the device root (in
// production os.DirFS("/dev"), whose FileInfo.Sys is a *syscall.Stat_t).

// NodeRdev returns the device number of a device node's FileInfo (from
// fs.Stat, fs.Lstat or DirEntry.Info) and whether it is a block device.
// ok is false when fi is not a device or carries no *syscall.Stat_t (an
// fstest.MapFS file without one in its Sys field).
func NodeRdev(fi fs.FileInfo) (major, minor uint32, block, ok bool) {
	m := fi.Mode()
	st, isStat := fi.Sys().(*syscall.Stat_t)
	if m&fs.ModeDevice == 0 || !isStat {
		return 0, 0, false, false
	}
	rdev := uint64(st.Rdev) // uint32 on some platforms
	return unix.Major(rdev), unix.Minor(rdev), m&fs.ModeCharDevice == 0, true
}

// Rdev returns the device number of the node at name in fsys (a Node.Path
// from ScanDev over os.DirFS("/dev")) and whether it is a block device. It
// does not follow a symlink. It is an error when name is not a device or
// fsys gives no *syscall.Stat_t.
func Rdev(fsys fs.FS, name string) (major, minor uint32, block bool, err error) {
	fi, err := fs.Lstat(fsys, name)
	if err != nil {
		return 0, 0, false, fmt.Errorf("rdev: %w", err)
	}
	major, minor, block, ok := NodeRdev(fi)
	if !ok {
		return 0, 0, false, fmt.Errorf("rdev %s: no device number (mode %v)", name, fi.Mode())
	}
	return major, minor, block, nil
}

// NodeGID returns the group that owns the node at name in fsys, following
// a symlink as stat(2) does: the group a container that does not run as
// root must be in to open the node. It is an error when fsys gives no
// *syscall.Stat_t.
func NodeGID(fsys fs.FS, name string) (uint32, error) {
	fi, err := fs.Stat(fsys, name)
	if err != nil {
		return 0, fmt.Errorf("node group: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("node group %s: no owner (no *syscall.Stat_t)", name)
	}
	return st.Gid, nil
}
