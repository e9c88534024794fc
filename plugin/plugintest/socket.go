package plugintest

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
)

// KubeletSocket is the base name of the fake kubelet's socket.
const KubeletSocket = "kubelet.sock"

// listenKubelet creates dir if needed, replaces a stale kubelet.sock in it
// and listens there. The listener leaves the file in place when closed
// (removeIfOurs removes it); id is the file's identity for that.
func listenKubelet(dir string) (lis *net.UnixListener, path string, id os.FileInfo, err error) {
	path = filepath.Join(dir, KubeletSocket)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil, fmt.Errorf("remove stale socket: %w", err)
	}
	lis, err = net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, "", nil, err
	}
	lis.SetUnlinkOnClose(false)
	if id, err = os.Stat(path); err != nil {
		lis.Close()
		return nil, "", nil, err
	}
	return lis, path, id, nil
}

// removeIfOurs removes path if it is still the file id: a kubelet.sock
// created since (a newer kubelet's) stays.
func removeIfOurs(path string, id os.FileInfo) {
	if fi, err := os.Stat(path); err == nil && os.SameFile(fi, id) && fi.ModTime().Equal(id.ModTime()) {
		_ = os.Remove(path)
	}
}

// WipeSockets removes every socket in dir except kubelet.sock, as the
// kubelet does when it starts; plugins are expected to notice and
// register again.
func WipeSockets(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("wipe sockets: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if e.Name() == KubeletSocket || e.Type()&fs.ModeSocket == 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wipe sockets: %w", err)
	}
	return nil
}
