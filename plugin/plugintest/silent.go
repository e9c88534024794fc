package plugintest

import (
	"fmt"
	"net"
	"os"
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
	lis, path, id, err := listenKubelet(dir)
	if err != nil {
		return nil, fmt.Errorf("silent kubelet: %w", err)
	}
	s := &SilentKubelet{path: path, lis: lis, id: id, done: make(chan struct{}), changed: make(chan struct{})}
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
		removeIfOurs(s.path, s.id)
	})
}
