package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// A directory at our socket path is not ours to remove, even empty: listen
// fails (Run retries with backoff and says why) and the directory stays.
func TestListenKeepsADirectoryAtOurPath(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	s := NewServer(Options{ResourceName: "smarter-devices/x", Socket: "x.sock", Dir: dir}, Snapshot{})
	path := filepath.Join(dir, "x.sock")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	inst, err := s.listen()
	if err == nil {
		inst.stop(s)
		t.Fatal("listened in place of a directory")
	}
	t.Logf("listen: %v", err)
	if fi, err := os.Lstat(path); err != nil || !fi.IsDir() {
		t.Errorf("the directory at our path: %v, %v; want it kept", fi, err)
	}
}

// A file left at our socket path (a crashed run's socket, anything) is
// replaced at the first listen, not after a failed one and a retry. (make
// mutate: with the unlink's success taken for a failure, Run's retry hid it.)
func TestListenReplacesAStaleFileAtOnce(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	s := NewServer(Options{ResourceName: "smarter-devices/x", Socket: "x.sock", Dir: dir}, Snapshot{})
	path := filepath.Join(dir, "x.sock")
	if err := os.WriteFile(path, []byte("left by a crashed run"), 0o600); err != nil {
		t.Fatal(err)
	}
	inst, err := s.listen()
	if err != nil {
		t.Fatalf("listen over a stale file: %v", err)
	}
	defer inst.stop(s)
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Errorf("our path after listen: %v, %v; want our socket", fi, err)
	}
}

// listenUnix makes the socket 0600 under any umask: a looser one is never
// applied (the mode is set before bind), a stricter one is undone.
func TestListenUnixModeWhateverTheUmask(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	for _, umask := range []int{0, 0o022, 0o077, 0o277, 0o777} {
		old := syscall.Umask(umask) // this test binary's own process
		path := filepath.Join(dir, fmt.Sprintf("%o.sock", umask))
		lis, err := listenUnix(path)
		syscall.Umask(old)
		if err != nil {
			t.Fatalf("umask %#o: %v", umask, err)
		}
		lis.Close()
		if fi, err := os.Lstat(path); err != nil || fi.Mode() != fs.ModeSocket|socketMode {
			t.Errorf("umask %#o: socket %v; want mode %v", umask, modeOf(fi, err), fs.ModeSocket|socketMode)
		}
	}
}

// The socket file is 0600 from the moment bind(2) makes it, even with
// umask 0: the mode set before bind is what the file gets, with no
// fix-up after (which would leave a window in which anyone may connect).
func TestSocketCreated0600(t *testing.T) {
	old := syscall.Umask(0) // this test binary's own process
	defer syscall.Umask(old)
	path := filepath.Join(testutil.ShortTempDir(t), "s.sock")
	lc := net.ListenConfig{Control: setSocketMode}
	lis, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode() != fs.ModeSocket|socketMode {
		t.Errorf("socket as bind made it: %v; want mode %v", modeOf(fi, err), fs.ModeSocket|socketMode)
	}
}

// An accept error that is not temporary (ENOMEM, say) ends gRPC's Serve
// for the socket; it must reach the server, which serves anew, not end
// serving silently.
func TestAcceptErrorIsReported(t *testing.T) {
	h := newHub()
	defer h.stop()
	s := NewServer(Options{ResourceName: "smarter-devices/x", Socket: "x.sock", Dir: t.TempDir()}, Snapshot{})
	sock := h.serve("x.sock", failingAcceptor{}, s, make(chan struct{}))
	defer sock.close(0)
	select {
	case err := <-sock.failed:
		if !errors.Is(err, syscall.ENOMEM) {
			t.Errorf("reported %v; want the accept error", err)
		}
	case <-time.After(10 * time.Second): // a hang detector
		t.Fatal("a failed accept was not reported")
	}
}

// failingAcceptor fails every accept with ENOMEM, which is not temporary.
type failingAcceptor struct{}

func (failingAcceptor) AcceptUnix() (*net.UnixConn, error) {
	return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.ENOMEM)}
}
func (failingAcceptor) Close() error   { return nil }
func (failingAcceptor) Addr() net.Addr { return &net.UnixAddr{Net: "unix", Name: "x.sock"} }

// modeOf says what Lstat found: a mode, or the error.
func modeOf(fi fs.FileInfo, err error) string {
	if err != nil {
		return err.Error()
	}
	return fi.Mode().String()
}
