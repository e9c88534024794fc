package plugin

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// The device-plugin API wants one socket per resource, not one gRPC server
// per resource. The servers of one Registrar share a hub: one grpc.Server
// for every socket, fed by one goroutine that accepts on all of them
// (epoll), and a call finds its resource by the connection's local
// address. A server of its own per resource cost a goroutine (its accept
// loop) and 2 KiB of heap per resource. The kubelet cannot tell: it dials
// the socket it was given and sees the same service on it.

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

// listenBacklog is each socket's accept queue; the kubelet dials a socket
// once per registration.
const listenBacklog = 64

// hub is the gRPC server and the accept loop shared by the sockets of one
// Registrar. It runs while it has a socket: the Registrar starts it for the
// first and stops it after the last.
type hub struct {
	srv   *grpc.Server
	ep    *os.File // the epoll instance, itself in Go's poller
	epfd  int      // its descriptor
	conns chan net.Conn
	lis   *hubListener
	done  sync.WaitGroup

	mu    sync.Mutex // held while accepting: a socket's fd is closed only under it
	socks map[int32]*socket
}

// socket is one listening socket of a Server on a hub.
type socket struct {
	path string
	fd   int
	h    *hub
	svc  service
	// failed receives the error that ended accepting on this socket.
	failed chan error

	mu       sync.Mutex
	conns    map[*sockConn]struct{} // nil once closed
	live     int                    // connections gRPC has not closed yet
	gone     chan struct{}          // made by close, closed when live is 0
	calls    int                    // calls in progress
	stopping bool                   // no new calls
	drained  chan struct{}          // closed once stopping with no calls in progress
}

func startHub() (*hub, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile hands it to Go's poller: the accept
	// loop waits there for any socket to be ready.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	conns := make(chan net.Conn)
	h := &hub{
		srv:   grpc.NewServer(append(serverOptions[:len(serverOptions):len(serverOptions)], grpc.InTapHandle(tapCall))...),
		ep:    os.NewFile(uintptr(epfd), "epoll"),
		epfd:  epfd,
		conns: conns,
		lis:   &hubListener{conns: conns, closed: make(chan struct{})},
		socks: make(map[int32]*socket),
	}
	pluginapi.RegisterDevicePluginServer(h.srv, dispatch{})
	h.done.Go(h.acceptLoop)
	h.done.Go(func() {
		// Returns when stop stops the server.
		_ = h.srv.Serve(h.lis)
	})
	return h, nil
}

// stop stops the server and the accept loop, once every socket is gone.
func (h *hub) stop() {
	h.srv.Stop()
	h.ep.Close()
	h.done.Wait()
}

// add listens on a new unix socket at path, served as s.
func (h *hub) add(path string, s *Server, done <-chan struct{}) (*socket, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listen: socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("listen: bind %s: %w", path, err)
	}
	if err := syscall.Listen(fd, listenBacklog); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	sock := &socket{
		path:   path,
		fd:     fd,
		h:      h,
		svc:    service{s: s, done: done},
		failed: make(chan error, 1),
		conns:  make(map[*sockConn]struct{}),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
	if err := syscall.EpollCtl(h.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("listen %s: epoll_ctl: %w", path, err)
	}
	h.socks[int32(fd)] = sock
	return sock, nil
}

// remove stops accepting on sock and closes its listening descriptor.
func (h *hub) remove(sock *socket) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.socks[int32(sock.fd)] != sock {
		return
	}
	_ = syscall.EpollCtl(h.epfd, syscall.EPOLL_CTL_DEL, sock.fd, nil)
	syscall.Close(sock.fd)
	delete(h.socks, int32(sock.fd))
}

// acceptLoop accepts on every ready socket and hands the connections to
// the gRPC server, until stop closes the epoll instance.
func (h *hub) acceptLoop() {
	rc, err := h.ep.SyscallConn()
	if err != nil {
		return
	}
	events := make([]syscall.EpollEvent, 16)
	var ready []net.Conn
	_ = rc.Read(func(epfd uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(epfd), events, 0)
			if err == syscall.EINTR {
				continue
			}
			if n <= 0 {
				return false // wait for the next ready socket
			}
			for _, ev := range events[:n] {
				ready = h.accept(ev.Fd, ready[:0])
				for _, c := range ready {
					select {
					case h.conns <- c:
					case <-h.lis.closed:
						c.Close()
					}
				}
			}
		}
	})
}

// accept accepts every pending connection of the socket with descriptor fd
// and appends them to conns. A failure other than "nothing pending" takes
// the socket out of the loop and is reported to its server, which serves
// anew.
func (h *hub) accept(fd int32, conns []net.Conn) []net.Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	sock := h.socks[fd]
	if sock == nil {
		return conns // removed after epoll_wait returned it
	}
	for {
		nfd, _, err := syscall.Accept4(sock.fd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		switch {
		case err == syscall.EAGAIN:
			return conns
		case err == syscall.EINTR || err == syscall.ECONNABORTED:
			continue
		case err != nil:
			_ = syscall.EpollCtl(h.epfd, syscall.EPOLL_CTL_DEL, sock.fd, nil)
			select {
			case sock.failed <- fmt.Errorf("accept: %w", err):
			default:
			}
			return conns
		}
		f := os.NewFile(uintptr(nfd), sock.path)
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			continue // the peer's problem, or out of descriptors: the kubelet dials again
		}
		if sc := sock.track(c); sc != nil {
			conns = append(conns, sc)
		}
	}
}

// track records a connection of the socket; one accepted while the socket
// stops is closed at once (nil).
func (sock *socket) track(c net.Conn) *sockConn {
	sock.mu.Lock()
	defer sock.mu.Unlock()
	if sock.stopping { // taking no new connection
		c.Close()
		return nil
	}
	sc := &sockConn{Conn: c, sock: sock}
	sock.conns[sc] = struct{}{}
	sock.live++
	return sc
}

// tapCall records every call, as its HEADERS arrive, as in progress on its
// socket until the call's stream ends; a socket that stops takes no new
// call. (gRPC runs it on the connection's reader, before the frames that
// follow: a stop that begins after the call arrived waits for it.)
func tapCall(ctx context.Context, _ *tap.Info) (context.Context, error) {
	sock, err := socketOf(ctx)
	if err != nil {
		return nil, err
	}
	if err := sock.enter(); err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, sock.leave) // the stream's context ends with it
	return ctx, nil
}

// enter records a call in progress; it fails once the socket stops.
func (sock *socket) enter() error {
	sock.mu.Lock()
	defer sock.mu.Unlock()
	if sock.stopping {
		return status.Error(codes.Unavailable, "the device plugin is stopping")
	}
	sock.calls++
	return nil
}

func (sock *socket) leave() {
	sock.mu.Lock()
	defer sock.mu.Unlock()
	sock.calls--
	if sock.stopping && sock.calls == 0 {
		close(sock.drained)
	}
}

// flushWait bounds how long a stop waits, once no call is in progress,
// for gRPC to write what the calls left behind (ListAndWatch's last
// message and the end of its stream, which gRPC writes after the call has
// returned) before the connections are cut. The kubelet closes its
// connection as soon as its ListAndWatch stream has ended, which ends the
// wait at once.
const flushWait = 20 * time.Millisecond

// close stops the socket much as grpc.Server.GracefulStop stops a server:
// no new connections or calls; the calls in progress may finish within
// grace (ListAndWatch ends when the server's done channel closes, which
// the caller has done), and their last frames be written (flushWait) or
// the client close its connections; then what is left is cut. Unlike
// GracefulStop it does not wait the whole grace for a client that keeps
// an idle connection open.
func (sock *socket) close(grace time.Duration) {
	sock.h.remove(sock)
	sock.mu.Lock()
	sock.stopping = true
	sock.drained = make(chan struct{})
	if sock.calls == 0 {
		close(sock.drained)
	}
	sock.gone = make(chan struct{})
	if sock.live == 0 {
		close(sock.gone)
	}
	sock.mu.Unlock()
	t := time.NewTimer(grace)
	select {
	case <-sock.drained:
		f := time.NewTimer(flushWait)
		select {
		case <-sock.gone:
		case <-f.C:
		}
		f.Stop()
	case <-t.C:
	}
	t.Stop()
	sock.mu.Lock()
	conns := sock.conns
	sock.conns = nil
	sock.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
	// gRPC closes each connection once its reader has seen the end: then
	// nothing of this socket is served any more.
	t = time.NewTimer(grace)
	select {
	case <-sock.gone:
	case <-t.C:
	}
	t.Stop()
}

// sockConn is a connection accepted on a socket; its local address names
// the socket, which is how a call finds its resource.
type sockConn struct {
	net.Conn
	sock *socket
	once sync.Once
}

func (c *sockConn) LocalAddr() net.Addr { return sockAddr{c.sock} }

// Close forgets the connection once gRPC is done with it, so that a
// kubelet reconnecting many times leaves nothing behind.
func (c *sockConn) Close() error {
	c.once.Do(func() {
		sock := c.sock
		sock.mu.Lock()
		defer sock.mu.Unlock()
		delete(sock.conns, c) // a no-op on a nil map
		sock.live--
		if sock.live == 0 && sock.gone != nil {
			close(sock.gone)
		}
	})
	return c.Conn.Close()
}

// sockAddr is the local address of a connection accepted on a socket.
type sockAddr struct{ sock *socket }

func (a sockAddr) Network() string { return "unix" }
func (a sockAddr) String() string  { return a.sock.path }

// hubListener hands the accepted connections to the gRPC server.
type hubListener struct {
	conns  <-chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *hubListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *hubListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *hubListener) Addr() net.Addr {
	return &net.UnixAddr{Net: "unix", Name: "@smarter-device-manager"}
}

// dispatch is the DevicePlugin service of a hub: each call goes to the
// service of the socket its connection was accepted on.
type dispatch struct {
	pluginapi.UnimplementedDevicePluginServer
}

// socketOf finds the socket of the call's connection.
func socketOf(ctx context.Context) (*socket, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no connection for the call")
	}
	a, ok := p.LocalAddr.(sockAddr)
	if !ok {
		return nil, status.Errorf(codes.Internal, "a connection of unknown origin (%T)", p.LocalAddr)
	}
	return a.sock, nil
}

func (dispatch) GetDevicePluginOptions(ctx context.Context, e *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	sock, err := socketOf(ctx)
	if err != nil {
		return nil, err
	}
	return sock.svc.GetDevicePluginOptions(ctx, e)
}

func (dispatch) ListAndWatch(e *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	sock, err := socketOf(stream.Context())
	if err != nil {
		return err
	}
	return sock.svc.ListAndWatch(e, stream)
}

func (dispatch) Allocate(ctx context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	sock, err := socketOf(ctx)
	if err != nil {
		return nil, err
	}
	return sock.svc.Allocate(ctx, req)
}

func (dispatch) GetPreferredAllocation(ctx context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	sock, err := socketOf(ctx)
	if err != nil {
		return nil, err
	}
	return sock.svc.GetPreferredAllocation(ctx, req)
}

func (dispatch) PreStartContainer(ctx context.Context, req *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	sock, err := socketOf(ctx)
	if err != nil {
		return nil, err
	}
	return sock.svc.PreStartContainer(ctx, req)
}

// serve listens on a unix socket at path for s, on the registrar's hub
// (started for the first socket).
func (r *Registrar) serve(path string, s *Server, done <-chan struct{}) (*socket, error) {
	r.hubMu.Lock()
	defer r.hubMu.Unlock()
	if r.hub == nil {
		h, err := startHub()
		if err != nil {
			return nil, err
		}
		r.hub = h
	}
	sock, err := r.hub.add(path, s, done)
	if err != nil {
		if r.sockets == 0 {
			h := r.hub
			r.hub = nil
			h.stop()
		}
		return nil, err
	}
	r.sockets++
	return sock, nil
}

// unserve closes a socket that serve returned (see socket.close) and stops
// the hub after its last socket.
func (r *Registrar) unserve(sock *socket, grace time.Duration) {
	sock.close(grace)
	r.hubMu.Lock()
	r.sockets--
	var last *hub
	if r.sockets == 0 {
		last, r.hub = r.hub, nil
	}
	r.hubMu.Unlock()
	if last != nil {
		last.stop()
	}
}
