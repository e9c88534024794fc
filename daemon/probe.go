package daemon

import (
	"context"
	"errors"
	"sync/atomic"
)

// Probe lets a health endpoint ask the running daemon how it is. The
// caller owns it (no global state) and passes it in Options; Check is safe
// from any goroutine.
type Probe struct {
	reqs    chan chan Report
	monitor atomic.Bool // the uevent monitor is running
}

// NewProbe returns a Probe for Options.Probe.
func NewProbe() *Probe { return &Probe{reqs: make(chan chan Report)} }

// Report is the daemon's state as its event loop sees it.
type Report struct {
	Monitor   bool                      // the uevent monitor is running
	Resources map[string]ResourceStatus // by resource name
	// WaitingForKubelet: the plugin directory has no kubelet socket, so no
	// resource can register (the kubelet has not started, or is restarting).
	WaitingForKubelet bool
	// Stopping counts the servers of resources that went, still shutting
	// down (each within the plugin's grace period).
	Stopping int
}

// ResourceStatus is one running resource's state.
type ResourceStatus struct {
	Registered bool // its server is registered with the kubelet
	// Registrations and Allocations count since the server started;
	// Attempts counts its registration attempts, failed ones included.
	Registrations, Allocations, Attempts int
	Healthy                              int // healthy device IDs advertised
	Devices                              int // all device IDs advertised
	// PreferredAllocations counts the kubelet's GetPreferredAllocation
	// calls, which it makes only where the server offers them.
	PreferredAllocations int
	// Flapping counts the units held down now for coming and going
	// (FlapDamping); FlapEpisodes, the times one was held since start.
	Flapping     int    `json:",omitempty"`
	FlapEpisodes uint64 `json:",omitempty"`
}

// ErrNotAnswering is Check's error when the event loop does not answer:
// it is stuck, or the daemon is not running.
var ErrNotAnswering = errors.New("the daemon's event loop is not answering")

// Check asks the event loop for a Report; ctx bounds the wait, so a stuck
// loop shows as ErrNotAnswering rather than a hung probe.
func (p *Probe) Check(ctx context.Context) (Report, error) {
	reply := make(chan Report, 1)
	select {
	case p.reqs <- reply:
	case <-ctx.Done():
		return Report{}, ErrNotAnswering
	}
	select {
	case r := <-reply:
		return r, nil
	case <-ctx.Done():
		return Report{}, ErrNotAnswering
	}
}

// report answers a probe from the event loop, which owns the servers.
func (d *daemon) report() Report {
	r := Report{
		Monitor:   d.opts.Probe.monitor.Load(),
		Resources: make(map[string]ResourceStatus, len(d.servers)),
		Stopping:  len(d.stopping),
	}
	if d.opts.Output != nil {
		d.reportOutput(&r)
		return r
	}
	r.WaitingForKubelet = d.kubeletAbsent()
	held := d.flap.heldByResource()
	for name, s := range d.servers {
		ss, _ := s.srv.Status()
		st := ResourceStatus{Registered: ss.Registered, Devices: len(s.snap.Devices),
			Registrations: ss.Registrations, Allocations: ss.Allocations, Attempts: ss.Attempts,
			PreferredAllocations: ss.PreferredAllocations, Flapping: held[name], FlapEpisodes: d.flap.episodes[name]}
		for _, dev := range s.snap.Devices {
			if dev.Healthy {
				st.Healthy++
			}
		}
		r.Resources[name] = st
	}
	return r
}
