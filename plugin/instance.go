package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// serverOptions keep an idle connection small: the kubelet holds one per
// resource for as long as the resource lives, mostly waiting in
// ListAndWatch, and gRPC's default 32 KiB read and write buffers per
// connection would be most of a resource's memory. Messages here are a
// few hundred bytes.
var serverOptions = []grpc.ServerOption{
	grpc.ReadBufferSize(0),       // read frames straight from the socket
	grpc.WriteBufferSize(0),      // write frames straight to the socket
	grpc.SharedWriteBuffer(true), // and hold no write buffer between writes
}

// stopGrace bounds GracefulStop before in-flight calls are cut.
const stopGrace = 2 * time.Second

// instance is one listening socket and its gRPC server.
type instance struct {
	path      string
	id        fileID
	srv       *grpc.Server
	done      chan struct{} // closed to end ListAndWatch streams
	serveErr  chan error    // capacity 1
	serveDone chan struct{}
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
	// Listen fail with EADDRINUSE.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.reg.dirMu.Unlock()
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	lis, err := net.Listen("unix", path)
	s.reg.dirMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	// We remove the file ourselves, and only if it is still ours.
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	fi, err := os.Stat(path)
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("stat our socket: %w", err)
	}
	inst := &instance{
		path:      path,
		id:        newFileID(fi),
		srv:       grpc.NewServer(serverOptions...),
		done:      make(chan struct{}),
		serveErr:  make(chan error, 1),
		serveDone: make(chan struct{}),
	}
	pluginapi.RegisterDevicePluginServer(inst.srv, &service{s: s, done: inst.done})
	go func() {
		defer close(inst.serveDone)
		if err := inst.srv.Serve(lis); err != nil {
			inst.serveErr <- err
		}
	}()
	return inst, nil
}

// ownsSocket reports whether the file at our socket path is the one we
// created.
func (inst *instance) ownsSocket() bool {
	fi, err := os.Stat(inst.path)
	return err == nil && inst.id.same(fi)
}

// stop ends the streams, stops the gRPC server (gracefully within a short
// bound), waits for Serve to return and removes our socket if it is still
// ours.
func (inst *instance) stop(s *Server) {
	s.change(s.rs.stopping)
	close(inst.done)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		inst.srv.GracefulStop()
	}()
	t := time.NewTimer(stopGrace)
	select {
	case <-stopped:
	case <-t.C:
		inst.srv.Stop()
		<-stopped
	}
	t.Stop()
	<-inst.serveDone
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
