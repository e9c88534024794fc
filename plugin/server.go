package plugin

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/internal/backoff"
)

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
	// rs is the serving and registration state, streams included.
	rs regState
	// Counters of answered calls.
	allocations, preferredAllocations int
	statusCh                          chan struct{} // closed and replaced whenever Status changes

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
// snapshot. Zero Options fields take the defaults (DefaultKubeletSocket
// and the others); Run reports invalid options.
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
		rs:       newRegState(opts.MinBackoff, opts.MaxBackoff),
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
	return s.statusLocked(), s.statusCh
}

func (s *Server) statusLocked() Status {
	r := &s.rs
	return Status{
		Serving:              r.serving,
		Registered:           r.registered,
		Registrations:        r.registrations,
		Allocations:          s.allocations,
		PreferredAllocations: s.preferredAllocations,
		Attempts:             r.attempts,
		WaitingForKubelet:    r.waiting,
		Streams:              r.streams,
	}
}

// change runs fn with s.mu held and, if the status changed, wakes whoever
// waits on it.
func (s *Server) change(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.statusLocked()
	fn()
	if s.statusLocked() != old {
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
// makes Run look again: [Registrar.WatchDir] kicks every server running with
// its registrar.
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
	defer s.reg.join(s)()

	bo := backoff.New(s.opts.MinBackoff, s.opts.MaxBackoff)
	for {
		err := s.runOnce(ctx)
		if ctx.Err() != nil {
			s.log.Info().Msg("stopped")
			return nil
		}
		if errors.Is(err, errRestart) {
			s.log.Info().Str("socket", s.SocketPath()).Msg("our socket was removed or replaced (kubelet restart?); serving again")
			bo.Reset()
			continue
		}
		d := bo.Next()
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
