package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
)

// rewatchInterval is how often WatchDir retries watching a removed plugin
// directory, for when the parent's create event does not come.
const rewatchInterval = time.Second

// WatchDir watches the kubelet's plugin directory and calls onChange with
// the base name of every entry created, removed or renamed there (the
// kubelet removes plugin sockets when it starts, then creates
// kubelet.sock). onChange is called from WatchDir's goroutine and must not
// block; [Registrar.WatchDir] kicks its servers from it. An empty name
// means "anything may have changed": the watch was just put in place (the
// first call, always), the directory was removed or re-created, or events
// were lost.
//
// WatchDir creates dir if it is missing. It survives dir being removed and
// re-created (it watches the parent for that, and retries), and returns nil
// when ctx ends. Events are hints; whoever receives them re-reads the
// directory.
func WatchDir(ctx context.Context, dir string, log zerolog.Logger, onChange func(name string)) error {
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("plugin directory: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	defer w.Close()
	log = log.With().Str("dir", dir).Logger()

	if parent := filepath.Dir(dir); parent != dir {
		if err := w.Add(parent); err != nil {
			log.Warn().Err(err).Msg("cannot watch the parent directory; a re-created plugin directory is noticed by polling")
		}
	}
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	log.Info().Msg("watching plugin directory")
	// Whatever changed before the watch was in place is only seen by a
	// re-check; this call also tells the caller the watch is in place.
	onChange("")

	watching := true
	retry := time.NewTimer(rewatchInterval)
	retry.Stop()
	defer retry.Stop()
	rewatch := func() {
		if err := w.Add(dir); err != nil {
			retry.Reset(rewatchInterval)
			return
		}
		watching = true
		retry.Stop()
		log.Info().Msg("plugin directory is back; watching it again")
		onChange("")
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", dir)
			}
			name := filepath.Clean(ev.Name)
			switch {
			case name == dir && ev.Has(fsnotify.Remove|fsnotify.Rename):
				if watching {
					watching = false
					_ = w.Remove(dir) // gone already after a removal; not after a rename
					log.Info().Msg("plugin directory removed; waiting for it to come back")
					onChange("")
					retry.Reset(rewatchInterval)
				}
			case name == dir && ev.Has(fsnotify.Create):
				if !watching {
					rewatch()
				}
			case filepath.Dir(name) == dir && ev.Has(fsnotify.Create|fsnotify.Remove|fsnotify.Rename):
				log.Debug().Str("name", filepath.Base(name)).Stringer("op", ev.Op).Msg("plugin directory changed")
				onChange(filepath.Base(name))
			}
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", dir)
			}
			log.Warn().Err(err).Msg("watching plugin directory")
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				onChange("")
			}
		case <-retry.C:
			if !watching {
				rewatch()
			}
		}
	}
}

// fanOut is the set of servers running with one Registrar, which its
// plugin-directory watch and Kick wake, and what it last saw of the kubelet
// socket.
type fanOut struct {
	mu      sync.Mutex
	servers map[*Server]struct{}
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
	}
	f.servers[s] = struct{}{}
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.servers, s)
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
// creates kubelet.sock), kicks every server running with this registrar:
// each then re-checks whether it must serve or register again. While dir
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
	err := WatchDir(ctx, dir, log, func(string) { r.Kick() })
	if err != nil {
		// A watch that could not be set up has not checked yet: the wait
		// for the kubelet is still said at start.
		r.Kick()
	}
	return err
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
