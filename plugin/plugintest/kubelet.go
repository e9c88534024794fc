package plugintest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// dialTimeout bounds the check, inside Register, that the plugin serves;
// the kubelet does the same before it accepts a registration.
const dialTimeout = 5 * time.Second

// Option configures StartFakeKubelet.
type Option func(*FakeKubelet)

// RejectRegistrations makes Register fail with codes.Unavailable until
// SetRejectRegistrations(false) is called.
func RejectRegistrations() Option {
	return func(f *FakeKubelet) { f.reject = true }
}

// CloseStreams makes the fake kubelet accept registrations but end every
// ListAndWatch stream as soon as its first message arrives, as a kubelet
// that is going away (or a broken one) does, until
// SetCloseStreams(false) is called.
func CloseStreams() Option {
	return func(f *FakeKubelet) { f.closeStreams = true }
}

// record is what the fake kubelet knows of one registered resource.
type record struct {
	attempts      int // Register calls, rejected ones included
	registrations int // accepted Register calls
	req           *pluginapi.RegisterRequest
	gen           int // bumped by every accepted registration
	conn          *grpc.ClientConn
	cancel        context.CancelFunc
	devices       []*pluginapi.Device
	messages      int // ListAndWatch messages on the current stream
	closed        int // streams the fake kubelet ended itself (CloseStreams)
	streaming     bool

	// opts is what GetDevicePluginOptions answered during registration.
	opts *pluginapi.DevicePluginOptions
}

// FakeKubelet is an in-process stand-in for the kubelet's device manager.
// All methods are safe for concurrent use.
type FakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer

	dir  string
	path string
	srv  *grpc.Server
	id   os.FileInfo
	wg   sync.WaitGroup // Serve and every ListAndWatch follower

	mu           sync.Mutex
	reject       bool
	closeStreams bool
	stopped      bool
	resources    map[string]*record
	changed      chan struct{} // closed and replaced on every change
	stopOnce     sync.Once
}

// StartFakeKubelet serves the Registration API on dir/kubelet.sock,
// creating dir if needed and replacing a stale kubelet.sock. Stop it with
// Stop.
func StartFakeKubelet(dir string, opts ...Option) (*FakeKubelet, error) {
	f := &FakeKubelet{
		dir:       dir,
		resources: make(map[string]*record),
		changed:   make(chan struct{}),
	}
	for _, o := range opts {
		o(f)
	}
	lis, path, id, err := listenKubelet(dir)
	if err != nil {
		return nil, fmt.Errorf("fake kubelet: %w", err)
	}
	f.path, f.id = path, id
	f.srv = grpc.NewServer()
	pluginapi.RegisterRegistrationServer(f.srv, f)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		_ = f.srv.Serve(lis) // returns when Stop stops the server
	}()
	return f, nil
}

// Socket returns the path of the fake kubelet's socket.
func (f *FakeKubelet) Socket() string { return f.path }

// SetRejectRegistrations makes Register fail (true) or succeed (false).
func (f *FakeKubelet) SetRejectRegistrations(reject bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reject = reject
}

// SetCloseStreams makes the fake kubelet end every ListAndWatch stream after
// its first message (true) or follow streams normally (false). It applies
// to streams opened from now on.
func (f *FakeKubelet) SetCloseStreams(close bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closeStreams = close
}

// notifyLocked wakes every waiter; f.mu must be held.
func (f *FakeKubelet) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *FakeKubelet) resourceLocked(name string) *record {
	r := f.resources[name]
	if r == nil {
		r = &record{}
		f.resources[name] = r
	}
	return r
}

// Register records the request and, like the kubelet, checks the version,
// dials the plugin's endpoint in the plugin directory (which must already
// be served), and follows its ListAndWatch stream; a registration of the
// same resource replaces the previous one and its stream.
func (f *FakeKubelet) Register(ctx context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	name := req.GetResourceName()
	f.mu.Lock()
	r := f.resourceLocked(name)
	r.attempts++
	reject, stopped := f.reject, f.stopped
	f.notifyLocked()
	f.mu.Unlock()
	switch {
	case stopped:
		return nil, status.Error(codes.Unavailable, "fake kubelet is stopping")
	case reject:
		return nil, status.Errorf(codes.Unavailable, "fake kubelet rejects registration of %q", name)
	case req.GetVersion() != pluginapi.Version:
		return nil, status.Errorf(codes.InvalidArgument, "unsupported version %q", req.GetVersion())
	case name == "" || req.GetEndpoint() == "" || req.GetEndpoint() != filepath.Base(req.GetEndpoint()):
		return nil, status.Errorf(codes.InvalidArgument, "bad resource %q or endpoint %q", name, req.GetEndpoint())
	}

	endpoint := filepath.Join(f.dir, req.GetEndpoint())
	conn, err := grpc.NewClient("unix:"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "dial %s: %v", endpoint, err)
	}
	// The kubelet dials the plugin while handling Register.
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	opts, err := pluginapi.NewDevicePluginClient(conn).GetDevicePluginOptions(dctx, &pluginapi.Empty{})
	cancel()
	if err != nil {
		conn.Close()
		return nil, status.Errorf(codes.Unavailable, "plugin at %s does not answer: %v", endpoint, err)
	}

	sctx, scancel := context.WithCancel(context.Background())
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		scancel()
		conn.Close()
		return nil, status.Error(codes.Unavailable, "fake kubelet is stopping")
	}
	r = f.resourceLocked(name)
	if r.cancel != nil {
		r.cancel()
		r.conn.Close()
	}
	r.registrations++
	r.gen++
	r.req = cloneRequest(req)
	r.opts = cloneOptions(opts)
	r.conn, r.cancel = conn, scancel
	r.devices, r.messages, r.streaming = nil, 0, false
	gen := r.gen
	closeStreams := f.closeStreams
	f.notifyLocked()
	f.wg.Add(1)
	f.mu.Unlock()

	go f.follow(sctx, scancel, name, gen, conn, closeStreams)
	return &pluginapi.Empty{}, nil
}

// follow runs the ListAndWatch stream of one registration until it ends or
// is replaced; with closeStream it ends the stream itself (cancel) after the
// first message.
func (f *FakeKubelet) follow(ctx context.Context, cancel context.CancelFunc, name string, gen int, conn *grpc.ClientConn, closeStream bool) {
	defer f.wg.Done()
	defer f.update(name, gen, func(r *record) { r.streaming = false })
	stream, err := pluginapi.NewDevicePluginClient(conn).ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		return
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return
		}
		devs := cloneDevices(resp.GetDevices())
		if devs == nil {
			devs = []*pluginapi.Device{} // an empty list, not "no message yet"
		}
		f.update(name, gen, func(r *record) {
			r.devices = devs
			r.messages++
			r.streaming = !closeStream
			if closeStream {
				r.closed++
			}
		})
		if closeStream {
			cancel()
			return
		}
	}
}

// update applies fn to resource name if registration gen is still current.
func (f *FakeKubelet) update(name string, gen int, fn func(*record)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.resources[name]; r != nil && r.gen == gen {
		fn(r)
		f.notifyLocked()
	}
}

// Stop stops serving, closes every plugin connection (ending their
// ListAndWatch streams, as a kubelet that exits does), removes
// kubelet.sock if it is still ours, and waits for every goroutine of the
// fake kubelet. It is safe to call more than once.
func (f *FakeKubelet) Stop() {
	f.stopOnce.Do(func() {
		f.mu.Lock()
		f.stopped = true
		for _, r := range f.resources {
			if r.cancel != nil {
				r.cancel()
				r.conn.Close()
				r.cancel, r.conn = nil, nil
			}
		}
		f.notifyLocked()
		f.mu.Unlock()
		f.srv.Stop()
		removeIfOurs(f.path, f.id)
		f.wg.Wait()
	})
}
