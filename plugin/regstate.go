package plugin

import (
	"os"
	"time"

	"github.com/smarter-project/smarter-device-manager/internal/backoff"
)

// regState is a server's serving and registration state as one value: what
// Run's loop does next, how it reads a wake-up, and which ListAndWatch
// stream's end means the kubelet went away. It does no I/O beyond the
// observations the loop hands in (is the kubelet socket there, which one is
// it), so every transition is table-tested without sockets. The server's
// mutex guards it: Status and the streams read and change it too.
type regState struct {
	// For one serving round (startServing resets them).
	serving bool
	// bo grows with every failed registration and every stream the kubelet
	// closes right after accepting us; it is reset only when a re-check
	// finds the registration still holding, or a new kubelet appears.
	bo         backoff.Backoff
	kubelet    fileID        // the kubelet socket we registered with
	holdoff    time.Duration // wait before the next registration
	registered bool
	waiting    bool // serving with no kubelet socket: nothing to retry

	// For the server's life.
	attempts, registrations int
	epoch                   uint64 // registrations sent; a stream belongs to one
	lastStream              uint64 // id of the most recently opened stream
	streamLost              bool   // the kubelet ended the last open stream of this epoch
	streams                 int    // open now
	epochStreams            int    // open now, of this epoch
}

func newRegState(minBackoff, maxBackoff time.Duration) regState {
	return regState{bo: backoff.New(minBackoff, maxBackoff)}
}

// step is what Run's loop does before it waits for a wake-up.
type step int

const (
	stepIdle         step = iota // registered: nothing until a wake-up
	stepHoldoff                  // wait out the hold-off, then register
	stepStartWaiting             // no kubelet socket: wait for a kick (new)
	stepWaiting                  // no kubelet socket, still
	stepRegister                 // send a registration now
)

// startServing begins a serving round on a new socket.
func (r *regState) startServing() {
	r.serving = true
	r.bo.Reset()
	r.kubelet, r.holdoff, r.registered = fileID{}, 0, false
}

// stopping is the start of a round's end: from now on nothing is
// registered (the kubelet will find our socket gone).
func (r *regState) stopping() { r.registered = false }

// stoppedServing ends a serving round.
func (r *regState) stoppedServing() { r.serving, r.waiting = false, false }

// next decides the loop's next step, and for stepHoldoff how long to wait.
// present reports whether the kubelet socket is there; it is asked only
// when that decides the step. Without a kubelet socket there is nothing to
// retry until kubelet.sock appears, which is a directory change (a kick).
func (r *regState) next(present func() bool) (step, time.Duration) {
	switch {
	case r.registered:
		return stepIdle, 0
	case r.holdoff > 0:
		d := r.holdoff
		r.holdoff = 0
		return stepHoldoff, d
	case !present():
		if r.waiting {
			return stepWaiting, 0
		}
		r.waiting = true
		return stepStartWaiting, 0
	}
	r.waiting = false
	r.attempts++
	return stepRegister, 0
}

// sending marks a registration about to be sent: streams opened from now on
// belong to it (the kubelet may open ListAndWatch before its Register reply
// reaches us).
func (r *regState) sending() {
	r.epoch++
	r.streamLost = false
	r.epochStreams = 0
}

// failed records a failed registration and returns the delay before the
// next attempt.
func (r *regState) failed() time.Duration { return r.bo.Next() }

// succeeded records a registration accepted by the kubelet socket id.
func (r *regState) succeeded(id fileID) {
	r.kubelet, r.registered = id, true
	r.registrations++
}

// Reasons recheck gives for a registration that no longer holds.
const (
	reasonKubeletGone     = "kubelet socket gone"
	reasonKubeletReplaced = "kubelet socket replaced"
	// The kubelet ended the newest stream of our registration while its
	// socket stayed the same.
	reasonStreamLost = "kubelet closed its ListAndWatch stream"
)

// recheck reads a wake-up while registered: stat returns the kubelet socket
// as it is now (nil when there is none), and is called only while
// registered. It returns why the registration no longer holds ("" when it
// does, or when there was none) and, when the kubelet closed our stream,
// the hold-off before registering again: without it, a kubelet that accepts
// every registration and ends the stream at once would be hammered with
// registrations in a tight loop. A new kubelet (or none yet) is registered
// with at once.
func (r *regState) recheck(stat func() os.FileInfo) (reason string, holdoff time.Duration) {
	if !r.registered {
		return "", 0
	}
	switch fi := stat(); {
	case fi == nil:
		reason = reasonKubeletGone
	case !r.kubelet.same(fi):
		reason = reasonKubeletReplaced
	case r.streamLost:
		reason = reasonStreamLost
	default:
		r.bo.Reset()
		return "", 0
	}
	r.registered = false
	if reason == reasonStreamLost {
		r.holdoff = r.bo.Next()
		return reason, r.holdoff
	}
	r.bo.Reset()
	return reason, 0
}

// openStream records a new ListAndWatch stream and returns its id and the
// registration epoch it belongs to.
func (r *regState) openStream() (id, epoch uint64) {
	r.lastStream++
	r.streamLost = false
	r.streams++
	r.epochStreams++
	return r.lastStream, r.epoch
}

// closeStream records the end of a stream and reports whether it means the
// kubelet has most likely gone: the client ended the last open stream of
// the current registration (a closed stream is how we see it stop).
// Streams of older registrations end when the kubelet replaces an
// endpoint; they are not a sign of anything, nor is a stream we ended
// ourselves, nor one that ends while another of this registration is still
// open: another root client of the socket can open and end a stream of its
// own at will, and the kubelet's, still open, says it has not gone. (With
// "the newest stream" as the rule, that made us register again, which a
// kubelet still connected refuses: "device plugin already connected".)
func (r *regState) closeStream(_, epoch uint64, byKubelet bool) (lost bool) {
	r.streams--
	if epoch != r.epoch {
		return false
	}
	r.epochStreams--
	lost = byKubelet && r.epochStreams == 0
	if lost {
		r.streamLost = true
	}
	return lost
}
