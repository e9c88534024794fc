package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Defaults applied by [NewServer] to zero [Options] fields.
const (
	// DefaultKubeletSocket is the base name of the kubelet's registration
	// socket inside the plugin directory.
	DefaultKubeletSocket = "kubelet.sock"
	// DefaultMinBackoff is the first delay after a failed listen or
	// registration.
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the exponential backoff.
	DefaultMaxBackoff = 30 * time.Second
	// DefaultCheckInterval is how often Run re-checks the plugin directory
	// without being kicked, in case a directory event was lost.
	DefaultCheckInterval = 10 * time.Second
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

const (
	// registerTimeout bounds one Register call; the kubelet dials our socket
	// while handling it, so it is not instant, but it never takes long.
	registerTimeout = 5 * time.Second
	// stopGrace bounds GracefulStop before in-flight calls are cut.
	stopGrace = 2 * time.Second
	// maxSocketPath is the size of sun_path on Linux.
	maxSocketPath = 108
)

// Device is one device of a resource, as ListAndWatch reports it.
type Device struct {
	// ID is the device ID the kubelet checkpoints; it must be stable
	// across restarts of the daemon.
	ID string
	// Healthy devices are allocatable; unhealthy ones are reported to the
	// kubelet but refused by Allocate.
	Healthy bool
	// NUMANode is the device's NUMA node when HasNUMA: the kubelet's
	// topology manager then aligns it with the pod's CPUs and memory.
	NUMANode int
	HasNUMA  bool
}

// DeviceSpec is one device node Allocate hands to a container.
type DeviceSpec struct {
	HostPath      string // path on the host, e.g. /dev/ttyUSB0
	ContainerPath string // path inside the container
	Permissions   string // cgroup permissions: some of "r", "w", "m"
}

// Mount is a host path mounted into a container.
type Mount struct {
	HostPath, ContainerPath string
	ReadOnly                bool
}

// Snapshot is the whole state of one resource. The server keeps its own
// copy; the caller may reuse its slices and map after Update returns.
type Snapshot struct {
	// Devices is the whole list, as every ListAndWatch message sends it.
	Devices []Device
	// Specs is what Allocate returns for a container; it is the same for
	// every device ID of this resource.
	Specs []DeviceSpec
	// Envs is the environment Allocate returns for a container
	// (e.g. NVIDIA_VISIBLE_DEVICES).
	Envs map[string]string
	// Mounts are host paths Allocate mounts into a container.
	Mounts []Mount
	// CDIKind, when set ("vendor/class"), makes Allocate name CDI devices
	// (kind=ID) for the runtime to apply from its spec file, instead of
	// returning specs, environment and mounts itself.
	CDIKind string
	// PerDevice holds the specs of IDs that stand for different devices
	// (a class resource: one ID per adapter): Allocate adds those of every
	// ID it hands out, after Specs.
	PerDevice map[string][]DeviceSpec
}

func (s Snapshot) clone() Snapshot {
	return Snapshot{
		Devices: slices.Clone(s.Devices),
		Specs:   slices.Clone(s.Specs),
		Envs:    maps.Clone(s.Envs),
		Mounts:  slices.Clone(s.Mounts),
		CDIKind: s.CDIKind,
		PerDevice: func() map[string][]DeviceSpec {
			if s.PerDevice == nil {
				return nil
			}
			m := make(map[string][]DeviceSpec, len(s.PerDevice))
			for id, specs := range s.PerDevice {
				m[id] = slices.Clone(specs)
			}
			return m
		}(),
	}
}

// Equal reports whether two snapshots would advertise and allocate the
// same: every field counts, so a change in any of them reaches the kubelet
// (a test fails when a field is added here and not compared).
func (s Snapshot) Equal(o Snapshot) bool {
	return slices.Equal(s.Devices, o.Devices) &&
		slices.Equal(s.Specs, o.Specs) &&
		maps.Equal(s.Envs, o.Envs) &&
		slices.Equal(s.Mounts, o.Mounts) && s.CDIKind == o.CDIKind &&
		maps.EqualFunc(s.PerDevice, o.PerDevice, slices.Equal[[]DeviceSpec])
}

// Options configure a [Server].
type Options struct {
	// ResourceName is the extended resource, e.g. "smarter-devices/ttyUSB0".
	ResourceName string
	// Socket is the base name of our socket inside Dir, e.g.
	// "smarter-ttyUSB0.sock". It is sent to the kubelet as the endpoint,
	// which the kubelet resolves inside its own plugin directory.
	Socket string
	// Dir is the kubelet's plugin directory, e.g.
	// /var/lib/kubelet/device-plugins; the kubelet socket lives here too.
	Dir string
	// KubeletSocket is the base name of the kubelet's registration socket
	// in Dir; empty means DefaultKubeletSocket.
	KubeletSocket string
	// Logger receives state transitions at info and retried errors at warn.
	Logger zerolog.Logger
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// failed listens or registrations; zero means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// Registrar, when set, is shared with other servers: one connection to
	// the kubelet for every registration. Nil: the server keeps its own.
	Registrar *Registrar
	// CheckInterval is how often Run re-checks the plugin directory as if
	// Kick had been called; zero means DefaultCheckInterval, negative
	// disables the periodic check (only Kick then triggers it).
	CheckInterval time.Duration
	// PreferredAllocation offers GetPreferredAllocation to the kubelet. Set
	// it only where the choice of IDs matters (IDs that stand for different
	// devices, or NUMA placement): the kubelet then calls it before every
	// Allocate that has more free IDs than it needs, a round trip that is
	// pure cost when every ID hands out the same nodes.
	PreferredAllocation bool
}

func (o *Options) setDefaults() {
	if o.KubeletSocket == "" {
		o.KubeletSocket = DefaultKubeletSocket
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.CheckInterval == 0 {
		o.CheckInterval = DefaultCheckInterval
	}
}

func (o *Options) validate() error {
	var errs []error
	if o.ResourceName == "" {
		errs = append(errs, errors.New("resource name is empty"))
	}
	if o.Dir == "" {
		errs = append(errs, errors.New("plugin directory is empty"))
	}
	// The kubelet joins the endpoint with its own directory, so a path
	// would not name the same file on both sides.
	if o.Socket == "" || o.Socket != filepath.Base(o.Socket) || o.Socket == "." || o.Socket == ".." {
		errs = append(errs, fmt.Errorf("socket %q is not a base name", o.Socket))
	} else if o.Socket == o.KubeletSocket {
		errs = append(errs, fmt.Errorf("socket %q is the kubelet's socket", o.Socket))
	} else if p := filepath.Join(o.Dir, o.Socket); len(p) >= maxSocketPath {
		errs = append(errs, fmt.Errorf("socket path %q is longer than %d bytes", p, maxSocketPath-1))
	}
	if o.KubeletSocket != filepath.Base(o.KubeletSocket) {
		errs = append(errs, fmt.Errorf("kubelet socket %q is not a base name", o.KubeletSocket))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("plugin options for %q: %w", o.ResourceName, err)
	}
	return nil
}

// state is an immutable view of the current snapshot; Update replaces it
// whole, so readers may use it after releasing the lock.
type state struct {
	snap   Snapshot
	health map[string]bool // device ID → healthy
}

func newState(snap Snapshot) *state {
	st := &state{snap: snap, health: make(map[string]bool, len(snap.Devices))}
	for _, d := range snap.Devices {
		st.health[d.ID] = d.Healthy
	}
	return st
}

// Server is the device plugin of one resource: a DevicePlugin gRPC server
// on a unix socket in the kubelet's plugin directory plus its registration.
// Create it with [NewServer], feed it with [Server.Update], and run it with
// [Server.Run]. All methods are safe for concurrent use.
type Server struct {
	opts Options
	log  zerolog.Logger

	mu      sync.Mutex
	cur     *state
	changed chan struct{} // closed and replaced whenever cur changes
	// ListAndWatch stream bookkeeping, to notice a kubelet that went away
	// without removing our socket (see closeStream).
	lastStream uint64 // id of the most recently opened stream
	epoch      uint64 // registration attempts so far
	streamLost bool   // the kubelet ended the newest stream of this epoch

	status   Status
	statusCh chan struct{} // closed and replaced whenever status changes

	kick    chan struct{} // capacity 1: a pending re-check
	reg     *Registrar
	ownReg  bool // reg is ours to close when Run returns
	running atomic.Bool
}

// Status is what a Server reports of its connection to the kubelet.
type Status struct {
	// Serving is true while our socket is listened on and served.
	Serving bool
	// Registered is true while serving after a successful registration,
	// until something suggests the kubelet went away.
	Registered bool
	// Registrations counts successful registrations since NewServer.
	Registrations int
	// Allocations counts successful Allocate calls since NewServer.
	Allocations int
	// PreferredAllocations counts GetPreferredAllocation calls answered
	// since NewServer.
	PreferredAllocations int
	// Attempts counts registration attempts since NewServer, failed ones
	// included. None is made while the kubelet socket is absent.
	Attempts int
	// WaitingForKubelet is true while serving with no kubelet socket in the
	// plugin directory: the server waits for it to appear (a Kick, or the
	// periodic check) instead of retrying.
	WaitingForKubelet bool
	// Streams is how many ListAndWatch streams are open now.
	Streams int
}

// NewServer returns a server for one resource, starting with the initial
// snapshot. Zero Options fields take the defaults above; Run reports
// invalid options.
func NewServer(opts Options, initial Snapshot) *Server {
	opts.setDefaults()
	reg, own := opts.Registrar, false
	if reg == nil {
		reg, own = NewRegistrar(), true
	}
	return &Server{
		reg:      reg,
		ownReg:   own,
		opts:     opts,
		log:      opts.Logger.With().Str("resource", opts.ResourceName).Logger(),
		cur:      newState(initial.clone()),
		changed:  make(chan struct{}),
		statusCh: make(chan struct{}),
		kick:     make(chan struct{}, 1),
	}
}

// Status returns the current status and a channel closed at its next
// change, so that callers can wait for a transition without polling.
func (s *Server) Status() (Status, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status, s.statusCh
}

func (s *Server) setStatus(fn func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setStatusLocked(fn)
}

// setStatusLocked is setStatus with s.mu held.
func (s *Server) setStatusLocked(fn func(*Status)) {
	old := s.status
	fn(&s.status)
	if s.status != old {
		close(s.statusCh)
		s.statusCh = make(chan struct{})
	}
}

// Update replaces the snapshot and wakes every open ListAndWatch stream,
// which then sends the whole new device list to the kubelet. It never
// blocks on the streams. An identical snapshot changes nothing and sends
// nothing.
func (s *Server) Update(snap Snapshot) {
	snap = snap.clone()
	s.mu.Lock()
	old := s.cur
	if old.snap.Equal(snap) {
		s.mu.Unlock()
		return
	}
	next := newState(snap)
	s.cur = next
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	s.logChanges(old, next)
}

func (s *Server) logChanges(old, next *state) {
	var added, removed, healthy, unhealthy []string
	for _, d := range next.snap.Devices {
		h, ok := old.health[d.ID]
		switch {
		case !ok:
			added = append(added, d.ID)
		case h && !d.Healthy:
			unhealthy = append(unhealthy, d.ID)
		case !h && d.Healthy:
			healthy = append(healthy, d.ID)
		}
	}
	for _, d := range old.snap.Devices {
		if _, ok := next.health[d.ID]; !ok {
			removed = append(removed, d.ID)
		}
	}
	if added == nil && removed == nil && healthy == nil && unhealthy == nil {
		s.log.Debug().Msg("allocation specs or environment changed")
		return
	}
	s.log.Info().Strs("added", added).Strs("removed", removed).
		Strs("healthy", healthy).Strs("unhealthy", unhealthy).
		Int("devices", len(next.snap.Devices)).Msg("devices changed")
}

// current returns the current state and a channel closed at its next change.
func (s *Server) current() (*state, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.changed
}

// Kick is a hint that the plugin directory changed. It never blocks. Run
// then re-checks, level-triggered: if our socket is gone or replaced (the
// kubelet removes plugin sockets when it starts) it serves anew and
// registers; if the kubelet socket is new since our registration it
// registers again; while unregistered it retries at once. While there is
// no kubelet socket, a Kick (or the periodic check) is the only thing that
// makes Run look again: feed it from [WatchDir].
func (s *Server) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Registered reports whether Run is serving and its last registration with
// the kubelet succeeded, and nothing since suggests the kubelet went away.
func (s *Server) Registered() bool {
	st, _ := s.Status()
	return st.Registered
}

// ResourceName returns the resource this server serves.
func (s *Server) ResourceName() string { return s.opts.ResourceName }

// SocketPath returns the path of our socket.
func (s *Server) SocketPath() string { return filepath.Join(s.opts.Dir, s.opts.Socket) }

func (s *Server) kubeletPath() string { return filepath.Join(s.opts.Dir, s.opts.KubeletSocket) }

// errRestart asks Run to serve anew at once: our socket was removed.
var errRestart = errors.New("socket removed or replaced")

// Run serves the resource until ctx ends. Each round it removes a stale file
// at our socket path, listens, serves, and only then registers with the
// kubelet (the kubelet dials us while handling Register), retrying with
// exponential backoff while the kubelet refuses or does not answer. While
// the kubelet socket is absent it makes no attempt: it waits for a Kick or
// the periodic check (kubelet.sock appearing is a directory change). When our
// socket disappears it starts over; when the kubelet socket is replaced it
// registers again. When ctx ends it ends the ListAndWatch streams, stops
// the gRPC server, removes our socket and returns nil. It returns an error
// only for invalid options or when called while already running.
func (s *Server) Run(ctx context.Context) error {
	if err := s.opts.validate(); err != nil {
		return err
	}
	if !s.running.CompareAndSwap(false, true) {
		return fmt.Errorf("plugin %q: Run called twice", s.opts.ResourceName)
	}
	defer s.running.Store(false)
	if s.ownReg {
		defer s.reg.Close()
	}

	bo := backoff{min: s.opts.MinBackoff, max: s.opts.MaxBackoff}
	for {
		err := s.runOnce(ctx)
		if ctx.Err() != nil {
			s.log.Info().Msg("stopped")
			return nil
		}
		if errors.Is(err, errRestart) {
			s.log.Info().Str("socket", s.SocketPath()).Msg("our socket was removed or replaced (kubelet restart?); serving again")
			bo.reset()
			continue
		}
		d := bo.next()
		s.log.Warn().Err(err).Str("backoff", d.String()).Msg("serving failed; retrying")
		if !s.wait(ctx, d) {
			s.log.Info().Msg("stopped")
			return nil
		}
	}
}

// wait sleeps for d, waking early on Kick; it reports false when ctx ended.
func (s *Server) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-s.kick:
	case <-t.C:
	}
	return true
}

// runOnce serves one socket until ctx ends, the socket is removed, or
// serving fails, registering (again) whenever needed.
func (s *Server) runOnce(ctx context.Context) error {
	inst, err := s.listen()
	if err != nil {
		return err
	}
	defer inst.stop(s)
	s.setStatus(func(st *Status) { st.Serving = true })
	s.log.Info().Str("socket", inst.path).Msg("serving")

	var tick <-chan time.Time
	if s.opts.CheckInterval > 0 {
		t := time.NewTicker(s.opts.CheckInterval)
		defer t.Stop()
		tick = t.C
	}
	// bo grows with every failed registration and every stream the kubelet
	// closes right after accepting us; it is reset only when a re-check
	// finds the registration still holding, or a new kubelet appears.
	bo := backoff{min: s.opts.MinBackoff, max: s.opts.MaxBackoff}
	var kubelet fileID        // the kubelet socket we registered with
	var holdoff time.Duration // wait before the next registration
	for {
		var retry *time.Timer
		switch {
		case s.Registered():
		case holdoff > 0:
			retry = time.NewTimer(holdoff)
			holdoff = 0
		case !s.kubeletPresent():
			// No kubelet yet, or it is restarting: nothing to retry until
			// kubelet.sock appears, which is a directory change (Kick).
			// The daemon says once that it waits; per resource, debug.
			if st, _ := s.Status(); !st.WaitingForKubelet {
				s.log.Debug().Str("kubelet", s.kubeletPath()).Msg("waiting for the kubelet socket")
			}
			s.setStatus(func(st *Status) { st.WaitingForKubelet = true })
		default:
			s.setStatus(func(st *Status) { st.WaitingForKubelet = false })
			id, err := s.register(ctx, inst)
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.Is(err, errRestart):
				return err
			case err != nil:
				d := bo.next()
				s.log.Warn().Err(err).Str("backoff", d.String()).Msg("registration failed; retrying")
				retry = time.NewTimer(d)
			default:
				kubelet = id
				s.setStatus(func(st *Status) { st.Registered = true; st.Registrations++ })
				s.log.Info().Str("kubelet", s.kubeletPath()).Str("endpoint", s.opts.Socket).Msg("registered")
			}
		}
		var retryC <-chan time.Time
		if retry != nil {
			retryC = retry.C
		}
		select {
		case <-ctx.Done():
		case err := <-inst.serveErr:
			if retry != nil {
				retry.Stop()
			}
			return fmt.Errorf("serve %s: %w", inst.path, err)
		case <-s.kick:
		case <-tick:
		case <-retryC:
		}
		if retry != nil {
			retry.Stop()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Level-triggered re-check of the plugin directory.
		if !inst.ownsSocket() {
			return errRestart
		}
		if s.Registered() {
			switch reason := s.reregisterReason(kubelet); reason {
			case "":
				bo.reset()
			case reasonStreamLost:
				// Without a backoff, a kubelet that accepts every
				// registration and ends the stream at once would be
				// hammered with registrations in a tight loop.
				s.setStatus(func(st *Status) { st.Registered = false })
				holdoff = bo.next()
				s.log.Warn().Str("backoff", holdoff.String()).Msg(reasonStreamLost + "; re-registering after backoff")
			default:
				// A new kubelet (or none yet): register at once.
				s.setStatus(func(st *Status) { st.Registered = false })
				bo.reset()
				s.log.Info().Str("reason", reason).Msg("re-registering")
			}
		}
	}
}

// kubeletPresent reports whether something is at the kubelet socket path.
// Any error but its absence (a permission, say) counts as present: the
// registration attempt then says what is wrong, and backs off.
func (s *Server) kubeletPresent() bool {
	_, err := os.Stat(s.kubeletPath())
	return !errors.Is(err, fs.ErrNotExist)
}

// reregisterReason says why the registration with the kubelet we
// registered with no longer holds, or "" when it still does.
func (s *Server) reregisterReason(registeredWith fileID) string {
	fi, err := os.Stat(s.kubeletPath())
	if err != nil {
		return "kubelet socket gone"
	}
	if !registeredWith.same(fi) {
		return "kubelet socket replaced"
	}
	s.mu.Lock()
	lost := s.streamLost
	s.mu.Unlock()
	if lost {
		return reasonStreamLost
	}
	return ""
}

// reasonStreamLost is reregisterReason's answer when the kubelet ended the
// newest stream of our registration while its socket stayed the same.
const reasonStreamLost = "kubelet closed its ListAndWatch stream"

// register sends one Register request to the kubelet and returns the
// identity of the kubelet socket it was sent to.
func (s *Server) register(ctx context.Context, inst *instance) (fileID, error) {
	s.setStatus(func(st *Status) { st.Attempts++ })
	// kubelet removes every plugin socket before it creates kubelet.sock.
	// With kubelet.sock seen, that wipe has happened if it is going to, so
	// our socket is checked now: registering an endpoint that is gone would
	// leave kubelet dialling it until our register timeout (a 5 s stall
	// after a kubelet restart, found by the real-kubelet e2e suite).
	if _, err := os.Stat(s.kubeletPath()); err != nil {
		return fileID{}, fmt.Errorf("kubelet socket: %w", err)
	}
	if !inst.ownsSocket() {
		return fileID{}, errRestart
	}

	// Streams opened from now on belong to this attempt (the kubelet may
	// open ListAndWatch before its Register reply reaches us).
	s.mu.Lock()
	s.epoch++
	s.streamLost = false
	s.mu.Unlock()

	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	return s.reg.Register(rctx, s.kubeletPath(), &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     s.opts.Socket,
		ResourceName: s.opts.ResourceName,
		Options:      s.pluginOptions(),
	})
}

// pluginOptions are sent with Register and answered by
// GetDevicePluginOptions: both must agree.
func (s *Server) pluginOptions() *pluginapi.DevicePluginOptions {
	return &pluginapi.DevicePluginOptions{
		PreStartRequired:                false,
		GetPreferredAllocationAvailable: s.opts.PreferredAllocation,
	}
}

// openStream records a new ListAndWatch stream and returns its id and the
// registration epoch it belongs to.
func (s *Server) openStream() (id, epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastStream++
	s.streamLost = false
	s.setStatusLocked(func(st *Status) { st.Streams++ })
	return s.lastStream, s.epoch
}

// closeStream records the end of a stream. When the kubelet ended the
// newest stream of the current registration, the kubelet has most likely
// gone (a closed stream is how we see it stop), so Run is kicked to
// register again once a kubelet socket is there. Streams of older
// registrations end when the kubelet replaces an endpoint; they are not a
// sign of anything.
func (s *Server) closeStream(id, epoch uint64, byKubelet bool) {
	s.mu.Lock()
	lost := byKubelet && id == s.lastStream && epoch == s.epoch
	if lost {
		s.streamLost = true
	}
	s.setStatusLocked(func(st *Status) { st.Streams-- })
	s.mu.Unlock()
	if lost {
		s.log.Info().Msg("kubelet closed the ListAndWatch stream")
		s.Kick()
	}
}

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
	// A file left here by a crashed run (or anything else) would make
	// Listen fail with EADDRINUSE.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	lis, err := net.Listen("unix", path)
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
	s.setStatus(func(st *Status) { st.Registered = false })
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
	s.setStatus(func(st *Status) { st.Serving, st.WaitingForKubelet = false, false })
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

// backoff is a doubling delay between min and max.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }
