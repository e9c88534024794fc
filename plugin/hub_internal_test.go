package plugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// The registrar's one gRPC server (its hub) serves every socket while any
// is served: a socket that cannot be made leaves the others answering, and
// the hub stops with the last socket, so nothing of it outlives the
// servers. (make mutate: the socket count could be inverted, or the hub
// stopped on any failed socket, with every other test green.)
func TestHubOutlivesAFailedSocketAndEndsWithTheLast(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	reg := NewRegistrar()
	defer reg.Close()
	opts := func(name string) Options {
		return Options{ResourceName: "smarter-devices/" + name, Socket: name + ".sock", Dir: dir, Logger: zerolog.Nop(), Registrar: reg}
	}
	srv := NewServer(opts("null"), Snapshot{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	testutil.Eventually(t, 20*time.Second, "serving", func() bool {
		st, _ := srv.Status()
		return st.Serving
	})
	hubState := func() (*hub, int) {
		reg.hubMu.Lock()
		defer reg.hubMu.Unlock()
		return reg.hub, reg.sockets
	}
	if h, n := hubState(); h == nil || n != 1 {
		t.Fatalf("one socket served: hub %v, sockets %d", h, n)
	}

	// A socket that cannot be made (its directory is missing).
	other := NewServer(opts("zero"), Snapshot{})
	if _, err := reg.serve(filepath.Join(dir, "missing", "zero.sock"), other, make(chan struct{})); err == nil {
		t.Fatal("serve in a missing directory succeeded")
	}
	if h, n := hubState(); h == nil || n != 1 {
		t.Errorf("after a failed socket: hub %v, sockets %d; want the hub, 1 socket", h, n)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "null.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	if _, err := pluginapi.NewDevicePluginClient(conn).GetDevicePluginOptions(cctx, &pluginapi.Empty{}); err != nil {
		t.Errorf("the served socket after another failed: %v", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if h, n := hubState(); h != nil || n != 0 {
		t.Errorf("after the last socket: hub %v, sockets %d; want none", h, n)
	}
}

// A stopping socket waits for the calls in progress, then for its
// connections: drained closes when the last call leaves, gone when the
// last connection goes, each once, whatever the order. (make mutate: the
// counts could run backwards, or the channels close at the first of
// several, with every other test green; a second close panics.)
func TestStoppingSocketCountsCallsAndConnections(t *testing.T) {
	sock := &socket{conns: map[*sockConn]struct{}{}}
	for range 3 {
		if err := sock.enter(); err != nil {
			t.Fatal(err)
		}
	}
	var conns []*sockConn
	for range 3 {
		conns = append(conns, sock.track(nil))
	}
	sock.mu.Lock()
	sock.stopping = true
	sock.drained, sock.gone = make(chan struct{}), make(chan struct{})
	sock.mu.Unlock()
	if err := sock.enter(); err == nil {
		t.Error("a stopping socket took a new call")
	}
	if c := sock.track(unixConn(t)); c != nil {
		t.Error("a stopping socket took a new connection")
	}
	for i := range 3 {
		if isClosed(sock.drained) {
			t.Fatalf("drained with %d of 3 calls still in progress", 3-i)
		}
		sock.leave()
	}
	if !isClosed(sock.drained) {
		t.Error("not drained once the last call left")
	}
	for i, c := range conns {
		if isClosed(sock.gone) {
			t.Fatalf("gone with %d of 3 connections still open", 3-i)
		}
		sock.untrack(c)
	}
	if !isClosed(sock.gone) {
		t.Error("not gone once the last connection closed")
	}
}

// unixConn is one end of a connected pair of unix sockets; the other end
// is closed, and this one when the test ends.
func unixConn(t *testing.T) *net.UnixConn {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = syscall.Close(fds[1])
	f := os.NewFile(uintptr(fds[0]), "pair")
	defer f.Close() // FileConn dups it
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UnixConn)
}
