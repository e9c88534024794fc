package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// stopGrace bounds how long a stop waits for calls in progress before the
// connections are cut.
const stopGrace = 2 * time.Second

// instance is one serving round of a Server: its listening socket on the
// registrar's hub.
type instance struct {
	path     string
	id       fileID
	sock     *socket
	done     chan struct{} // closed to end ListAndWatch streams
	serveErr <-chan error
}

// listen removes a stale file at our socket path, listens, and serves.
func (s *Server) listen() (*instance, error) {
	path := s.SocketPath()
	if err := os.MkdirAll(s.opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("plugin directory: %w", err)
	}
	// The servers of one directory make their sockets one at a time: each
	// bind and unlink takes the directory's lock in the kernel, and with
	// 1,000 servers starting at once the contended lock spun (0.98 s of
	// CPU in bind and unlink, against 0.56 s one at a time).
	s.reg.dirMu.Lock()
	// A file left here by a crashed run (or anything else) would make
	// the bind fail with EADDRINUSE. unlink(2) removes what is at our path
	// itself, a symbolic link included (never what it points to), and
	// never a directory (os.Remove would take an empty one). Nothing else
	// in the plugin directory is touched.
	if err := syscall.Unlink(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.reg.dirMu.Unlock()
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	done := make(chan struct{})
	sock, err := s.reg.serve(path, s, done)
	s.reg.dirMu.Unlock()
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		s.reg.unserve(sock, 0)
		return nil, fmt.Errorf("stat our socket: %w", err)
	}
	return &instance{path: path, id: newFileID(fi), sock: sock, done: done, serveErr: sock.failed}, nil
}

// ownsSocket reports whether the file at our socket path is the one we
// created.
func (inst *instance) ownsSocket() bool {
	fi, err := os.Stat(inst.path)
	return err == nil && inst.id.same(fi)
}

// stop ends the streams, stops accepting, lets the calls in progress
// finish within a short bound, closes the connections and removes our
// socket if it is still ours.
func (inst *instance) stop(s *Server) {
	s.change(s.rs.stopping)
	close(inst.done)
	s.reg.unserve(inst.sock, stopGrace)
	if inst.ownsSocket() {
		if err := os.Remove(inst.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn().Err(err).Str("socket", inst.path).Msg("removing our socket")
		}
	}
	s.change(s.rs.stoppedServing)
	s.log.Info().Str("socket", inst.path).Msg("stopped serving")
}

// fileID identifies a file across replacement. The inode alone is not
// enough (a removed socket's inode number is soon reused), so the
// modification time is compared too.
type fileID struct {
	fi os.FileInfo
}

func newFileID(fi os.FileInfo) fileID { return fileID{fi: fi} }

func (f fileID) same(fi os.FileInfo) bool {
	return f.fi != nil && os.SameFile(f.fi, fi) && f.fi.ModTime().Equal(fi.ModTime())
}
