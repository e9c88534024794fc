// Package probe is the process the container tests (../container_*_test.go)
// run inside a real container, and its wire: the whole root filesystem is
// the static binary probe/run builds. It reads one Request per line, does
// it (open, read, write, mknod, stat a device node; list a directory; read
// the environment or a file) and answers one JSON Reply line with what it
// saw, failures as errno names (EPERM, EACCES, ENXIO).
package probe

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Request is one thing to try, as the test sends it.
type Request struct {
	Op   string `json:"op"` // id, stat, open, write, read, mknod, list, env, readfile, writefile
	Path string `json:"path,omitempty"`
	// Flags for open: "r", "w" or "rw".
	Flags string `json:"flags,omitempty"`
	// Data to write (write, writefile); for a block device it is written
	// at offset 0 of one 4096-byte block, with O_DIRECT.
	Data string `json:"data,omitempty"`
	// Len is how many bytes read returns.
	Len int `json:"len,omitempty"`
	// Type ("c" or "b"), Major and Minor for mknod.
	Type  string `json:"type,omitempty"`
	Major uint32 `json:"major,omitempty"`
	Minor uint32 `json:"minor,omitempty"`
}

// Reply is what the process saw.
type Reply struct {
	Op    string `json:"op"`
	Path  string `json:"path,omitempty"`
	Errno string `json:"errno,omitempty"` // "" when the call succeeded
	Error string `json:"error,omitempty"` // the whole message of a failure
	// stat: the node's type, numbers, owner and permission bits.
	Type  string `json:"type,omitempty"`
	Major uint32 `json:"major,omitempty"`
	Minor uint32 `json:"minor,omitempty"`
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	Mode  string `json:"mode,omitempty"`
	// id: the process's groups.
	Groups []int `json:"groups,omitempty"`
	// read, readfile: the bytes read.
	Data string `json:"data,omitempty"`
	// env: the whole environment.
	Env map[string]string `json:"env,omitempty"`
	// list: the directory's entries.
	Names []string `json:"names,omitempty"`
}

const block = 4096

// Serve answers every request of in on out, until in ends.
func Serve(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	for sc.Scan() {
		var req Request
		var rep Reply
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			rep = Reply{Op: "?", Errno: "?", Error: err.Error()}
		} else {
			rep = do(req)
		}
		if err := enc.Encode(rep); err != nil {
			return err
		}
	}
	return sc.Err()
}

func do(req Request) Reply {
	rep := Reply{Op: req.Op, Path: req.Path}
	var err error
	switch req.Op {
	case "id":
		rep.UID, rep.GID = uint32(os.Getuid()), uint32(os.Getgid())
		rep.Groups, err = os.Getgroups()
	case "stat":
		var st unix.Stat_t
		if err = unix.Stat(req.Path, &st); err == nil {
			rep.Type = fileType(st.Mode)
			rep.Major, rep.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
			rep.UID, rep.GID = st.Uid, st.Gid
			rep.Mode = fmt.Sprintf("%04o", st.Mode&0o7777)
		}
	case "open":
		var fd int
		if fd, err = unix.Open(req.Path, openFlags(req.Flags)|unix.O_CLOEXEC|unix.O_NONBLOCK, 0); err == nil {
			unix.Close(fd)
		}
	case "write":
		err = write(req.Path, req.Data)
	case "read":
		rep.Data, err = read(req.Path, req.Len)
	case "mknod":
		mode := uint32(unix.S_IFCHR)
		if req.Type == "b" {
			mode = unix.S_IFBLK
		}
		err = unix.Mknod(req.Path, mode|0o666, int(unix.Mkdev(req.Major, req.Minor)))
	case "list":
		var ents []os.DirEntry
		ents, err = os.ReadDir(req.Path)
		for _, e := range ents {
			rep.Names = append(rep.Names, e.Name())
		}
	case "env":
		rep.Env = map[string]string{}
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			rep.Env[k] = v
		}
	case "readfile":
		var b []byte
		b, err = os.ReadFile(req.Path)
		rep.Data = string(b)
	case "writefile":
		err = os.WriteFile(req.Path, []byte(req.Data), 0o644)
	default:
		err = fmt.Errorf("unknown op %q", req.Op)
	}
	if err != nil {
		rep.Error = err.Error()
		rep.Errno = "?"
		var errno unix.Errno
		if errors.As(err, &errno) {
			rep.Errno = unix.ErrnoName(errno)
		}
	}
	return rep
}

func openFlags(f string) int {
	switch f {
	case "w":
		return unix.O_WRONLY
	case "rw":
		return unix.O_RDWR
	}
	return unix.O_RDONLY
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFCHR:
		return "c"
	case unix.S_IFBLK:
		return "b"
	case unix.S_IFDIR:
		return "d"
	case unix.S_IFREG:
		return "f"
	case unix.S_IFLNK:
		return "l"
	}
	return "?"
}

// isBlock reports whether path is a block device: those are written and
// read a whole block at a time with O_DIRECT, so that what the process
// saw went to the device, not to a page cache.
func isBlock(path string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false, err
	}
	return st.Mode&unix.S_IFMT == unix.S_IFBLK, nil
}

// alignedBlock is one block of memory aligned as O_DIRECT needs: an
// anonymous mapping starts on a page.
func alignedBlock() ([]byte, func(), error) {
	b, err := unix.Mmap(-1, 0, block, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = unix.Munmap(b) }, nil
}

func write(path, data string) error {
	blk, err := isBlock(path)
	if err != nil {
		return err
	}
	flags := unix.O_WRONLY | unix.O_CLOEXEC
	buf := []byte(data)
	if blk {
		b, free, err := alignedBlock()
		if err != nil {
			return err
		}
		defer free()
		copy(b, data)
		buf, flags = b, flags|unix.O_DIRECT|unix.O_SYNC
	}
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	n, err := unix.Pwrite(fd, buf, 0)
	if err == nil && n != len(buf) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(buf))
	}
	return err
}

func read(path string, n int) (string, error) {
	blk, err := isBlock(path)
	if err != nil {
		return "", err
	}
	flags := unix.O_RDONLY | unix.O_CLOEXEC
	buf := make([]byte, n)
	if blk {
		b, free, err := alignedBlock()
		if err != nil {
			return "", err
		}
		defer free()
		buf, flags = b, flags|unix.O_DIRECT
	}
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	got, err := unix.Pread(fd, buf, 0)
	if err != nil {
		return "", err
	}
	return string(buf[:min(got, n)]), nil
}

// Result is how a report shows an answer: "ok" or the errno name.
func (r Reply) Result() string {
	if r.Errno == "" {
		return "ok"
	}
	return r.Errno
}

// Node describes a stat answer: "b 252:3 0660 0:6".
func (r Reply) Node() string {
	return fmt.Sprintf("%s %d:%d %s %d:%d", r.Type, r.Major, r.Minor, r.Mode, r.UID, r.GID)
}
