package daemon

import "sync/atomic"

// Stats counts what the daemon did. The caller owns it (no global state)
// and may read it at any time, e.g. to publish it; the daemon only adds.
type Stats struct {
	Events      atomic.Uint64 // uevents received (every one, relevant or not)
	Relevant    atomic.Uint64 // of those, the ones that asked for a rescan
	Lost        atomic.Uint64 // "events may have been lost" notices (ENOBUFS, reconnects)
	Rescans     atomic.Uint64 // reads of the device state: a burst of events coalesces into few
	RescanNanos atomic.Uint64 // time spent in those reads, resolving and diffing included
	Resources   atomic.Int64  // plugin servers running now
	Ignored     atomic.Uint64 // uevents that asked for nothing (no node, no add/remove)
	Errors      atomic.Uint64 // failures logged as errors: device root unreadable, reload failed, CDI spec not written
	// Dropped counts uevent messages thrown away unread: from an untrusted
	// sender (a forgery) or unparsable. The event source adds to it, not
	// the daemon: pass &Stats.Dropped as hotplug.MonitorOptions.Dropped.
	Dropped atomic.Uint64

	// Reloads counts reads of the rule file (SIGHUP, or a change the
	// watch saw); ReloadsUnchanged, those that found what the previous one
	// read and did nothing; ReloadFailures, those that found a new broken
	// file (each logged once).
	Reloads, ReloadsUnchanged, ReloadFailures atomic.Uint64
}

// Snapshot returns the counters as a plain map, e.g. for expvar.
func (s *Stats) Snapshot() map[string]any {
	return map[string]any{
		"events":            s.Events.Load(),
		"relevant":          s.Relevant.Load(),
		"lost":              s.Lost.Load(),
		"rescans":           s.Rescans.Load(),
		"rescan_nanos":      s.RescanNanos.Load(),
		"resources":         s.Resources.Load(),
		"ignored":           s.Ignored.Load(),
		"errors":            s.Errors.Load(),
		"dropped":           s.Dropped.Load(),
		"reloads":           s.Reloads.Load(),
		"reloads_unchanged": s.ReloadsUnchanged.Load(),
		"reload_failures":   s.ReloadFailures.Load(),
	}
}
