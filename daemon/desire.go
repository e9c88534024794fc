package daemon

import (
	"slices"
	"strings"

	"github.com/smarter-project/smarter-device-manager/conf"
)

// seen is a plain resource as last read, with its device.
type seen struct {
	res conf.Resource
	dev conf.Device // identity included, where read
}

// desire turns one read into what the plan takes as desired: every
// resource the rules make of it, with each present unit's content built;
// and, for each running resource the read did not find, the same resource
// with no unit present if the rules still make it (plan keeps it, absent,
// until remove-after) and nothing if they do not (plan stops it).
func (d *daemon) desire(st *state) []resource {
	out := make([]resource, 0, len(st.desired))
	readRunning := 0 // of these, how many run now
	for _, res := range st.desired {
		if _, ok := d.resources[res.Name]; ok {
			readRunning++
		}
		rule := &d.cfg.Rules[res.Rule]
		r := resource{settings: d.settings(res, res.Members != nil)}
		if res.Members == nil {
			dev := st.byPath[res.Path]
			d.lastSeen[res.Name] = seen{res: res, dev: dev}
			u := d.resolveUnit(st, rule, res.GPU, dev)
			r.units = []unit{{device: deviceLabel(res), content: buildContent(rule, res.Name, res.Permissions, u), ident: u.Ident}}
		} else {
			for _, m := range res.Members {
				u := d.resolveUnit(st, rule, "", append([]conf.Device{m.Device}, m.Others...)...)
				r.units = append(r.units, unit{key: m.Key, device: m.Path, content: buildContent(rule, res.Name, res.Permissions, u), ident: u.Ident})
			}
			slices.SortFunc(r.units, func(a, b unit) int { return strings.Compare(a.key, b.key) })
		}
		out = append(out, r)
	}
	sortByName(out) // conf.Resolve sorts them: a no-op check
	if readRunning == len(d.resources) {
		return out // every running resource was read
	}
	present := len(out)
	for name, cur := range d.resources {
		if _, found := findByName(out[:present], name); found {
			continue
		}
		if res, ok := d.stillWanted(name, cur.class); ok {
			s := d.settings(res, cur.class)
			s.socket = cur.socket // the same name, the same socket
			out = append(out, resource{settings: s})
		}
	}
	sortByName(out)
	return out
}

// stillWanted asks the current rules whether a resource none of whose
// devices is here would still be made, and with what settings (a reload
// may have changed its count, or dropped or renamed its rule): a class,
// by its name; a plain resource, by its device as last seen.
func (d *daemon) stillWanted(name string, class bool) (conf.Resource, bool) {
	if class {
		for i := range d.cfg.Rules {
			if r := &d.cfg.Rules[i]; r.Class != "" && d.opts.Prefix+"/"+r.Class == name {
				return conf.Resource{Name: name, Rule: i, Count: r.Count, Permissions: r.Permissions}, true
			}
		}
		return conf.Resource{}, false
	}
	last, ok := d.lastSeen[name]
	if !ok {
		return conf.Resource{}, false
	}
	var devs []conf.Device
	var gpus []string
	if last.res.GPU != "" {
		gpus = []string{last.res.GPU}
	} else {
		devs = []conf.Device{last.dev}
	}
	res, _ := d.cfg.Resolve(d.opts.Prefix, devs, gpus)
	for _, r := range res {
		if r.Name == name {
			return r, true
		}
	}
	return conf.Resource{}, false
}

// settings are a resource's settings as the rules give them.
func (d *daemon) settings(res conf.Resource, class bool) settings {
	s := settings{name: res.Name, socket: res.Socket, class: class, count: res.Count, cdiKind: d.cdiKindFor(res)}
	if res.Rule < len(d.cfg.Rules) {
		s.evict = d.cfg.Rules[res.Rule].EvictOnUnplug
	}
	return s
}

// cdiKindFor is the CDI kind of a resource whose rule says cdi: true, or
// "" (also, with a warning, when the name cannot be a CDI kind).
func (d *daemon) cdiKindFor(res conf.Resource) string {
	if res.Rule >= len(d.cfg.Rules) || !d.cfg.Rules[res.Rule].CDI {
		return ""
	}
	kind, err := cdiKind(res.Name)
	if err != nil {
		d.logWarnings([]conf.Warning{{Device: res.Path, Msg: "no CDI: " + err.Error()}})
		return ""
	}
	return kind
}

// deviceLabel names a plain resource's device in logs.
func deviceLabel(res conf.Resource) string {
	if res.GPU != "" {
		return "gpu." + res.GPU
	}
	return res.Path
}
