package daemon

import (
	"context"
	"errors"
	"os"

	"github.com/smarter-project/smarter-device-manager/plugin"
)

// running is the device-plugin output of one resource: its plugin server
// and the snapshot it was last given.
type running struct {
	srv    *plugin.Server
	cancel context.CancelFunc
	done   chan struct{} // closed when the server's Run has returned
	snap   plugin.Snapshot
}

// apply carries out the plan's actions on the device-plugin output, and
// keeps d.resources, the plan's view of what runs, in step with it.
func (d *daemon) apply(ctx context.Context, acts []action) {
	if d.opts.Output != nil {
		d.applyOutput(acts)
		return
	}
	for _, a := range acts {
		if _, busy := d.stopping[a.name]; busy && a.op == opStart {
			// Its previous server still shuts down, and its clean-up (the
			// CDI spec) would undo the new one's: start once it is reaped.
			d.deferred = true
			delete(d.lastSeen, a.name) // asked of the rules only while it runs
			d.log.Debug().Str("resource", a.name).Msg("waiting for the resource's previous server to stop")
			continue
		}
		class := a.res.class
		for _, c := range a.changes {
			d.logChange(a.name, class, c)
		}
		switch a.op {
		case opStart:
			d.start(ctx, a.res)
		case opUpdate:
			old := d.resources[a.name]
			d.resources[a.name] = a.res
			d.update(d.servers[a.name], old, a.res)
		case opStop:
			d.logStop(a)
			delete(d.resources, a.name)
			delete(d.lastSeen, a.name)
			d.stop(a.name)
		}
	}
}

// logStop says why a resource stops.
func (d *daemon) logStop(a action) {
	switch {
	case a.why == stopUnwanted:
		d.log.Info().Str("resource", a.name).Msg("no rule asks for this resource any more; stopping")
	case a.res.class:
		d.log.Info().Str("resource", a.name).Msg("every device of the class stayed away; removing resource")
	default:
		d.log.Info().Str("resource", a.name).Stringer("after", d.opts.RemoveAfter).Msg("device stayed away; removing resource")
	}
}

// logChange says what happened to one unit. A plain resource's unit comes
// and goes with the resource, which says so itself.
func (d *daemon) logChange(name string, class bool, c unitChange) {
	var msg string
	switch {
	case c.what == unitAdded && class:
		msg = "device added to class"
	case c.what == unitBack:
		msg = "device back; healthy"
	case c.what == unitGone:
		msg = "device removed; unhealthy"
	case c.what == unitRemoved && class:
		msg = "device stayed away; its IDs removed"
	default:
		return
	}
	ev := d.log.Info().Str("resource", name).Str("device", c.device)
	if class {
		ev = ev.Str("id", c.key)
	}
	ev.Msg(msg)
}

// start starts a resource's plugin server with its first snapshot, its
// CDI spec written first.
func (d *daemon) start(ctx context.Context, r resource) {
	snap := snapshot(r)
	d.writeCDI(r)
	srvCtx, cancel := context.WithCancel(ctx)
	srv := plugin.NewServer(plugin.Options{
		ResourceName: r.name,
		Socket:       r.socket,
		Dir:          d.opts.PluginDir,
		Logger:       d.log, // the server tags its lines with the resource itself
		MinBackoff:   d.opts.ServerMinBackoff,
		MaxBackoff:   d.opts.ServerMaxBackoff,
		Registrar:    d.reg,
		// The plugin-dir watch kicks servers on every change, and the
		// resync kicks them all: no per-server polling.
		CheckInterval:       -1,
		PreferredAllocation: preferredAllocation(r),
	}, snap)
	s := &running{srv: srv, cancel: cancel, done: make(chan struct{}), snap: snap}
	d.servers[r.name] = s
	d.resources[r.name] = r
	ev := d.log.Info().Str("resource", r.name)
	if !r.class {
		ev = ev.Str("device", r.units[0].device)
	}
	ev.Int("ids", r.count).Msg("device added; starting resource")
	d.serveWG.Go(func() {
		defer func() {
			close(s.done)
			signal(d.reaped)
		}()
		if err := srv.Run(srvCtx); err != nil {
			d.log.Error().Err(err).Str("resource", r.name).Msg("plugin server stopped")
		}
	})
}

// update gives a running server the resource's new snapshot, and rewrites
// its CDI spec when that changed; a resource that renders the same in
// both changes nothing. The spec is compared apart from the snapshot: it
// carries what the device plugin API cannot (a node's owner and mode).
func (d *daemon) update(s *running, old, r resource) {
	snap := snapshot(r)
	sameSnap := s.snap.Equal(snap)
	if sameSnap && !cdiChanged(old, r) {
		return
	}
	if s.snap.CDIKind != snap.CDIKind {
		// cdi: turned off (or the kind renamed): no spec may outlive it.
		d.removeCDI(s.snap.CDIKind)
	}
	d.writeCDI(r)
	if !sameSnap {
		s.snap = snap
		s.srv.Update(snap)
	}
}

// writeCDI writes a resource's CDI spec before any allocation can name it.
func (d *daemon) writeCDI(r resource) {
	if r.cdiKind == "" {
		return
	}
	if err := writeCDISpec(d.opts.CDIDir, r.cdiKind, r); err != nil {
		d.opts.Stats.Errors.Add(1)
		d.log.Error().Err(err).Str("dir", d.opts.CDIDir).Msg("cannot write CDI spec")
	}
}

// removeCDI removes the CDI spec of a kind ("" has none).
func (d *daemon) removeCDI(kind string) {
	if kind == "" {
		return
	}
	if err := os.Remove(cdiFile(d.opts.CDIDir, kind)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn().Err(err).Msg("cannot remove CDI spec")
	}
}

// stop cancels one server and moves it to d.stopping, without waiting:
// each server's shutdown is bounded (plugin.Server's grace period) but a
// kubelet that holds its connection makes it last that long, and a reload
// that drops many resources must neither wait for them in turn nor keep
// the loop from answering meanwhile. reap finishes the stop.
func (d *daemon) stop(name string) {
	s := d.servers[name]
	delete(d.servers, name)
	s.cancel()
	d.stopping[name] = s
}

// reap finishes the stops whose server has returned (its socket is gone):
// their CDI specs go. It reports whether a start waited while one of them
// stopped: a reconcile then starts it (or defers it again, if what it
// waits for still stops).
func (d *daemon) reap() bool {
	reaped := false
	for name, s := range d.stopping {
		select {
		case <-s.done:
			d.removeCDI(s.snap.CDIKind)
			delete(d.stopping, name)
			reaped = true
		default:
		}
	}
	if !reaped || !d.deferred {
		return false
	}
	d.deferred = false
	return true
}

// stopAll stops every server, those already stopping included, all at
// once, and waits for them.
func (d *daemon) stopAll() {
	for _, s := range d.servers {
		s.cancel()
	}
	d.serveWG.Wait()
	for _, s := range d.servers {
		d.removeCDI(s.snap.CDIKind)
	}
	d.reap()
	d.log.Info().Int("resources", len(d.servers)).Msg("stopped every plugin server")
	clear(d.servers)
	clear(d.resources)
}
