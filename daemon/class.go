package daemon

import (
	"slices"
	"time"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/plugin"
)

// member is one device of a class resource, as the daemon last saw it.
type member struct {
	m           conf.Member
	absentSince time.Time // zero while present
	content     content
}

// classSnapshot merges the members of a class resource present in this
// read (res.Members, possibly none) into those it had: present ones are
// healthy with their own nodes, absent ones unhealthy under the same IDs
// until RemoveAfter, then dropped. It returns the snapshot and the earliest
// removal deadline still ahead (zero if none).
func (d *daemon) classSnapshot(members map[string]*member, res conf.Resource, rule *conf.Rule, st *state, now time.Time) (plugin.Snapshot, time.Time) {
	present := make(map[string]bool, len(res.Members))
	for _, m := range res.Members {
		present[m.Key] = true
		c := buildContent(rule, res.Name, res.Permissions, d.resolveUnit(st, rule, "", append([]conf.Device{m.Device}, m.Others...)...))
		old, ok := members[m.Key]
		switch {
		case !ok:
			d.log.Info().Str("resource", res.Name).Str("device", m.Path).Str("id", m.Key).Msg("device added to class")
		case !old.absentSince.IsZero():
			d.log.Info().Str("resource", res.Name).Str("device", m.Path).Str("id", m.Key).Msg("device back; healthy")
		}
		members[m.Key] = &member{m: m, content: c}
	}
	var next time.Time
	for key, mb := range members {
		if present[key] {
			continue
		}
		if mb.absentSince.IsZero() {
			mb.absentSince = now
			d.log.Info().Str("resource", res.Name).Str("device", mb.m.Path).Str("id", key).Msg("device removed; unhealthy")
		}
		if d.opts.RemoveAfter > 0 {
			deadline := mb.absentSince.Add(d.opts.RemoveAfter)
			if !now.Before(deadline) {
				d.log.Info().Str("resource", res.Name).Str("id", key).Msg("device stayed away; its IDs removed")
				delete(members, key)
				continue
			}
			if next.IsZero() || deadline.Before(next) {
				next = deadline
			}
		}
	}

	keys := make([]string, 0, len(members))
	for k := range members {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	snap := plugin.Snapshot{PerDevice: map[string][]plugin.DeviceSpec{}}
	for _, k := range keys {
		mb := members[k]
		for _, id := range mb.m.IDs(res.Count) {
			snap.Devices = append(snap.Devices, plugin.Device{ID: id, Healthy: mb.absentSince.IsZero(), NUMANode: mb.content.NUMANode, HasNUMA: mb.content.HasNUMA})
			snap.PerDevice[id] = deviceSpecs(mb.content.Nodes)
		}
	}
	return snap, next
}

// classWanted reports whether a rule still makes the class resource name.
func (d *daemon) classWanted(name string) (int, bool) {
	for i := range d.cfg.Rules {
		if c := d.cfg.Rules[i].Class; c != "" && d.opts.Prefix+"/"+c == name {
			return i, true
		}
	}
	return -1, false
}
