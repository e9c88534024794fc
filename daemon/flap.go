package daemon

import (
	"math"
	"slices"
	"strings"
	"time"
)

// FlapDamping holds down a device that keeps coming and going (a worn
// cable, a failing hub, a brown-out), as routers damp a flapping route
// (RFC 2439): every change of a unit (unplugged, plugged back) adds 1 to
// its penalty, which halves every HalfLife. A change that leaves the
// penalty below Suppress is passed on at once, so a clean plug or unplug
// keeps its latency; at Suppress the unit is held: reported unhealthy
// (device plugin) or tainted "flapping" (DRA), the same whether it is
// there or not at each read, so its flapping costs the kubelet and the API
// server nothing more, until its penalty has decayed below Reuse (1). The
// penalty never exceeds what decays below Reuse in MaxHold, so a unit is
// released at most MaxHold after its last change. HalfLife 0 turns it off.
type FlapDamping struct {
	HalfLife time.Duration
	Suppress float64
	MaxHold  time.Duration
}

// DefaultFlapDamping holds a unit at about its 7th change within a few
// seconds (a person unplugging and replugging a device twice or three
// times passes; a loose cable's dozens of changes a second do not) and
// releases it after some 25 s of quiet (2 minutes at most after a long
// flap).
var DefaultFlapDamping = FlapDamping{HalfLife: 10 * time.Second, Suppress: 6, MaxHold: 2 * time.Minute}

// flapReuse is the penalty below which a held unit is released.
const flapReuse = 1.0

// flapForget is the penalty below which an absent unit's history is
// forgotten: plugged in again later, it is a new device.
const flapForget = 0.05

type flapKey struct{ res, key string }

// flapUnit is one unit's damping state.
type flapUnit struct {
	penalty float64
	at      time.Time // when penalty was computed
	present bool      // at the last read
	held    bool
	changes int  // changes since the episode began (for the log)
	last    unit // the unit as last read present
	// shown is what a held unit shows: the unit as last read present when
	// it was held. A device re-added reads a little differently each time
	// (a block device's DISKSEQ, say): showing the fresh read would push
	// every change again.
	shown  unit
	device string
}

// flapGuard is the daemon's damping state, owned by the event loop.
type flapGuard struct {
	p     FlapDamping
	units map[flapKey]*flapUnit
	// episodes counts, per resource, the times one of its units was held.
	episodes map[string]uint64
}

func newFlapGuard(p FlapDamping) *flapGuard {
	return &flapGuard{p: p, units: map[flapKey]*flapUnit{}, episodes: map[string]uint64{}}
}

// flapEvent is a unit held or released, for the log.
type flapEvent struct {
	res, device string
	held        bool
	changes     int
}

func (g *flapGuard) decay(u *flapUnit, now time.Time) {
	if dt := now.Sub(u.at); dt > 0 {
		u.penalty *= math.Exp2(-float64(dt) / float64(g.p.HalfLife))
	}
	u.at = now
}

// ceiling is the highest penalty: the one that decays to flapReuse in
// MaxHold.
func (g *flapGuard) ceiling() float64 {
	if g.p.MaxHold <= 0 {
		return math.Max(g.p.Suppress, flapReuse) * 16
	}
	return flapReuse * math.Exp2(float64(g.p.MaxHold)/float64(g.p.HalfLife))
}

func (g *flapGuard) change(u *flapUnit, now time.Time) {
	g.decay(u, now)
	u.penalty = math.Min(u.penalty+1, g.ceiling())
	u.changes++
}

// filter damps one read: desired is what the read found (each present
// unit in its resource). It returns desired with every held unit shown as
// held (present, flapping: unhealthy), whatever the read found of it, the
// units held or released by this read, and when the next release is due
// (zero if none is held).
func (g *flapGuard) filter(desired []resource, now time.Time) ([]resource, []flapEvent, time.Time) {
	if g == nil || g.p.HalfLife <= 0 {
		return desired, nil, time.Time{}
	}
	seen := make(map[flapKey]bool, len(g.units))
	for _, r := range desired {
		for _, u := range r.units {
			k := flapKey{r.name, u.key}
			seen[k] = true
			st := g.units[k]
			if st == nil {
				g.units[k] = &flapUnit{present: true, at: now, last: u, device: u.device}
				continue
			}
			if !st.present {
				g.change(st, now)
			}
			st.present, st.last, st.device = true, u, u.device
		}
	}
	var events []flapEvent
	var next time.Time
	held := map[flapKey]*flapUnit{}
	for k, st := range g.units {
		if st.present && !seen[k] {
			g.change(st, now)
			st.present = false
		}
		g.decay(st, now)
		switch {
		case !st.held && st.penalty >= g.p.Suppress:
			st.held, st.shown = true, st.last
			st.shown.flapping = true
			g.episodes[k.res]++
			events = append(events, flapEvent{res: k.res, device: st.device, held: true, changes: st.changes})
		case st.held && st.penalty < flapReuse:
			st.held = false
			events = append(events, flapEvent{res: k.res, device: st.device, changes: st.changes})
			st.changes = 0
		}
		if st.held {
			held[k] = st
			release := now.Add(time.Duration(float64(g.p.HalfLife) * math.Log2(st.penalty/flapReuse)))
			if next.IsZero() || release.Before(next) {
				next = release
			}
			continue
		}
		if !st.present && st.penalty < flapForget {
			delete(g.units, k)
		} else if st.penalty < flapForget {
			st.changes = 0
		}
	}
	slices.SortFunc(events, func(a, b flapEvent) int { return strings.Compare(a.res+a.device, b.res+b.device) })
	if len(held) == 0 {
		return desired, events, next
	}
	out := make([]resource, len(desired))
	for i, r := range desired {
		out[i] = r
		var units []unit
		touched := false
		for _, u := range r.units {
			if st, ok := held[flapKey{r.name, u.key}]; ok {
				u, touched = st.shown, true
			}
			units = append(units, u)
		}
		// A held unit the read did not find shows the same.
		for k, st := range held {
			if k.res == r.name && !st.present {
				units, touched = append(units, st.shown), true
			}
		}
		if touched {
			slices.SortFunc(units, func(a, b unit) int { return strings.Compare(a.key, b.key) })
			out[i].units = units
		}
	}
	return out, events, next
}

// heldByResource counts the units held now, by resource: one pass for a
// whole report.
func (g *flapGuard) heldByResource() map[string]int {
	out := map[string]int{}
	if g == nil {
		return out
	}
	for k, st := range g.units {
		if st.held {
			out[k.res]++
		}
	}
	return out
}

// logFlaps warns once when a unit is held for flapping, and says when it
// is released.
func (d *daemon) logFlaps(events []flapEvent) {
	for _, e := range events {
		if e.held {
			d.log.Warn().Str("resource", e.res).Str("device", e.device).Int("changes", e.changes).
				Stringer("half_life", d.opts.FlapDamping.HalfLife).
				Msg("device keeps coming and going (a loose cable or a failing hub?): held unhealthy until it is quiet")
			continue
		}
		d.log.Info().Str("resource", e.res).Str("device", e.device).Int("changes", e.changes).
			Msg("device quiet again: no longer held for flapping")
	}
}
