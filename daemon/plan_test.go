package daemon

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// node is the content of a unit with one node at /dev/<dev>.
func node(dev string) Content {
	return Content{Nodes: []DeviceNode{{HostPath: "/dev/" + dev, ContainerPath: "/dev/" + dev, Permissions: "rw"}}}
}

// plainRes is a plain resource (a class of one) present on dev.
func plainRes(name, dev string, count int) resource {
	return resource{settings{name: name, socket: name + ".sock", count: count}, []unit{{device: dev, content: node(dev)}}}
}

// wantedRes is a resource the rules still make with none of its units
// present.
func wantedRes(name string, count int, class bool) resource {
	return resource{settings: settings{name: name, socket: name + ".sock", count: count, class: class}}
}

// classRes is a class resource with members given as "key=dev".
func classRes(name string, members ...string) resource {
	r := wantedRes(name, 1, true)
	for _, m := range members {
		key, dev, _ := strings.Cut(m, "=")
		r.units = append(r.units, unit{key: key, device: dev, content: node(dev)})
	}
	return r
}

// describe writes an action the way the table below expects it: the op,
// the resource, its units (key=device, with "/away@T" for an absent one,
// T seconds after t0), and what changed for which unit.
func describe(a action, t0 time.Time) string {
	var b strings.Builder
	b.WriteString(map[op]string{opStart: "start", opUpdate: "update", opStop: "stop"}[a.op] + " " + a.name)
	switch a.op {
	case opStop:
		b.WriteString(map[stopReason]string{stopUnwanted: " (unwanted)", stopAway: " (away)"}[a.why])
	default:
		var units []string
		for _, u := range a.res.units {
			s := u.device
			if u.key != "" {
				s = u.key + "=" + s
			}
			if !u.present() {
				s += fmt.Sprintf("/away@%d", int(u.absentSince.Sub(t0).Seconds()))
			}
			units = append(units, s)
		}
		fmt.Fprintf(&b, " count=%d [%s]", a.res.count, strings.Join(units, " "))
	}
	if len(a.changes) > 0 {
		var cs []string
		for _, c := range a.changes {
			cs = append(cs, map[change]string{unitAdded: "added", unitBack: "back", unitGone: "gone", unitRemoved: "removed"}[c.what]+" "+c.device)
		}
		b.WriteString(" (" + strings.Join(cs, ", ") + ")")
	}
	return b.String()
}

// step is one reconcile: at seconds after t0, the rules make desired of
// what is there; the plan must answer want, and ask to run again at next
// seconds after t0 (0: no deadline).
type step struct {
	at      int
	desired []resource
	want    []string
	next    int
}

// TestPlan runs the plan through sequences of reads with no gRPC and no
// device, applying each answer to the running state as the applier does.
func TestPlan(t *testing.T) {
	const (
		gps    = "smarter-devices/gps"
		serial = "smarter-devices/usb-serial"
	)
	for _, tc := range []struct {
		name        string
		removeAfter int // seconds; 0 keeps absent units forever
		steps       []step
	}{
		{name: "appear", steps: []step{
			{at: 0, desired: []resource{plainRes(gps, "ttyUSB0", 2)}, want: []string{"start smarter-devices/gps count=2 [ttyUSB0] (added ttyUSB0)"}},
			{at: 1, desired: []resource{plainRes(gps, "ttyUSB0", 2)}}, // the same read again: nothing to do
		}},
		{name: "vanish, kept forever without remove-after", steps: []step{
			{at: 0, desired: []resource{plainRes(gps, "ttyUSB0", 1)}, want: []string{"start smarter-devices/gps count=1 [ttyUSB0] (added ttyUSB0)"}},
			{at: 5, desired: []resource{wantedRes(gps, 1, false)}, want: []string{"update smarter-devices/gps count=1 [ttyUSB0/away@5] (gone ttyUSB0)"}},
			{at: 9999, desired: []resource{wantedRes(gps, 1, false)}},
		}},
		{name: "return before remove-after", removeAfter: 60, steps: []step{
			{at: 0, desired: []resource{plainRes(gps, "ttyUSB0", 1)}, want: []string{"start smarter-devices/gps count=1 [ttyUSB0] (added ttyUSB0)"}},
			{at: 10, desired: []resource{wantedRes(gps, 1, false)}, want: []string{"update smarter-devices/gps count=1 [ttyUSB0/away@10] (gone ttyUSB0)"}, next: 70},
			// Another event meanwhile: still away, the deadline stands.
			{at: 20, desired: []resource{wantedRes(gps, 1, false)}, next: 70},
			// Back under another node name: the same resource, healthy.
			{at: 30, desired: []resource{plainRes(gps, "ttyUSB1", 1)}, want: []string{"update smarter-devices/gps count=1 [ttyUSB1] (back ttyUSB1)"}},
		}},
		{name: "return after remove-after", removeAfter: 60, steps: []step{
			{at: 0, desired: []resource{plainRes(gps, "ttyUSB0", 1)}, want: []string{"start smarter-devices/gps count=1 [ttyUSB0] (added ttyUSB0)"}},
			{at: 10, desired: []resource{wantedRes(gps, 1, false)}, want: []string{"update smarter-devices/gps count=1 [ttyUSB0/away@10] (gone ttyUSB0)"}, next: 70},
			{at: 70, desired: []resource{wantedRes(gps, 1, false)}, want: []string{"stop smarter-devices/gps (away) (removed ttyUSB0)"}},
			{at: 80, desired: []resource{plainRes(gps, "ttyUSB0", 1)}, want: []string{"start smarter-devices/gps count=1 [ttyUSB0] (added ttyUSB0)"}},
		}},
		{name: "a reload changes the rule while the device is away", removeAfter: 60, steps: []step{
			{at: 0, desired: []resource{plainRes(gps, "ttyUSB0", 1)}, want: []string{"start smarter-devices/gps count=1 [ttyUSB0] (added ttyUSB0)"}},
			{at: 10, desired: []resource{wantedRes(gps, 1, false)}, want: []string{"update smarter-devices/gps count=1 [ttyUSB0/away@10] (gone ttyUSB0)"}, next: 70},
			{at: 20, desired: []resource{wantedRes(gps, 3, false)}, want: []string{"update smarter-devices/gps count=3 [ttyUSB0/away@10]"}, next: 70},
		}},
		{name: "rename: a new name is a new resource", steps: []step{
			{at: 0, desired: []resource{plainRes(gps, "ttyUSB0", 1)}, want: []string{"start smarter-devices/gps count=1 [ttyUSB0] (added ttyUSB0)"}},
			{at: 1, desired: []resource{plainRes("smarter-devices/gnss", "ttyUSB0", 1)}, want: []string{
				"start smarter-devices/gnss count=1 [ttyUSB0] (added ttyUSB0)",
				"stop smarter-devices/gps (unwanted)",
			}},
		}},
		{name: "a rule change updates in place", steps: []step{
			{at: 0, desired: []resource{plainRes(gps, "ttyUSB0", 1)}, want: []string{"start smarter-devices/gps count=1 [ttyUSB0] (added ttyUSB0)"}},
			{at: 1, desired: []resource{plainRes(gps, "ttyUSB0", 2)}, want: []string{"update smarter-devices/gps count=2 [ttyUSB0]"}},
			{at: 2, desired: []resource{func() resource {
				r := plainRes(gps, "ttyUSB0", 2)
				r.units[0].content.Env = map[string]string{"BAUD": "9600"}
				return r
			}()}, want: []string{"update smarter-devices/gps count=2 [ttyUSB0]"}},
			{at: 3, desired: []resource{func() resource {
				r := plainRes(gps, "ttyUSB0", 2)
				r.cdiKind = gps
				r.units[0].content.Env = map[string]string{"BAUD": "9600"}
				return r
			}()}, want: []string{"update smarter-devices/gps count=2 [ttyUSB0]"}},
		}},
		{name: "a reload drops a rule: its resources stop, present or away", removeAfter: 60, steps: []step{
			{at: 0, desired: []resource{plainRes(gps, "ttyUSB0", 1), plainRes("smarter-devices/null", "null", 1)}, want: []string{
				"start smarter-devices/gps count=1 [ttyUSB0] (added ttyUSB0)",
				"start smarter-devices/null count=1 [null] (added null)",
			}},
			{at: 10, desired: []resource{wantedRes(gps, 1, false), plainRes("smarter-devices/null", "null", 1)}, want: []string{
				"update smarter-devices/gps count=1 [ttyUSB0/away@10] (gone ttyUSB0)",
			}, next: 70},
			{at: 20, want: []string{"stop smarter-devices/gps (unwanted)", "stop smarter-devices/null (unwanted)"}},
		}},
		{name: "class: members come and go under their own IDs", removeAfter: 60, steps: []step{
			{at: 0, desired: []resource{classRes(serial, "A=ttyUSB0", "Z=ttyUSB1")}, want: []string{
				"start smarter-devices/usb-serial count=1 [A=ttyUSB0 Z=ttyUSB1] (added ttyUSB0, added ttyUSB1)",
			}},
			{at: 10, desired: []resource{classRes(serial, "Z=ttyUSB1")}, want: []string{
				"update smarter-devices/usb-serial count=1 [A=ttyUSB0/away@10 Z=ttyUSB1] (gone ttyUSB0)",
			}, next: 70},
			// A comes back in another port as ttyUSB2; a new adapter arrives.
			{at: 20, desired: []resource{classRes(serial, "A=ttyUSB2", "N=ttyUSB3", "Z=ttyUSB1")}, want: []string{
				"update smarter-devices/usb-serial count=1 [A=ttyUSB2 N=ttyUSB3 Z=ttyUSB1] (back ttyUSB2, added ttyUSB3)",
			}},
		}},
		// One adapter pulled and another plugged between two reads:
		// the short cut for unchanged members must not take the new key
		// for the old one (found by make mutate).
		{name: "class: one member replaced by another within one read", removeAfter: 60, steps: []step{
			{at: 0, desired: []resource{classRes(serial, "A=ttyUSB0")}, want: []string{"start smarter-devices/usb-serial count=1 [A=ttyUSB0] (added ttyUSB0)"}},
			{at: 5, desired: []resource{classRes(serial, "B=ttyUSB0")}, want: []string{
				"update smarter-devices/usb-serial count=1 [A=ttyUSB0/away@5 B=ttyUSB0] (gone ttyUSB0, added ttyUSB0)",
			}, next: 65},
		}},
		{name: "class: a member moves between ports", steps: []step{
			{at: 0, desired: []resource{classRes(serial, "A=ttyUSB0")}, want: []string{"start smarter-devices/usb-serial count=1 [A=ttyUSB0] (added ttyUSB0)"}},
			// Same key, new node path, within one read: no absence at all.
			{at: 1, desired: []resource{classRes(serial, "A=ttyUSB1")}, want: []string{"update smarter-devices/usb-serial count=1 [A=ttyUSB1]"}},
		}},
		{name: "class: a member's IDs go after remove-after, the others stay", removeAfter: 60, steps: []step{
			{at: 0, desired: []resource{classRes(serial, "A=ttyUSB0", "Z=ttyUSB1")}, want: []string{
				"start smarter-devices/usb-serial count=1 [A=ttyUSB0 Z=ttyUSB1] (added ttyUSB0, added ttyUSB1)",
			}},
			{at: 10, desired: []resource{classRes(serial, "Z=ttyUSB1")}, want: []string{
				"update smarter-devices/usb-serial count=1 [A=ttyUSB0/away@10 Z=ttyUSB1] (gone ttyUSB0)",
			}, next: 70},
			{at: 30, desired: []resource{wantedRes(serial, 1, true)}, want: []string{
				"update smarter-devices/usb-serial count=1 [A=ttyUSB0/away@10 Z=ttyUSB1/away@30] (gone ttyUSB1)",
			}, next: 70},
			{at: 70, desired: []resource{wantedRes(serial, 1, true)}, want: []string{
				"update smarter-devices/usb-serial count=1 [Z=ttyUSB1/away@30] (removed ttyUSB0)",
			}, next: 90},
			// The last member stayed away: the resource goes.
			{at: 90, desired: []resource{wantedRes(serial, 1, true)}, want: []string{"stop smarter-devices/usb-serial (away) (removed ttyUSB1)"}},
		}},
		{name: "class: the rule dropped while its members are away", steps: []step{
			{at: 0, desired: []resource{classRes(serial, "A=ttyUSB0")}, want: []string{"start smarter-devices/usb-serial count=1 [A=ttyUSB0] (added ttyUSB0)"}},
			{at: 10, desired: []resource{wantedRes(serial, 1, true)}, want: []string{
				"update smarter-devices/usb-serial count=1 [A=ttyUSB0/away@10] (gone ttyUSB0)",
			}},
			{at: 20, want: []string{"stop smarter-devices/usb-serial (unwanted)"}},
		}},
		{name: "a plain resource turned into a class of the same name", steps: []step{
			{at: 0, desired: []resource{plainRes(serial, "ttyUSB0", 1)}, want: []string{"start smarter-devices/usb-serial count=1 [ttyUSB0] (added ttyUSB0)"}},
			// Its IDs change meaning: the old unit does not linger as an absent member.
			{at: 1, desired: []resource{classRes(serial, "A=ttyUSB0")}, want: []string{"update smarter-devices/usb-serial count=1 [A=ttyUSB0] (added ttyUSB0)"}},
		}},
		{name: "the earliest deadline of several", removeAfter: 60, steps: []step{
			{at: 0, desired: []resource{plainRes("smarter-devices/a", "a", 1), plainRes("smarter-devices/b", "b", 1)}, want: []string{
				"start smarter-devices/a count=1 [a] (added a)",
				"start smarter-devices/b count=1 [b] (added b)",
			}},
			{at: 10, desired: []resource{plainRes("smarter-devices/a", "a", 1), wantedRes("smarter-devices/b", 1, false)}, want: []string{
				"update smarter-devices/b count=1 [b/away@10] (gone b)",
			}, next: 70},
			{at: 20, desired: []resource{wantedRes("smarter-devices/a", 1, false), wantedRes("smarter-devices/b", 1, false)}, want: []string{
				"update smarter-devices/a count=1 [a/away@20] (gone a)",
			}, next: 70},
		}},
		{name: "a resource the rules make with nothing present is not started", steps: []step{
			{at: 0, desired: []resource{wantedRes(gps, 1, false)}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			running := map[string]resource{}
			for _, s := range tc.steps {
				now := t0.Add(time.Duration(s.at) * time.Second)
				before := deepClone(running)
				acts, next := plan(s.desired, running, now, time.Duration(tc.removeAfter)*time.Second)
				if !maps.EqualFunc(running, before, resource.equal) {
					t.Fatalf("at %ds: plan changed the running state it was given", s.at)
				}
				var got []string
				for _, a := range acts {
					got = append(got, describe(a, t0))
					switch a.op { // as the applier does
					case opStart, opUpdate:
						running[a.name] = a.res
					case opStop:
						delete(running, a.name)
					}
				}
				if !slices.Equal(got, s.want) {
					t.Errorf("at %ds: actions\n%s\nwant\n%s", s.at, strings.Join(got, "\n"), strings.Join(s.want, "\n"))
				}
				wantNext := time.Time{}
				if s.next != 0 {
					wantNext = t0.Add(time.Duration(s.next) * time.Second)
				}
				if !next.Equal(wantNext) {
					t.Errorf("at %ds: next deadline %v, want %v", s.at, next, wantNext)
				}
			}
		})
	}
}

// An absent unit keeps the content it last had: its nodes stay in the
// resource (the outputs render it unhealthy) while the read has none.
func TestPlanKeepsAbsentContent(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	running := map[string]resource{"r": classRes("r", "A=video0", "B=video2")}
	acts, _ := plan([]resource{classRes("r", "B=video2")}, running, t0, 0)
	if len(acts) != 1 || acts[0].op != opUpdate {
		t.Fatalf("actions %v, want one update", acts)
	}
	a := acts[0].res.units[0]
	if a.key != "A" || a.present() || !a.content.equal(node("video0")) {
		t.Errorf("absent unit %+v, want A away with video0's content", a)
	}
}

// deepClone copies running down to every slice and map a resource holds,
// so that a change plan makes in place to what it was given shows (a
// shallow copy shares the units' backing arrays with the original).
func deepClone(running map[string]resource) map[string]resource {
	out := make(map[string]resource, len(running))
	for k, r := range running {
		r.units = slices.Clone(r.units)
		for i, u := range r.units {
			u.content.Nodes = slices.Clone(u.content.Nodes)
			u.content.Env = maps.Clone(u.content.Env)
			u.content.Mounts = slices.Clone(u.content.Mounts)
			r.units[i] = u
		}
		out[k] = r
	}
	return out
}
