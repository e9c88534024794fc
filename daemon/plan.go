package daemon

import (
	"slices"
	"strings"
	"time"
)

// resource is one resource as the plan sees it: what the rules ask for
// (every unit present), or what runs (units present or absent).
type resource struct {
	settings
	// units are the resource's allocatable units, sorted by key: one for
	// a plain resource (key ""), one per physical device for a class.
	units []unit
}

// settings are what the rules say of a resource as a whole. It is
// comparable, so a field added here is compared by resource.equal.
type settings struct {
	name   string // e.g. smarter-devices/ttyUSB0
	socket string // the plugin socket's base name
	// class: each unit is a member with IDs of its own, derived from its
	// key; otherwise the resource is a class of one whose IDs are
	// "0" … "count-1" (unitIDs).
	class   bool
	count   int    // IDs per unit
	cdiKind string // the CDI kind when the rule says cdi: true; "" otherwise
	evict   bool   // the rule's evict_on_unplug (an Output's concern)
}

// unit is one allocatable unit of a resource: a class member (a physical
// device with all its nodes), or the whole of a plain resource.
type unit struct {
	key    string // member key; "" for a plain resource
	device string // its first node or directory (or gpu.N), for logs
	// content is what a container gets with it; an absent unit keeps what
	// it last had.
	content Content
	// ident describes the unit to an Output; zero without one. An absent
	// unit keeps what it last had.
	ident Identity
	// absentSince is when the unit was first found gone; zero while present.
	absentSince time.Time
	// flapping: the unit keeps coming and going and is held down
	// (FlapDamping): unhealthy, shown the same whether it is there or not.
	flapping bool
}

// equal reports whether two resources are the same to every output.
func (r resource) equal(o resource) bool {
	return r.settings == o.settings && slices.EqualFunc(r.units, o.units, unit.equal)
}

func (u unit) equal(o unit) bool {
	return u.key == o.key && u.device == o.device && u.absentSince.Equal(o.absentSince) && u.flapping == o.flapping && u.content.equal(o.content) && u.ident == o.ident
}

// present reports whether the unit was there at the last read.
func (u unit) present() bool { return u.absentSince.IsZero() }

// op is what an action does to a resource.
type op int

const (
	opStart  op = iota + 1 // a new resource: start its outputs
	opUpdate               // a running resource changed
	opStop                 // stop it: why says why
)

// stopReason says why a resource stops.
type stopReason int

const (
	stopUnwanted stopReason = iota + 1 // no rule makes it any more
	stopAway                           // every unit stayed away longer than remove-after
)

// change is what happened to one unit.
type change int

const (
	unitAdded   change = iota + 1 // new: present for the first time
	unitBack                      // present again after being absent
	unitGone                      // found absent: unhealthy (tainted) from now on
	unitRemoved                   // absent longer than remove-after: its IDs go
)

// unitChange is a change of one unit, for the applier's log (and an
// output that marks absent units itself, e.g. with a taint).
type unitChange struct {
	key, device string
	what        change
}

// action is one step the plan asks of the applier.
type action struct {
	op   op
	name string
	// res is the resource as it is to be: for opStart and opUpdate the
	// state to apply, for opStop the state it had.
	res     resource
	changes []unitChange
	why     stopReason // opStop only
}

// plan moves running towards desired: it starts a resource the rules ask
// for and that does not run, updates one whose settings or units changed,
// and stops one no rule asks for. A unit missing from desired stays, absent
// (its IDs unhealthy) with the content it last had, until removeAfter
// (0: forever), then goes; a resource whose every unit went stops. A unit
// back under the same key is present again, under the same IDs.
//
// desired holds one entry per resource the rules make, sorted by name,
// with its present units; an entry with none is a resource the rules
// still make though none of its devices is here. plan is a pure function:
// it returns the actions, sorted by resource name, and the earliest
// removal deadline still ahead (zero if none), when it must run again.
func plan(desired []resource, running map[string]resource, now time.Time, removeAfter time.Duration) ([]action, time.Time) {
	if !slices.IsSortedFunc(desired, byName) {
		desired = slices.Clone(desired)
		sortByName(desired)
	}
	var acts []action
	var next time.Time
	matched := 0 // running resources found in desired
	for _, want := range desired {
		cur, ok := running[want.name]
		if !ok {
			if len(want.units) == 0 {
				continue // nothing to serve, nothing served
			}
			a := action{op: opStart, name: want.name, res: want}
			for _, u := range want.units {
				a.changes = append(a.changes, unitChange{u.key, u.device, unitAdded})
			}
			acts = append(acts, a)
			continue
		}
		matched++
		units, changes, deadline := mergeUnits(cur, want, now, removeAfter)
		if !deadline.IsZero() && (next.IsZero() || deadline.Before(next)) {
			next = deadline
		}
		res := resource{settings: want.settings, units: units}
		switch {
		case len(units) == 0:
			acts = append(acts, action{op: opStop, name: want.name, res: cur, changes: changes, why: stopAway})
		case !res.equal(cur):
			acts = append(acts, action{op: opUpdate, name: want.name, res: res, changes: changes})
		}
	}
	if matched < len(running) {
		for name, cur := range running {
			if _, wanted := findByName(desired, name); !wanted {
				acts = append(acts, action{op: opStop, name: name, res: cur, why: stopUnwanted})
			}
		}
	}
	slices.SortFunc(acts, func(a, b action) int { return strings.Compare(a.name, b.name) })
	return acts, next
}

func byName(a, b resource) int { return strings.Compare(a.name, b.name) }

// sortByName sorts resources by name; one already sorted costs a check.
func sortByName(rs []resource) {
	if !slices.IsSortedFunc(rs, byName) {
		slices.SortFunc(rs, byName)
	}
}

// findByName finds a resource by name in resources sorted by name.
func findByName(rs []resource, name string) (int, bool) {
	return slices.BinarySearchFunc(rs, name, func(r resource, name string) int { return strings.Compare(r.name, name) })
}

// mergeUnits merges the units present now (want) into those a running
// resource has: present ones take their new content, absent ones are
// marked so (once) and dropped past removeAfter. Both lists are sorted by
// key, and so is the result; it also returns what changed, in key order,
// and the earliest removal deadline ahead.
func mergeUnits(cur, want resource, now time.Time, removeAfter time.Duration) ([]unit, []unitChange, time.Time) {
	had := cur.units
	if cur.class != want.class {
		// A rule that turned a plain resource into a class of the same
		// name (or back) changes what its IDs are: none carries over.
		had = nil
	}
	if slices.EqualFunc(had, want.units, func(a, b unit) bool { return a.key == b.key && a.present() }) {
		return want.units, nil, time.Time{} // the same units, all still here
	}
	units := make([]unit, 0, max(len(had), len(want.units)))
	var changes []unitChange
	var next time.Time
	away := func(u unit) {
		if u.present() {
			u.absentSince = now
			changes = append(changes, unitChange{u.key, u.device, unitGone})
		}
		if removeAfter > 0 {
			deadline := u.absentSince.Add(removeAfter)
			if !now.Before(deadline) {
				changes = append(changes, unitChange{u.key, u.device, unitRemoved})
				return
			}
			if next.IsZero() || deadline.Before(next) {
				next = deadline
			}
		}
		units = append(units, u)
	}
	i := 0 // into had
	for _, u := range want.units {
		for i < len(had) && had[i].key < u.key {
			away(had[i])
			i++
		}
		switch {
		case i == len(had) || had[i].key != u.key:
			changes = append(changes, unitChange{u.key, u.device, unitAdded})
		default:
			if !had[i].present() {
				changes = append(changes, unitChange{u.key, u.device, unitBack})
			}
			i++
		}
		units = append(units, u)
	}
	for ; i < len(had); i++ {
		away(had[i])
	}
	return units, changes, next
}
