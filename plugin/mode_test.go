package plugin_test

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin"
)

// nobody is the uid (and gid) of a user with no rights on a root-owned
// socket of mode 0600.
const nobody = 65534

// With umask 0, our socket is still created 0600 and owned by us, a user
// that is not root cannot connect to it, and the plugin directory's other
// files keep their modes (a neighbour's socket 0777 that nobody can reach
// is the control: the directory itself lets nobody through).
func TestSocketModeWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0) // this test binary's own process; restored below
	t.Cleanup(func() { syscall.Umask(old) })
	dir := testutil.ShortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil { // our temporary directory: searchable by anyone
		t.Fatal(err)
	}
	neighbour, err := net.Listen("unix", filepath.Join(dir, "other.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer neighbour.Close()
	note := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(note, []byte("not ours"), 0o644); err != nil {
		t.Fatal(err)
	}
	modes := func() map[string]fs.FileMode {
		out := map[string]fs.FileMode{}
		for _, p := range []string{neighbour.Addr().String(), note} {
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			out[p] = fi.Mode()
		}
		return out
	}
	before := modes()

	k := startKubelet(t, dir)
	srv := run(t, plugin.NewServer(options(t, dir), ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
	waitRegistered(t, k, 1)
	fi, err := os.Lstat(srv.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	if want := fs.ModeSocket | plugin.SocketMode; fi.Mode() != want {
		t.Errorf("our socket has mode %v with umask 0; want %v", fi.Mode(), want)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() {
		t.Errorf("our socket is owned by uid %d; want ours, %d", uid, os.Geteuid())
	}

	if os.Geteuid() != 0 {
		t.Log("not root: connecting as another user is not tried")
	} else {
		if err := dialAs(t, srv.SocketPath(), nobody); !errors.Is(err, syscall.EACCES) {
			t.Errorf("uid %d connecting to our socket: %v; want EACCES", nobody, err)
		}
		if err := dialAs(t, neighbour.Addr().String(), nobody); err != nil {
			t.Errorf("uid %d connecting to a 0777 socket in the same directory: %v; want it to connect (the control)", nobody, err)
		}
	}

	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	if after := modes(); after[note] != before[note] || after[neighbour.Addr().String()] != before[neighbour.Addr().String()] {
		t.Errorf("the plugin directory's other files changed: before %v, after %v", before, after)
	}
}

// dialAs connects to the unix socket at path as filesystem uid uid, the
// identity connect(2) checks the socket's mode against. setfsuid changes
// only the calling thread, which is locked to this goroutine meanwhile and
// dropped (not unlocked) if it cannot be given back its own uid.
func dialAs(t *testing.T, path string, uid int) error {
	t.Helper()
	type result struct {
		err     error
		applied bool
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		prev, _, _ := syscall.RawSyscall(syscall.SYS_SETFSUID, uintptr(uid), 0, 0)
		cur, _, _ := syscall.RawSyscall(syscall.SYS_SETFSUID, ^uintptr(0), 0, 0) // -1: only reads it
		var err error
		if int(cur) == uid {
			var fd int
			fd, err = syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
			if err == nil {
				err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: path})
				syscall.Close(fd)
			}
		}
		syscall.RawSyscall(syscall.SYS_SETFSUID, prev, 0, 0)
		if back, _, _ := syscall.RawSyscall(syscall.SYS_SETFSUID, ^uintptr(0), 0, 0); back == prev {
			runtime.UnlockOSThread()
		}
		done <- result{err: err, applied: int(cur) == uid}
	}()
	r := <-done
	if !r.applied {
		testutil.SkipEnv(t, "cannot take filesystem uid %d here", uid)
	}
	return r.err
}

// A symbolic link at our socket path (to a file elsewhere) is replaced by
// our socket; the file it pointed to is left as it was.
func TestSymlinkAtOurPathLeavesItsTarget(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	elsewhere := filepath.Join(testutil.ShortTempDir(t), "precious")
	if err := os.WriteFile(elsewhere, []byte("keep me"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, socketName)); err != nil {
		t.Fatal(err)
	}
	k := startKubelet(t, dir)
	srv := run(t, plugin.NewServer(options(t, dir), ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
	waitRegistered(t, k, 1)
	if fi, err := os.Lstat(srv.SocketPath()); err != nil || fi.Mode() != fs.ModeSocket|plugin.SocketMode {
		t.Errorf("our socket path: %v, %v; want our socket", fi, err)
	}
	fi, err := os.Lstat(elsewhere)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o640 {
		t.Fatalf("the link's target: %v, %v; want the file as it was", fi, err)
	}
	if b, err := os.ReadFile(elsewhere); err != nil || string(b) != "keep me" {
		t.Errorf("the link's target now holds %q, %v", b, err)
	}
}
