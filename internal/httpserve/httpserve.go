// Package httpserve serves the daemon's HTTP endpoints (/metrics, /healthz,
// /readyz on the host network; pprof on --debug-addr) with net/http's own
// server, its limits set, behind a listener that bounds how many
// connections are held at once without starving the probes.
//
// What a stranger on the network can cost is bounded by net/http:
// MaxHeaderBytes (a longer request line or header block gets 431),
// ReadHeaderTimeout and ReadTimeout (a slow sender is cut), WriteTimeout (a
// client that does not read is cut), IdleTimeout (a kept-alive connection
// is closed). And by this package: at most Options.MaxConns connections
// are held; one more evicts the connection that has waited longest
// without a request being handled (a slowloris or an idle one), so a new
// connection, such as the kubelet's liveness probe, is always served.
// (golang.org/x/net/netutil.LimitListener would instead leave the probe in
// the kernel's accept queue behind the attacker's connections.)
//
// It does not authenticate: the endpoints say nothing secret, and the
// kubelet's probes carry no credentials.
package httpserve

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Defaults for [Options]' zero fields, and the server's fixed limits.
const (
	// DefaultMaxConns is the connection budget: at ~15 KiB per connection
	// held (net/http's goroutine, read and write buffers) about 4 MiB.
	DefaultMaxConns = 256
	// DefaultWriteTimeout bounds writing a response; a handler that needs
	// longer (a CPU profile) extends it with http.ResponseController.
	DefaultWriteTimeout = 10 * time.Second

	// readHeaderTimeout bounds reading a request's header, readTimeout
	// the whole request: the endpoints take no body.
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	// idleTimeout closes a kept-alive connection (a Prometheus scraping
	// every 15-60 s keeps its connection; the kubelet's probes do not).
	idleTimeout = 60 * time.Second
	// maxHeaderBytes bounds a request's line and header: a scrape or a
	// probe sends a few hundred bytes. net/http answers 431 past it.
	maxHeaderBytes = 8 << 10
)

// Options configure [Serve].
type Options struct {
	// MaxConns is the connection budget; zero means DefaultMaxConns,
	// lowered to a quarter of the process's file-descriptor limit so
	// that HTTP alone can never exhaust it.
	MaxConns int
	// WriteTimeout; zero means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// ErrorLog receives net/http's own errors: accept errors (retried),
	// a handler's panic (the connection is closed).
	ErrorLog *log.Logger
}

// Server is a running server.
type Server struct {
	srv  *http.Server
	ln   *listener
	done chan struct{}
}

// Serve serves h on ln until Close.
func Serve(ln net.Listener, h http.Handler, o Options) *Server {
	if o.MaxConns <= 0 {
		o.MaxConns = min(DefaultMaxConns, fdBudget())
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	l := newListener(ln, o.MaxConns)
	s := &Server{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      o.WriteTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          o.ErrorLog,
			ConnState:         l.ConnState,
		},
		ln:   l,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		// Returns http.ErrServerClosed after Close.
		_ = s.srv.Serve(l)
	}()
	return s
}

// Close stops accepting, gives the requests being handled until ctx ends,
// then closes every connection, and waits for the server's goroutine.
func (s *Server) Close(ctx context.Context) {
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}

// fdBudget is a quarter of the file-descriptor limit.
func fdBudget() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return DefaultMaxConns
	}
	return int(min(rl.Cur/4, DefaultMaxConns))
}

// listener holds at most a budget of connections: accepting one more
// closes the connection that has waited longest without a request in a
// handler (http.StateNew or http.StateIdle), or failing that, the one
// whose request has been in a handler longest. Its ConnState must be the
// http.Server's ConnState hook: that is how it learns a connection's state.
type listener struct {
	net.Listener
	max int

	mu    sync.Mutex
	conns map[net.Conn]*connEntry
	// Evicted counts connections closed to make room.
	evicted uint64
}

type connEntry struct {
	state http.ConnState
	since time.Time // when it entered state
}

// newListener wraps ln with a budget of max connections.
func newListener(ln net.Listener, max int) *listener {
	return &listener{Listener: ln, max: max, conns: make(map[net.Conn]*connEntry)}
}

// Accept accepts a connection, evicting one held if the budget is spent.
// When the process is out of file descriptors, a held connection is
// evicted too, so that the next accept can succeed; the error still goes
// to http.Server, which logs it and retries with a backoff.
func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			l.mu.Lock()
			l.evictLocked()
			l.mu.Unlock()
		}
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) >= l.max {
		l.evictLocked()
	}
	l.conns[c] = &connEntry{state: http.StateNew, since: time.Now()}
	return c, nil
}

// evictLocked closes the connection that has waited longest for a
// request, else the longest in a handler. (A hijacked connection is not
// the server's any more: ConnState forgets it.)
func (l *listener) evictLocked() {
	var victim net.Conn
	var ve *connEntry
	for c, e := range l.conns {
		if ve == nil || waiting(e.state) && !waiting(ve.state) ||
			waiting(e.state) == waiting(ve.state) && e.since.Before(ve.since) {
			victim, ve = c, e
		}
	}
	if victim == nil {
		return
	}
	delete(l.conns, victim)
	l.evicted++
	// The server sees the read fail and ends the connection's goroutine.
	_ = victim.Close()
}

func waiting(s http.ConnState) bool { return s == http.StateNew || s == http.StateIdle }

// ConnState is the http.Server hook that tracks each connection's state.
func (l *listener) ConnState(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case http.StateClosed, http.StateHijacked:
		delete(l.conns, c)
	default:
		if e, ok := l.conns[c]; ok && e.state != s {
			e.state, e.since = s, time.Now()
		}
	}
}

// Stats returns the connections held and those evicted so far.
func (l *listener) Stats() (held int, evicted uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns), l.evicted
}
