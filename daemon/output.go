package daemon

import (
	"context"
	"maps"
	"slices"
	"time"
)

// Output is an output of the plan other than the device plugin: the DRA
// driver (package dra), which daemon knows nothing of. With
// Options.Output set the daemon starts no plugin server; after every
// reconcile that changed anything it hands the output each resource as it
// now runs, its units present and absent (until RemoveAfter), and what
// changed. The output renders them itself, as the device plugin renders
// the same plan (render.go).
type Output interface {
	// Run serves until ctx ends. An error stops the daemon: Run returns it.
	Run(ctx context.Context) error
	// Update is given every running resource, sorted by name, each with
	// its units sorted by key, and what changed since the last call, in
	// the same order. The event loop calls it: it must not block. The
	// slices are the output's to keep.
	Update(resources []Resource, changes []Change)
	// Registered reports whether the kubelet has registered the output,
	// for the readiness endpoint.
	Registered() bool
}

// Resource is one running resource as an Output sees it.
type Resource struct {
	// Name is the resource's name, e.g. smarter-devices/ttyUSB0: the
	// extended resource it is in device-plugin mode.
	Name string
	// Class: each unit is a physical device of the class, named by its
	// member key; otherwise the resource is one unit.
	Class bool
	// Count is how many may hold a unit at once (rule count); 0 offers
	// none, as the device plugin advertises no IDs.
	Count int
	// EvictOnUnplug is the rule's evict_on_unplug.
	EvictOnUnplug bool
	Units         []Unit
}

// Unit is one allocatable unit of a Resource: a class member (a physical
// device with all its nodes), or the whole of a plain resource.
type Unit struct {
	Key    string // member key; "" for a plain resource
	Device string // its first node or directory below the device root, or gpu.N
	// AbsentSince is when the unit was found gone (it stays, with the
	// content it last had, until RemoveAfter); zero while present.
	AbsentSince time.Time
	// Content is what a container gets with the unit.
	Content Content
	// Identity is what sysfs and udev say the unit is.
	Identity Identity
	// Healthy is what the device plugin says of the unit's IDs: present,
	// not flapping, and for a plain resource with the companions it
	// requires.
	Healthy bool
	// Flapping: the unit keeps coming and going and is held down until it
	// is quiet (FlapDamping); it shows as present meanwhile.
	Flapping bool
}

// Present reports whether the unit was there at the last read.
func (u Unit) Present() bool { return u.AbsentSince.IsZero() }

// Change is what happened to one unit of a resource.
type Change struct {
	Resource, Key, Device string
	Kind                  ChangeKind
}

// ChangeKind says what happened to a unit.
type ChangeKind int

// What happens to a unit, as the plan says it (plan.go).
const (
	UnitAdded   = ChangeKind(unitAdded)   // new: present for the first time
	UnitBack    = ChangeKind(unitBack)    // present again, under its old key
	UnitGone    = ChangeKind(unitGone)    // found absent: it stays, absent
	UnitRemoved = ChangeKind(unitRemoved) // absent longer than RemoveAfter: gone
)

// applyOutput carries out the plan's actions on an Output: d.resources,
// the plan's view of what runs, is all it keeps, and the output is given
// the whole of it.
func (d *daemon) applyOutput(acts []action) {
	// The first state read reaches the output even when it changes
	// nothing (no device yet): until then the output cannot tell "none"
	// from "not read yet", and a DRA driver that published before it
	// wrote its pool twice at a restart.
	if len(acts) == 0 && d.outputSent {
		return
	}
	d.outputSent = true
	var changes []Change
	for _, a := range acts {
		for _, c := range a.changes {
			d.logChange(a.name, a.res.class, c)
			changes = append(changes, Change{Resource: a.name, Key: c.key, Device: c.device, Kind: ChangeKind(c.what)})
		}
		switch a.op {
		case opStart:
			ev := d.log.Info().Str("resource", a.name)
			if !a.res.class {
				ev = ev.Str("device", a.res.units[0].device)
			}
			ev.Msg("device added; publishing resource")
			d.resources[a.name] = a.res
		case opUpdate:
			d.resources[a.name] = a.res
		case opStop:
			d.logStop(a)
			delete(d.resources, a.name)
			delete(d.lastSeen, a.name)
		}
	}
	d.opts.Output.Update(d.outputView(), changes)
}

// outputView is every running resource as an Output sees it.
func (d *daemon) outputView() []Resource {
	out := make([]Resource, 0, len(d.resources))
	for _, name := range slices.Sorted(maps.Keys(d.resources)) {
		r := d.resources[name]
		v := Resource{Name: r.name, Class: r.class, Count: r.count, EvictOnUnplug: r.evict, Units: make([]Unit, len(r.units))}
		for i, u := range r.units {
			v.Units[i] = Unit{Key: u.key, Device: u.device, AbsentSince: u.absentSince, Content: u.content, Identity: u.ident, Healthy: healthy(r, u), Flapping: u.flapping}
		}
		out = append(out, v)
	}
	return out
}

// reportOutput answers a probe for an Output: its resources as the plan
// sees them, each with its units as devices and the usable ones as
// healthy, registered while the output is.
func (d *daemon) reportOutput(r *Report) {
	registered := d.opts.Output.Registered()
	r.WaitingForKubelet = !registered
	held := d.flap.heldByResource()
	for name, res := range d.resources {
		st := ResourceStatus{Registered: registered, Devices: len(res.units), Flapping: held[name], FlapEpisodes: d.flap.episodes[name]}
		for _, u := range res.units {
			if healthy(res, u) {
				st.Healthy++
			}
		}
		r.Resources[name] = st
	}
}
