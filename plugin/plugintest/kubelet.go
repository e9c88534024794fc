package plugintest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// KubeletSocket is the base name of the fake kubelet's socket.
const KubeletSocket = "kubelet.sock"

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

// resource is what the fake kubelet knows of one registered resource.
type resource struct {
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
	resources    map[string]*resource
	changed      chan struct{} // closed and replaced on every change
	stopOnce     sync.Once
}

// StartFakeKubelet serves the Registration API on dir/kubelet.sock,
// creating dir if needed and replacing a stale kubelet.sock. Stop it with
// Stop.
func StartFakeKubelet(dir string, opts ...Option) (*FakeKubelet, error) {
	f := &FakeKubelet{
		dir:       dir,
		path:      filepath.Join(dir, KubeletSocket),
		resources: make(map[string]*resource),
		changed:   make(chan struct{}),
	}
	for _, o := range opts {
		o(f)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("fake kubelet: %w", err)
	}
	if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("fake kubelet: remove stale socket: %w", err)
	}
	lis, err := net.Listen("unix", f.path)
	if err != nil {
		return nil, fmt.Errorf("fake kubelet: %w", err)
	}
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	if f.id, err = os.Stat(f.path); err != nil {
		lis.Close()
		return nil, fmt.Errorf("fake kubelet: %w", err)
	}
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

func (f *FakeKubelet) resourceLocked(name string) *resource {
	r := f.resources[name]
	if r == nil {
		r = &resource{}
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
	defer f.update(name, gen, func(r *resource) { r.streaming = false })
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
		f.update(name, gen, func(r *resource) {
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
func (f *FakeKubelet) update(name string, gen int, fn func(*resource)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.resources[name]; r != nil && r.gen == gen {
		fn(r)
		f.notifyLocked()
	}
}

// ClosedStreams returns how many ListAndWatch streams of resource the fake
// kubelet ended itself because of CloseStreams.
func (f *FakeKubelet) ClosedStreams(resource string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.resources[resource]; r != nil {
		return r.closed
	}
	return 0
}

// Registrations returns how many registrations of resource were accepted.
func (f *FakeKubelet) Registrations(resource string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.resources[resource]; r != nil {
		return r.registrations
	}
	return 0
}

// Attempts returns how many Register calls named resource, rejected ones
// included.
func (f *FakeKubelet) Attempts(resource string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.resources[resource]; r != nil {
		return r.attempts
	}
	return 0
}

// Request returns a copy of the last accepted RegisterRequest of resource,
// or nil.
func (f *FakeKubelet) Request(resource string) *pluginapi.RegisterRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.resources[resource]; r != nil && r.req != nil {
		return cloneRequest(r.req)
	}
	return nil
}

// PluginOptions returns what the plugin's GetDevicePluginOptions answered
// while its last accepted registration of resource was handled, or nil.
// The kubelet takes the options from the RegisterRequest (see Request);
// a plugin should answer the same.
func (f *FakeKubelet) PluginOptions(resource string) *pluginapi.DevicePluginOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.resources[resource]; r != nil {
		return cloneOptions(r.opts)
	}
	return nil
}

// Devices returns a copy of the latest device list of resource received on
// the stream of its current registration (nil before the first message).
func (f *FakeKubelet) Devices(resource string) []*pluginapi.Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.resources[resource]; r != nil {
		return cloneDevices(r.devices)
	}
	return nil
}

// Messages returns how many ListAndWatch messages the stream of the current
// registration of resource has delivered.
func (f *FakeKubelet) Messages(resource string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.resources[resource]; r != nil {
		return r.messages
	}
	return 0
}

// Streaming reports whether the ListAndWatch stream of the current
// registration of resource has delivered a message and is still open.
func (f *FakeKubelet) Streaming(resource string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.resources[resource]
	return r != nil && r.streaming
}

// Listed returns how many resources have had at least one ListAndWatch
// message on their current registration: a cheap condition for waiting on
// many resources (no copies, no sorting).
func (f *FakeKubelet) Listed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.resources {
		if r.messages > 0 {
			n++
		}
	}
	return n
}

// Resources returns the sorted names of every resource that was ever
// accepted.
func (f *FakeKubelet) Resources() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for name, r := range f.resources {
		if r.registrations > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Wait returns nil once cond returns true, re-evaluating it after every
// change the fake kubelet sees (no polling), or ctx's error wrapped. cond
// may call the FakeKubelet's methods.
func (f *FakeKubelet) Wait(ctx context.Context, cond func() bool) error {
	for {
		f.mu.Lock()
		changed := f.changed
		f.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fake kubelet: condition not met: %w", ctx.Err())
		case <-changed:
		}
	}
}

// WaitFor waits until cond holds for the latest device list of resource.
func (f *FakeKubelet) WaitFor(ctx context.Context, resource string, cond func([]*pluginapi.Device) bool) error {
	if err := f.Wait(ctx, func() bool { return cond(f.Devices(resource)) }); err != nil {
		return fmt.Errorf("resource %q: %w (devices now %v)", resource, err, f.Devices(resource))
	}
	return nil
}

// Client returns a DevicePlugin client on the connection of the current
// registration of resource, as the kubelet uses for Allocate and
// GetPreferredAllocation. It is valid until the resource registers again
// or the fake kubelet stops.
func (f *FakeKubelet) Client(resource string) (pluginapi.DevicePluginClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.resources[resource]
	if r == nil || r.conn == nil {
		return nil, fmt.Errorf("fake kubelet: resource %q is not registered", resource)
	}
	return pluginapi.NewDevicePluginClient(r.conn), nil
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
		if fi, err := os.Stat(f.path); err == nil && os.SameFile(fi, f.id) && fi.ModTime().Equal(f.id.ModTime()) {
			_ = os.Remove(f.path)
		}
		f.wg.Wait()
	})
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

func cloneRequest(req *pluginapi.RegisterRequest) *pluginapi.RegisterRequest {
	c := &pluginapi.RegisterRequest{
		Version:      req.GetVersion(),
		Endpoint:     req.GetEndpoint(),
		ResourceName: req.GetResourceName(),
	}
	c.Options = cloneOptions(req.GetOptions())
	return c
}

func cloneOptions(o *pluginapi.DevicePluginOptions) *pluginapi.DevicePluginOptions {
	if o == nil {
		return nil
	}
	return &pluginapi.DevicePluginOptions{
		PreStartRequired:                o.GetPreStartRequired(),
		GetPreferredAllocationAvailable: o.GetGetPreferredAllocationAvailable(),
	}
}

func cloneDevices(devs []*pluginapi.Device) []*pluginapi.Device {
	if devs == nil {
		return nil
	}
	out := make([]*pluginapi.Device, 0, len(devs))
	for _, d := range devs {
		c := &pluginapi.Device{ID: d.GetID(), Health: d.GetHealth()}
		if t := d.GetTopology(); t != nil {
			c.Topology = &pluginapi.TopologyInfo{}
			for _, n := range t.GetNodes() {
				c.Topology.Nodes = append(c.Topology.Nodes, &pluginapi.NUMANode{ID: n.GetID()})
			}
		}
		out = append(out, c)
	}
	return out
}
