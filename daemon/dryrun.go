package daemon

import (
	"slices"
	"strings"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/conf"
)

// PlanEntry is what the daemon would do with one device node (or GPU).
type PlanEntry struct {
	Device   string   `json:"device"`             // path below the device root, or gpu.N
	Rule     string   `json:"rule,omitempty"`     // file:line (match) of the rule that took it
	Resource string   `json:"resource,omitempty"` // the resource it would be part of
	IDs      []string `json:"ids,omitempty"`      // the device IDs it would be advertised under
	Note     string   `json:"note,omitempty"`     // why no rule took it, or a warning about it
}

// Plan reads the device state once, exactly as Run does, and returns, for
// every device node (and GPU), the rule that matched it and the resource
// and IDs it would get, or why none did. It starts nothing.
func Plan(opts Options) ([]PlanEntry, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	opts.Logger = zerolog.Nop()
	d := newDaemon(opts)
	notes := map[string][]string{}
	d.collect = func(w conf.Warning) { notes[w.Device] = append(notes[w.Device], w.Msg) }
	st, err := d.read()
	if err != nil {
		return nil, err
	}
	byDevice := map[string]PlanEntry{}
	put := func(dev string, res conf.Resource, ids []string) {
		r := &d.cfg.Rules[res.Rule]
		byDevice[dev] = PlanEntry{Device: dev, Rule: r.Pos.String() + " (" + r.Match + ")", Resource: res.Name, IDs: ids}
	}
	for _, res := range st.desired {
		switch {
		case res.Members != nil:
			for _, m := range res.Members {
				ids := unitIDs(m.Key, res.Count)
				put(m.Path, res, ids)
				for _, o := range m.Others {
					put(o.Path, res, ids)
				}
			}
		case res.GPU != "":
			put("gpu."+res.GPU, res, unitIDs("", res.Count))
		default:
			put(res.Path, res, unitIDs("", res.Count))
		}
	}
	var out []PlanEntry
	for _, n := range st.nodes {
		e, ok := byDevice[n.Path]
		if !ok {
			e = PlanEntry{Device: n.Path, Note: "no rule matches"}
		}
		if msgs := notes[n.Path]; len(msgs) > 0 {
			e.Note = strings.Join(msgs, "; ")
		}
		out = append(out, e)
		delete(byDevice, n.Path)
	}
	for dev, e := range byDevice { // GPUs
		e.Note = strings.Join(notes[dev], "; ")
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b PlanEntry) int { return strings.Compare(a.Device, b.Device) })
	return out, nil
}
