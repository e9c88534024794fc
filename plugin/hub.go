package plugin

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// The device-plugin API wants one socket per resource, not one gRPC server
// per resource. The servers of one Registrar share a hub: one grpc.Server,
// with Serve called once per socket (the library's own way to serve
// several listeners), and a call finds its resource by its connection's
// local address (listener.go). The kubelet cannot tell: it dials the
// socket it was given and sees the same service on it. A hand-written
// epoll loop accepting on every socket did this before with one goroutine
// in all. Serve per socket costs one goroutine and about 6 KiB more per
// resource (BenchmarkFootprint, 1,000 resources, no kubelet: 7.3 against
// 13.5 KiB of RssAnon each, 4.8 KiB of it the Serve goroutine's stack;
// with the fake kubelet in the same process holding a connection each, 111
// against 116 KiB): 6 MiB at 1,000 resources, which no user notices, for
// accepting done by the code every gRPC server runs.

// Bounds on what one client of a socket can cost. Only root can connect
// (socketMode), and the kubelet's own traffic is a long ListAndWatch stream
// and a few small calls, far inside every bound.
const (
	// maxRecvMsgSize bounds one request. The kubelet's largest is a
	// GetPreferredAllocation listing a resource's free device IDs, each at
	// most 70 bytes on the wire (a 63-byte key, "-9999", 2 bytes of
	// framing): 1 MiB holds 15,000 of the longest, and one rule advertises
	// at most 10,000 IDs (conf.MaxCount). A larger one is refused with
	// ResourceExhausted before its body is read (gRPC checks the length
	// prefix).
	maxRecvMsgSize = 1 << 20
	// maxStreams bounds the calls open at once on one connection
	// (SETTINGS_MAX_CONCURRENT_STREAMS): the kubelet keeps its ListAndWatch
	// stream and makes one other call at a time; a client asking for more
	// waits its turn, and one that does not is refused the stream.
	maxStreams = 4
	// windowSize fixes each stream's and connection's receive window at
	// gRPC's minimum: what a client can make us buffer for a stream beyond
	// the message being read. A fixed window also turns off gRPC's
	// bandwidth estimate, which would grow it up to 16 MiB for a client that
	// writes fast.
	windowSize = 64 << 10
	// handshakeTimeout bounds a new connection's HTTP/2 preface and
	// settings, which the kubelet sends at once: a client that sends
	// nothing, or too little, is closed then; garbage is closed at once.
	handshakeTimeout = 5 * time.Second
	// idleTimeout closes (GOAWAY) a connection with no call in progress.
	// The kubelet's always has its ListAndWatch stream; a gRPC client that
	// is sent away dials again at its next call.
	idleTimeout = 10 * time.Second
	// maxHeaderListSize bounds a call's headers (uncompressed); the
	// kubelet's are a few hundred bytes. gRPC's default is 16 MiB.
	maxHeaderListSize = 16 << 10
)

// serverOptions keep an idle connection small and bound what a client can
// make the server hold (see the constants above). The kubelet holds one
// connection per resource for as long as the resource lives, mostly
// waiting in ListAndWatch, and gRPC's default 32 KiB read and write buffers
// per connection would be most of a resource's memory. Messages here are a
// few hundred bytes.
var serverOptions = []grpc.ServerOption{
	grpc.ReadBufferSize(0),       // read frames straight from the socket
	grpc.WriteBufferSize(0),      // write frames straight to the socket
	grpc.SharedWriteBuffer(true), // and hold no write buffer between writes
	grpc.MaxRecvMsgSize(maxRecvMsgSize),
	grpc.MaxConcurrentStreams(maxStreams),
	grpc.InitialWindowSize(windowSize),
	grpc.InitialConnWindowSize(windowSize),
	grpc.ConnectionTimeout(handshakeTimeout),
	grpc.MaxHeaderListSize(maxHeaderListSize),
	grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: idleTimeout}),
	// gRPC's default, made explicit: a client that pings more than once in
	// 5 minutes is sent away (a PING flood costs a few frames), and the
	// kubelet does not ping at all.
	grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Minute}),
	// What a client that stops reading holds: three messages of their own
	// size, not of the pool's next tier (codec.go).
	grpc.ForceServerCodecV2(newExactCodec()),
}

// hub is the gRPC server shared by the sockets of one Registrar. It runs
// while it has a socket: the Registrar makes it for the first and stops it
// after the last.
type hub struct {
	srv     *grpc.Server
	serving sync.WaitGroup // a Serve per socket
}

// socket is one listening socket of a Server on a hub.
type socket struct {
	path string
	lis  *sockListener
	svc  service
	// failed receives the error that ended accepting on this socket.
	failed chan error
	served chan struct{} // closed when Serve has returned

	mu       sync.Mutex
	conns    map[*sockConn]struct{} // nil once closed
	live     int                    // connections gRPC has not closed yet
	gone     chan struct{}          // made by close, closed when live is 0
	calls    int                    // calls in progress
	stopping bool                   // no new connections or calls
	drained  chan struct{}          // closed once stopping with no calls in progress
}

func newHub() *hub {
	h := &hub{srv: grpc.NewServer(append(slices.Clone(serverOptions), grpc.InTapHandle(tapCall))...)}
	pluginapi.RegisterDevicePluginServer(h.srv, dispatch{})
	return h
}

// stop stops the server, once every socket is gone.
func (h *hub) stop() {
	h.srv.Stop()
	h.serving.Wait()
}

// add listens on a new unix socket at path, served as s. A non-temporary
// accept error ends Serve for this socket: it is sent on sock.failed, and
// the Server serves anew (gRPC retries temporary ones, EMFILE say, itself).
func (h *hub) add(path string, s *Server, done <-chan struct{}) (*socket, error) {
	lis, err := listenUnix(path)
	if err != nil {
		return nil, err
	}
	return h.serve(path, lis, s, done), nil
}

// serve serves the connections of lis as s's socket at path.
func (h *hub) serve(path string, lis acceptor, s *Server, done <-chan struct{}) *socket {
	sock := &socket{
		path:   path,
		svc:    service{s: s, done: done},
		failed: make(chan error, 1),
		served: make(chan struct{}),
		conns:  make(map[*sockConn]struct{}),
	}
	sock.lis = &sockListener{sock: sock, lis: lis}
	h.serving.Go(func() {
		defer close(sock.served)
		// Serve returns nil after Stop, and the listener's error when it
		// is closed: by close (no failure) or by a failed accept.
		if err := h.srv.Serve(sock.lis); err != nil && !sock.isStopping() {
			sock.failed <- fmt.Errorf("accept: %w", err)
		}
	})
	return sock
}

// track records a connection of the socket. One beyond maxConnsPerSocket,
// or accepted while the socket stops, is closed at once (nil).
func (sock *socket) track(c *net.UnixConn) *sockConn {
	sock.mu.Lock()
	if sock.stopping || sock.live >= maxConnsPerSocket {
		sock.mu.Unlock()
		c.Close()
		return nil
	}
	defer sock.mu.Unlock()
	sc := &sockConn{UnixConn: c, sock: sock}
	sock.conns[sc] = struct{}{}
	sock.live++
	return sc
}

// untrack forgets a connection gRPC has closed.
func (sock *socket) untrack(c *sockConn) {
	sock.mu.Lock()
	defer sock.mu.Unlock()
	delete(sock.conns, c) // a no-op on a nil map
	sock.live--
	if sock.live == 0 && sock.gone != nil {
		close(sock.gone)
	}
}

func (sock *socket) isStopping() bool {
	sock.mu.Lock()
	defer sock.mu.Unlock()
	return sock.stopping
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
// an idle connection open. Serve returns as soon as the listener is
// closed, but the connections it accepted are served until they close:
// close cuts them itself.
func (sock *socket) close(grace time.Duration) {
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
	sock.lis.Close()
	<-sock.served // at once: Accept fails on a closed listener
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
		c.UnixConn.Close()
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
// (made for the first socket).
func (r *Registrar) serve(path string, s *Server, done <-chan struct{}) (*socket, error) {
	r.hubMu.Lock()
	defer r.hubMu.Unlock()
	if r.hub == nil {
		r.hub = newHub()
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
