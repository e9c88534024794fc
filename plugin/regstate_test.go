package plugin

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

const (
	minB = time.Millisecond
	maxB = 4 * time.Millisecond
)

// kubelets returns two files standing for two kubelet sockets (the one we
// registered with, and its replacement). regState compares identities only,
// so plain files do.
func kubelets(t *testing.T) (a, b os.FileInfo) {
	t.Helper()
	dir := t.TempDir()
	var fis [2]os.FileInfo
	for i := range fis {
		p := filepath.Join(dir, string(rune('a'+i)))
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		fis[i] = fi
	}
	return fis[0], fis[1]
}

// registeredWith is a serving state registered with the kubelet socket fi.
func registeredWith(fi os.FileInfo) regState {
	r := newRegState(minB, maxB)
	r.startServing()
	r.next(func() bool { return true })
	r.sending()
	r.succeeded(newFileID(fi))
	return r
}

func TestRegStateNext(t *testing.T) {
	a, _ := kubelets(t)
	for _, tc := range []struct {
		name      string
		state     func() regState
		present   bool
		want      step
		wantDelay time.Duration
		asked     bool // whether the kubelet socket is looked at
		// what the state says afterwards
		registered, waiting bool
		attempts            int
	}{
		{"kubelet there: register", func() regState { return newRegState(minB, maxB) }, true, stepRegister, 0, true, false, false, 1},
		{"no kubelet: wait, and say so", func() regState { return newRegState(minB, maxB) }, false, stepStartWaiting, 0, true, false, true, 0},
		{"no kubelet, still: wait without saying it again", func() regState {
			r := newRegState(minB, maxB)
			r.next(func() bool { return false })
			return r
		}, false, stepWaiting, 0, true, false, true, 0},
		{"kubelet appeared while waiting: register", func() regState {
			r := newRegState(minB, maxB)
			r.next(func() bool { return false })
			return r
		}, true, stepRegister, 0, true, false, false, 1},
		{"registered: nothing to do, nothing looked at", func() regState { return registeredWith(a) }, true, stepIdle, 0, false, true, false, 1},
		{"hold-off pending: wait it out before looking", func() regState {
			r := newRegState(minB, maxB)
			r.holdoff = 3 * time.Millisecond
			return r
		}, true, stepHoldoff, 3 * time.Millisecond, false, false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.state()
			asked := false
			got, d := r.next(func() bool { asked = true; return tc.present })
			if got != tc.want || d != tc.wantDelay {
				t.Errorf("next = %v, %v; want %v, %v", got, d, tc.want, tc.wantDelay)
			}
			if asked != tc.asked {
				t.Errorf("kubelet socket looked at: %v, want %v", asked, tc.asked)
			}
			if r.registered != tc.registered || r.waiting != tc.waiting || r.attempts != tc.attempts {
				t.Errorf("after next: registered %v waiting %v attempts %d; want %v %v %d",
					r.registered, r.waiting, r.attempts, tc.registered, tc.waiting, tc.attempts)
			}
			if got == stepHoldoff {
				// The hold-off is served once: the step after it registers.
				if again, _ := r.next(func() bool { return true }); again != stepRegister {
					t.Errorf("step after the hold-off = %v, want stepRegister", again)
				}
			}
		})
	}
}

// A wake-up while registered: the registration holds, or says why not and
// when to register again.
func TestRegStateRecheck(t *testing.T) {
	a, b := kubelets(t)
	for _, tc := range []struct {
		name        string
		state       func() regState
		now         os.FileInfo // the kubelet socket found now; nil: none
		wantReason  string
		wantHoldoff time.Duration
		asked       bool
		registered  bool
		// the delay after the next failed registration: the backoff was
		// reset (minB) or kept growing
		nextFailure time.Duration
	}{
		{"not registered: nothing to check", func() regState {
			r := newRegState(minB, maxB)
			r.failed()
			return r
		}, a, "", 0, false, false, 2 * minB},
		{"same kubelet, stream open: holds, backoff reset", func() regState {
			r := registeredWith(a)
			r.failed()
			r.failed()
			return r
		}, a, "", 0, true, true, minB},
		{"kubelet socket gone", func() regState { return registeredWith(a) }, nil, reasonKubeletGone, 0, true, false, minB},
		{"kubelet socket replaced: a new kubelet, at once", func() regState {
			r := registeredWith(a)
			r.failed()
			return r
		}, b, reasonKubeletReplaced, 0, true, false, minB},
		{"stream lost: hold off", func() regState {
			r := registeredWith(a)
			kubeletEnds(&r)
			return r
		}, a, reasonStreamLost, minB, true, false, 2 * minB},
		{"stream lost again: hold off longer", func() regState {
			r := registeredWith(a)
			kubeletEnds(&r)
			r.recheck(func() os.FileInfo { return a })
			r.next(func() bool { return true }) // the hold-off
			r.next(func() bool { return true }) // register
			r.sending()
			r.succeeded(newFileID(a))
			kubeletEnds(&r)
			return r
		}, a, reasonStreamLost, 2 * minB, true, false, 4 * minB},
		{"stream lost, but the kubelet is new: at once", func() regState {
			r := registeredWith(a)
			kubeletEnds(&r)
			return r
		}, b, reasonKubeletReplaced, 0, true, false, minB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.state()
			asked := false
			reason, holdoff := r.recheck(func() os.FileInfo { asked = true; return tc.now })
			if reason != tc.wantReason || holdoff != tc.wantHoldoff {
				t.Errorf("recheck = %q, %v; want %q, %v", reason, holdoff, tc.wantReason, tc.wantHoldoff)
			}
			if asked != tc.asked {
				t.Errorf("kubelet socket looked at: %v, want %v", asked, tc.asked)
			}
			if r.registered != tc.registered {
				t.Errorf("registered after recheck = %v, want %v", r.registered, tc.registered)
			}
			if st, d := r.next(func() bool { return true }); holdoff > 0 && (st != stepHoldoff || d != holdoff) {
				t.Errorf("next after a hold-off of %v = %v, %v", holdoff, st, d)
			}
			if d := r.failed(); d != tc.nextFailure {
				t.Errorf("delay after the next failure = %v, want %v", d, tc.nextFailure)
			}
		})
	}
}

// Failed registrations back off, doubling up to the maximum; a new serving
// round starts from the minimum again.
func TestRegStateFailedBacksOff(t *testing.T) {
	r := newRegState(minB, maxB)
	r.startServing()
	var got []time.Duration
	for range 4 {
		got = append(got, r.failed())
	}
	if want := []time.Duration{minB, 2 * minB, maxB, maxB}; !slices.Equal(got, want) {
		t.Errorf("delays = %v, want %v", got, want)
	}
	r.startServing()
	if d := r.failed(); d != minB {
		t.Errorf("first delay of a new round = %v, want %v", d, minB)
	}
}

// kubeletEnds opens a stream that the kubelet then ends, and returns
// whether that counted as lost.
func kubeletEnds(r *regState) bool {
	id, epoch := r.openStream()
	return r.closeStream(id, epoch, true)
}

// Which stream's end means the kubelet went away.
func TestRegStateCloseStream(t *testing.T) {
	a, _ := kubelets(t)
	for _, tc := range []struct {
		name string
		// run opens and closes streams on a state registered with a and
		// returns what the last close reported
		run      func(r *regState) bool
		wantLost bool
		streams  int
	}{
		{"newest stream ended by the kubelet", func(r *regState) bool {
			return kubeletEnds(r)
		}, true, 0},
		{"newest stream ended by us (stopping)", func(r *regState) bool {
			id, ep := r.openStream()
			return r.closeStream(id, ep, false)
		}, false, 0},
		{"an older stream ended while a newer one is open", func(r *regState) bool {
			id, ep := r.openStream()
			r.openStream()
			return r.closeStream(id, ep, true)
		}, false, 1},
		{"another client's newer stream ended while the kubelet's is open", func(r *regState) bool {
			r.openStream() // the kubelet's
			id, ep := r.openStream()
			return r.closeStream(id, ep, true)
		}, false, 1},
		{"the last open stream ended, an older one", func(r *regState) bool {
			id, ep := r.openStream()
			id2, ep2 := r.openStream()
			r.closeStream(id2, ep2, true)
			return r.closeStream(id, ep, true)
		}, true, 0},
		{"the stream of an older registration ended", func(r *regState) bool {
			id, ep := r.openStream()
			r.sending() // a new registration replaces the endpoint
			return r.closeStream(id, ep, true)
		}, false, 0},
		{"a lost stream is forgotten by the next registration", func(r *regState) bool {
			kubeletEnds(r)
			r.sending()
			return r.streamLost
		}, false, 0},
		{"a lost stream is forgotten by the next stream", func(r *regState) bool {
			kubeletEnds(r)
			r.openStream()
			return r.streamLost
		}, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := registeredWith(a)
			if lost := tc.run(&r); lost != tc.wantLost {
				t.Errorf("lost = %v, want %v", lost, tc.wantLost)
			}
			if r.streams != tc.streams {
				t.Errorf("open streams = %d, want %d", r.streams, tc.streams)
			}
			// A lost stream, and only that, ends the registration at the
			// next wake-up.
			want := ""
			if tc.wantLost {
				want = reasonStreamLost
			}
			if reason, _ := r.recheck(func() os.FileInfo { return a }); reason != want {
				t.Errorf("recheck = %q, want %q", reason, want)
			}
		})
	}
}

// A serving round ends with nothing registered and nothing waited for,
// and the next round starts afresh.
func TestRegStateRounds(t *testing.T) {
	a, _ := kubelets(t)
	r := registeredWith(a)
	r.stopping()
	if r.registered || !r.serving {
		t.Errorf("stopping: registered %v serving %v; want false, true", r.registered, r.serving)
	}
	r.stoppedServing()
	if r.serving || r.waiting {
		t.Errorf("stopped: serving %v waiting %v", r.serving, r.waiting)
	}
	r.holdoff = time.Second
	r.startServing()
	if st, _ := r.next(func() bool { return true }); st != stepRegister || !r.serving {
		t.Errorf("first step of a new round = %v (serving %v), want stepRegister", st, r.serving)
	}
	if r.registrations != 1 || r.attempts != 2 {
		t.Errorf("counters across rounds: registrations %d attempts %d; want 1, 2", r.registrations, r.attempts)
	}
}
