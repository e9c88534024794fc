package plugin

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/rs/zerolog"
)

// fanOut is the set of servers running with one Registrar, which its
// plugin-directory watch and Kick wake, and what it last saw of the kubelet
// socket.
type fanOut struct {
	mu      sync.Mutex
	servers map[*Server]struct{}
	// bySocket is servers by socket name: a change of one socket kicks
	// its servers without a walk over all of them.
	bySocket map[string]map[*Server]struct{}
	// kubelet is the kubelet socket that WatchDir watches for, with the
	// logger that says when it goes and comes back; "" before WatchDir.
	kubelet string
	log     zerolog.Logger
	waiting bool // the last check found no kubelet socket (and said so)
}

// join adds s to the servers that Kick and WatchDir wake, until the
// returned func is called. Server.Run joins for as long as it runs.
func (r *Registrar) join(s *Server) (leave func()) {
	f := &r.fan
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.servers == nil {
		f.servers = make(map[*Server]struct{})
		f.bySocket = make(map[string]map[*Server]struct{})
	}
	f.servers[s] = struct{}{}
	name := s.opts.Socket
	if f.bySocket[name] == nil {
		f.bySocket[name] = make(map[*Server]struct{}, 1)
	}
	f.bySocket[name][s] = struct{}{}
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.servers, s)
		delete(f.bySocket[name], s)
		if len(f.bySocket[name]) == 0 {
			delete(f.bySocket, name)
		}
	}
}

// Kick asks every server running with this registrar to re-check the
// plugin directory, as [Server.Kick] does for one, and, once WatchDir has
// begun, says whether the kubelet socket went or came back. It never
// blocks. Called now and then, it is the safety net for lost directory
// events and for a watch that could not be set up.
func (r *Registrar) Kick() {
	f := &r.fan
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checkKubeletLocked()
	for s := range f.servers {
		s.Kick()
	}
}

// WatchDir runs [WatchDir] on the kubelet's plugin directory dir and, at
// every change (the kubelet removes plugin sockets when it starts, then
// creates kubelet.sock), kicks the servers it may concern: each then
// re-checks whether it must serve or register again. A change of the
// kubelet socket (or an unknown change) concerns every server; one of a
// server's own socket concerns only that server, so that n servers
// starting cost n re-checks, not n². While dir
// has no kubelet socket, every server waits without retrying; WatchDir says
// so once on log, at info, and again when the socket appears, so that the
// reason nothing registers is in the log once, not once per resource. It
// returns as WatchDir does.
func (r *Registrar) WatchDir(ctx context.Context, dir string, log zerolog.Logger) error {
	f := &r.fan
	f.mu.Lock()
	// Set before anything can fail: Kick still says it when the watch is
	// not in place.
	f.kubelet, f.log = filepath.Join(filepath.Clean(dir), DefaultKubeletSocket), log
	f.mu.Unlock()
	err := WatchDir(ctx, dir, log, r.kickFor)
	if err != nil {
		// A watch that could not be set up has not checked yet: the wait
		// for the kubelet is still said at start.
		r.Kick()
	}
	return err
}

// kickFor kicks the servers a change of the entry name in the plugin
// directory concerns: all of them for the kubelet socket or "" (anything
// may have changed), else those serving on a socket of that name.
func (r *Registrar) kickFor(name string) {
	f := &r.fan
	if name == "" || f.kubeletName() == name {
		r.Kick()
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.bySocket[name] {
		s.Kick()
	}
}

// kubeletName is the base name of the kubelet socket WatchDir watches for.
func (f *fanOut) kubeletName() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return filepath.Base(f.kubelet)
}

// checkKubeletLocked says when the kubelet socket goes and comes back;
// f.mu must be held.
func (f *fanOut) checkKubeletLocked() {
	if f.kubelet == "" {
		return
	}
	_, err := os.Stat(f.kubelet)
	absent := errors.Is(err, fs.ErrNotExist)
	switch {
	case absent && !f.waiting:
		f.log.Info().Str("socket", f.kubelet).Msg("waiting for the kubelet: no kubelet socket in the plugin directory; resources register when it appears")
	case !absent && f.waiting:
		f.log.Info().Str("socket", f.kubelet).Msg("kubelet socket appeared; registering")
	}
	f.waiting = absent
}
