package plugintest

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// SilentKubelet listens on dir/kubelet.sock and accepts every connection
// but never reads or writes a byte: a hung kubelet. A plugin's Register
// call to it can only end by its own deadline. Stop it with Stop.
type SilentKubelet struct {
	path string
	lis  *net.UnixListener
	id   os.FileInfo
	done chan struct{}

	mu       sync.Mutex
	accepted int
	conns    []net.Conn
	changed  chan struct{} // closed and replaced on every accept
	stopOnce sync.Once
}

// StartSilentKubelet creates dir if needed, replaces a stale kubelet.sock
// and accepts connections on it.
func StartSilentKubelet(dir string) (*SilentKubelet, error) {
	path := filepath.Join(dir, KubeletSocket)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("silent kubelet: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("silent kubelet: remove stale socket: %w", err)
	}
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("silent kubelet: %w", err)
	}
	lis.SetUnlinkOnClose(false)
	s := &SilentKubelet{path: path, lis: lis, done: make(chan struct{}), changed: make(chan struct{})}
	if s.id, err = os.Stat(path); err != nil {
		lis.Close()
		return nil, fmt.Errorf("silent kubelet: %w", err)
	}
	go s.accept()
	return s, nil
}

func (s *SilentKubelet) accept() {
	defer close(s.done)
	for {
		c, err := s.lis.Accept()
		if err != nil {
			return // closed by Stop
		}
		s.mu.Lock()
		s.accepted++
		s.conns = append(s.conns, c)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
}

// Accepted returns how many connections were accepted so far, and a
// channel closed at the next accept.
func (s *SilentKubelet) Accepted() (int, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted, s.changed
}

// Stop closes the listener and every accepted connection and removes
// kubelet.sock if it is still ours. It is safe to call more than once.
func (s *SilentKubelet) Stop() {
	s.stopOnce.Do(func() {
		s.lis.Close()
		<-s.done
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.conns = nil
		s.mu.Unlock()
		if fi, err := os.Stat(s.path); err == nil && os.SameFile(fi, s.id) && fi.ModTime().Equal(s.id.ModTime()) {
			_ = os.Remove(s.path)
		}
	})
}
