package daemon

import (
	"fmt"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// flapRun drives a guard through reads of one class resource whose unit
// "a" is present or not at each step, with a quiet unit "b" beside it,
// and returns what the plan would have seen: per step, "a"'s state as
// shown ("up", "down" or "held"), and each held/released event.
func flapRun(t *testing.T, p FlapDamping, steps []flapStep) (shown []string, events []string, last time.Time) {
	t.Helper()
	g := newFlapGuard(p)
	t0 := time.Unix(1_000_000, 0)
	for _, s := range steps {
		now := t0.Add(s.at)
		units := []unit{{key: "b", device: "ttyUSB1"}}
		if s.present {
			units = append([]unit{{key: "a", device: "ttyUSB0"}}, units...)
		}
		out, evs, next := g.filter([]resource{{settings: settings{name: "smarter-devices/usb-serial", class: true}, units: units}}, now)
		last = next
		state := "down"
		for _, u := range out[0].units {
			switch {
			case u.key == "b" && u.flapping:
				t.Errorf("at %v: the quiet unit b is held", s.at)
			case u.key == "a" && u.flapping:
				state = "held"
			case u.key == "a":
				state = "up"
			}
		}
		shown = append(shown, state)
		for _, e := range evs {
			events = append(events, fmt.Sprintf("%v %v %s", s.at, e.held, e.device))
		}
	}
	return shown, events, last
}

type flapStep struct {
	at      time.Duration
	present bool
}

// flapping is a unit that changes every period, n times from start,
// beginning with an unplug.
func flapping(start, period time.Duration, n int) []flapStep {
	var s []flapStep
	for i := range n {
		s = append(s, flapStep{start + time.Duration(i)*period, i%2 == 1})
	}
	return s
}

func TestFlapDamping(t *testing.T) {
	p := FlapDamping{HalfLife: 10 * time.Second, Suppress: 3.5, MaxHold: 2 * time.Minute}
	sec := time.Second
	tests := []struct {
		name  string
		p     FlapDamping
		steps []flapStep
		// shown: the state the plan sees after each step.
		shown  []string
		events []string
	}{{
		name:  "quiet: a plug and an unplug pass at once",
		p:     p,
		steps: []flapStep{{0, true}, {60 * sec, false}, {120 * sec, true}},
		shown: []string{"up", "down", "up"},
	}, {
		name: "a replug, and another a few seconds later: still passed on",
		p:    p,
		steps: []flapStep{{0, true}, {1 * sec, false}, {2 * sec, true},
			{8 * sec, false}, {9 * sec, true}},
		shown: []string{"up", "down", "up", "down", "up"},
	}, {
		name:  "a burst: held at its 4th change, whatever it does then",
		p:     p,
		steps: append([]flapStep{{0, true}}, flapping(sec, 100*time.Millisecond, 10)...),
		// changes 1–3 pass; from the 4th the unit is held and shows so
		// whether it is there or not.
		shown:  []string{"up", "down", "up", "down", "held", "held", "held", "held", "held", "held", "held"},
		events: []string{"1.3s true ttyUSB0"},
	}, {
		name: "held, then quiet: released once its penalty decays below 1, shown as it is",
		p:    p,
		steps: append(append([]flapStep{{0, true}}, flapping(sec, 100*time.Millisecond, 5)...),
			// 5 changes end with the unit unplugged at 1.4 s; penalty ≈ 4.9
			// then, below 1 after log2(4.9) ≈ 2.3 half-lives: 24.4 s.
			flapStep{20 * sec, false}, flapStep{25 * sec, false}, flapStep{30 * sec, true}),
		shown:  []string{"up", "down", "up", "down", "held", "held", "held", "down", "up"},
		events: []string{"1.3s true ttyUSB0", "25s false ttyUSB0"},
	}, {
		name:  "a long flap is released at most MaxHold after its last change",
		p:     FlapDamping{HalfLife: 10 * time.Second, Suppress: 3.5, MaxHold: 30 * time.Second},
		steps: append(append([]flapStep{{0, true}}, flapping(sec, 10*time.Millisecond, 1000)...), flapStep{42 * sec, true}),
		shown: func() []string {
			s := []string{"up", "down", "up", "down"}
			for range 997 {
				s = append(s, "held")
			}
			return append(s, "up")
		}(),
		events: []string{"1.03s true ttyUSB0", "42s false ttyUSB0"},
	}, {
		name:  "off: every change passes",
		p:     FlapDamping{},
		steps: append([]flapStep{{0, true}}, flapping(sec, 10*time.Millisecond, 6)...),
		shown: []string{"up", "down", "up", "down", "up", "down", "up"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shown, events, _ := flapRun(t, tt.p, tt.steps)
			if fmt.Sprint(shown) != fmt.Sprint(tt.shown) {
				t.Errorf("shown\n got %v\nwant %v", shown, tt.shown)
			}
			if fmt.Sprint(events) != fmt.Sprint(tt.events) {
				t.Errorf("events\n got %v\nwant %v", events, tt.events)
			}
		})
	}
}

// A held unit's release is a deadline the loop must wake for: the guard
// returns it, and it is no later than MaxHold after the last change.
func TestFlapDampingReleaseDeadline(t *testing.T) {
	p := FlapDamping{HalfLife: 10 * time.Second, Suppress: 3.5, MaxHold: 30 * time.Second}
	steps := append([]flapStep{{0, true}}, flapping(time.Second, 10*time.Millisecond, 200)...)
	_, _, next := flapRun(t, p, steps)
	lastChange := time.Unix(1_000_000, 0).Add(time.Second + 199*10*time.Millisecond)
	if next.IsZero() || next.After(lastChange.Add(p.MaxHold+time.Millisecond)) || next.Before(lastChange.Add(p.MaxHold-time.Second)) {
		t.Errorf("release due %v after the last change, want about MaxHold (%v)", next.Sub(lastChange), p.MaxHold)
	}
}

// A USB serial adapter flapping 100 times (unplugged and plugged back,
// each change a rescan) costs the kubelet a bounded number of
// ListAndWatch messages: the first changes pass at once, then the adapter
// is held unhealthy whatever it does, and a second adapter plugged in
// meanwhile is served at once. Quiet again, the adapter is released
// healthy; the report counts the episode.
func TestFlapHeldThenReleased(t *testing.T) {
	m := hwfixture.New(true)
	stats := new(Stats)
	damping := FlapDamping{HalfLife: 300 * time.Millisecond, Suppress: 3.5, MaxHold: 3 * time.Second}
	h := newHarness(t, "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n    class: usb-serial\n", func(o *Options) {
		onMachine(m)(o)
		o.Stats = stats
		o.FlapDamping = damping
	})
	const res = "smarter-devices/usb-serial"
	const key, other = "0403_6001_A1B2C3", "10c4_ea60_0001"
	ft := hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3")
	p := m.Plug(ft)
	h.events.fire("add", "ttyUSB0")
	h.waitFor(res, "the adapter", ids(map[string]string{key: pluginapi.Healthy}))
	before := h.kubelet.Messages(res)

	change := func(action string) {
		t.Helper()
		n := stats.Rescans.Load()
		h.events.fire(action, "ttyUSB0")
		testutil.Eventually(t, 20*time.Second, "a rescan after "+action, func() bool { return stats.Rescans.Load() > n })
	}
	const flaps = 100
	for i := range flaps {
		m.Unplug(p)
		change("remove")
		p = m.Plug(ft)
		change("add")
		if i == flaps/2 {
			// Another adapter, plugged in mid-flap: served at once,
			// beside the held one.
			m.Plug(hwfixture.CP2102N(hwfixture.IntelXHCI, "2", "0001"))
			h.events.fire("add", "ttyUSB1")
			h.waitFor(res, "the second adapter while the first flaps", ids(map[string]string{key: pluginapi.Unhealthy, other: pluginapi.Healthy}))
		}
	}
	flapMsgs := h.kubelet.Messages(res) - before
	// 3 changes passed, the 4th shown held, the second adapter's arrival:
	// 5; the rest of the 200 changes cost nothing.
	if flapMsgs > 5 {
		t.Errorf("%d changes cost the kubelet %d ListAndWatch messages, want at most 5", 2*flaps, flapMsgs)
	}
	if st := h.report().Resources[res]; st.Flapping != 1 || st.FlapEpisodes != 1 {
		t.Errorf("report while it flaps: %+v, want 1 unit held, 1 episode", st)
	}
	h.waitFor(res, "the adapter released once quiet", ids(map[string]string{key: pluginapi.Healthy, other: pluginapi.Healthy}))
	if st := h.report().Resources[res]; st.Flapping != 0 || st.FlapEpisodes != 1 {
		t.Errorf("report once quiet: %+v, want none held, 1 episode", st)
	}
	t.Logf("%d changes in a flap: %d ListAndWatch messages, %d in all", 2*flaps, flapMsgs, h.kubelet.Messages(res)-before)
}

// A held unit shows one view whatever each read finds: a device re-added
// reads a little differently each time (here its node's name; a block
// device's DISKSEQ in life), and showing that would push every change.
func TestFlapHeldShowsOneView(t *testing.T) {
	g := newFlapGuard(FlapDamping{HalfLife: 10 * time.Second, Suppress: 3.5, MaxHold: time.Minute})
	t0 := time.Unix(1_000_000, 0)
	var views []unit
	for i := range 40 {
		var units []unit
		if i%2 == 0 {
			units = []unit{{key: "a", device: fmt.Sprintf("ttyUSB%d", i)}}
		}
		out, _, _ := g.filter([]resource{{settings: settings{name: "smarter-devices/usb-serial", class: true}, units: units}}, t0.Add(time.Duration(i)*100*time.Millisecond))
		if i >= 6 {
			if len(out[0].units) != 1 || !out[0].units[0].flapping {
				t.Fatalf("read %d: %+v; want the unit held", i, out[0].units)
			}
			views = append(views, out[0].units[0])
		}
	}
	for i, v := range views {
		if !v.equal(views[0]) {
			t.Errorf("held view %d = %+v, differs from the first %+v", i, v, views[0])
		}
	}
}
