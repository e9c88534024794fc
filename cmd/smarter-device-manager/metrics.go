package main

import (
	"context"
	"net/http"
	"runtime"
	"slices"

	"github.com/smarter-project/smarter-device-manager/daemon"
	"github.com/smarter-project/smarter-device-manager/internal/promtext"
)

// metricsHandler serves /metrics in the Prometheus text format, computed
// at scrape time from the daemon's counters and one probe of its event
// loop (nothing is kept twice), followed by Go's and the process's
// standard metrics.
func metricsHandler(stats *daemon.Stats, probe *daemon.Probe) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var w promtext.Writer
		writeMetrics(r.Context(), &w, stats, probe)
		w.WriteGo()
		w.WriteProcess()
		w.Serve(rw)
	})
}

const ns = "smarter_device_manager_"

// writeMetrics writes the daemon's own metrics, families in name order.
func writeMetrics(ctx context.Context, w *promtext.Writer, stats *daemon.Stats, probe *daemon.Probe) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	rep, err := probe.Check(ctx)
	loopUp := err == nil
	// Per-resource families, in resource order.
	names := make([]string, 0, len(rep.Resources))
	for name := range rep.Resources {
		names = append(names, name)
	}
	slices.Sort(names)
	// A family with no sample is left out, as the Prometheus client does.
	perResource := func(name, typ, help string, v func(daemon.ResourceStatus) float64) {
		if len(names) == 0 {
			return
		}
		w.Family(ns+name, typ, help)
		for _, res := range names {
			w.Sample(ns+name, v(rep.Resources[res]), "resource", res)
		}
	}

	perResource("allocations_total", promtext.Counter, "Successful Allocate calls.",
		func(st daemon.ResourceStatus) float64 { return float64(st.Allocations) })
	w.Family(ns+"build_info", promtext.Gauge, "The running build.")
	w.Sample(ns+"build_info", 1, "goversion", runtime.Version(), "version", version())
	if len(names) > 0 {
		w.Family(ns+"devices", promtext.Gauge, "Device IDs advertised, by resource and health.")
		for _, res := range names {
			st := rep.Resources[res]
			w.Sample(ns+"devices", float64(st.Healthy), "health", "healthy", "resource", res)
			w.Sample(ns+"devices", float64(st.Devices-st.Healthy), "health", "unhealthy", "resource", res)
		}
	}
	perResource("devices_flapping", promtext.Gauge, "Devices held down now for coming and going (--flap-half-life): unhealthy until quiet.",
		func(st daemon.ResourceStatus) float64 { return float64(st.Flapping) })
	w.One(ns+"errors_total", promtext.Counter, "Failures logged as errors: device root unreadable, reload failed, CDI spec not written.", float64(stats.Errors.Load()))
	w.One(ns+"event_loop_up", promtext.Gauge, "1 when the event loop answered the scrape's probe.", b2f(loopUp))
	perResource("flaps_total", promtext.Counter, "Times one of the resource's devices was held down for coming and going.",
		func(st daemon.ResourceStatus) float64 { return float64(st.FlapEpisodes) })
	perResource("preferred_allocations_total", promtext.Counter, "GetPreferredAllocation calls from the kubelet (offered only by class resources and devices with a NUMA node).",
		func(st daemon.ResourceStatus) float64 { return float64(st.PreferredAllocations) })
	perResource("registration_attempts_total", promtext.Counter, "Registration attempts, failed ones included (none while the kubelet socket is absent).",
		func(st daemon.ResourceStatus) float64 { return float64(st.Attempts) })
	perResource("registrations_total", promtext.Counter, "Successful registrations with the kubelet (more than one: re-registrations).",
		func(st daemon.ResourceStatus) float64 { return float64(st.Registrations) })
	w.One(ns+"reload_failures_total", promtext.Counter, "Of those, reads that found a new broken rule file (each logged once; the rules in force stay).", float64(stats.ReloadFailures.Load()))
	w.One(ns+"reloads_total", promtext.Counter, "Reads of the rule file: SIGHUP, or a change the rule file watch saw.", float64(stats.Reloads.Load()))
	w.One(ns+"reloads_unchanged_total", promtext.Counter, "Of those, reads that found the content the previous one read, and did nothing.", float64(stats.ReloadsUnchanged.Load()))
	w.One(ns+"rescan_seconds_total", promtext.Counter, "Time spent reading the device state and reconciling.", float64(stats.RescanNanos.Load())/1e9)
	w.One(ns+"rescans_total", promtext.Counter, "Reads of the device state (bursts of uevents coalesce into few).", float64(stats.Rescans.Load()))
	perResource("resource_registered", promtext.Gauge, "1 while the resource's server is registered with the kubelet.",
		func(st daemon.ResourceStatus) float64 { return b2f(st.Registered) })
	w.One(ns+"uevents_dropped_total", promtext.Counter, "Uevent messages thrown away unread: not from the kernel or root's udevd (a forgery), or unparsable.", float64(stats.Dropped.Load()))
	w.One(ns+"uevents_ignored_total", promtext.Counter, "Uevents that asked for no rescan (no device node, not an add or remove).", float64(stats.Ignored.Load()))
	w.One(ns+"uevents_lost_total", promtext.Counter, "Times uevents may have been lost (receive buffer overflow, reconnect): each causes a rescan.", float64(stats.Lost.Load()))
	w.One(ns+"uevents_total", promtext.Counter, "Uevents received from netlink.", float64(stats.Events.Load()))
	if loopUp {
		w.One(ns+"waiting_for_kubelet", promtext.Gauge, "1 while the plugin directory has no kubelet socket: nothing can register until the kubelet starts.", b2f(rep.WaitingForKubelet))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
