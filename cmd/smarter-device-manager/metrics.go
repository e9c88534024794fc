package main

import (
	"context"
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/smarter-project/smarter-device-manager/daemon"
)

// collector turns the daemon's counters and its event loop's report into
// Prometheus metrics at scrape time: nothing is kept twice, and a scrape
// costs the daemon one probe.
type collector struct {
	stats *daemon.Stats
	probe *daemon.Probe

	uevents, ignored, lost, rescans, rescanSeconds, errors *prometheus.Desc
	devices, registered, registrations, allocations        *prometheus.Desc
	buildInfo, loopUp                                      *prometheus.Desc
	attempts, waiting, preferred                           *prometheus.Desc
	reloads, reloadsUnchanged, reloadFailures              *prometheus.Desc
}

func newCollector(stats *daemon.Stats, probe *daemon.Probe) *collector {
	const ns = "smarter_device_manager_"
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(ns+name, help, labels, nil)
	}
	return &collector{
		stats:            stats,
		probe:            probe,
		uevents:          d("uevents_total", "Uevents received from netlink."),
		ignored:          d("uevents_ignored_total", "Uevents that asked for no rescan (no device node, not an add or remove)."),
		lost:             d("uevents_lost_total", "Times uevents may have been lost (receive buffer overflow, reconnect): each causes a rescan."),
		rescans:          d("rescans_total", "Reads of the device state (bursts of uevents coalesce into few)."),
		rescanSeconds:    d("rescan_seconds_total", "Time spent reading the device state and reconciling."),
		errors:           d("errors_total", "Failures logged as errors: device root unreadable, reload failed, CDI spec not written."),
		devices:          d("devices", "Device IDs advertised, by resource and health.", "resource", "health"),
		registered:       d("resource_registered", "1 while the resource's server is registered with the kubelet.", "resource"),
		registrations:    d("registrations_total", "Successful registrations with the kubelet (more than one: re-registrations).", "resource"),
		allocations:      d("allocations_total", "Successful Allocate calls.", "resource"),
		buildInfo:        d("build_info", "The running build.", "version", "goversion"),
		attempts:         d("registration_attempts_total", "Registration attempts, failed ones included (none while the kubelet socket is absent).", "resource"),
		preferred:        d("preferred_allocations_total", "GetPreferredAllocation calls from the kubelet (offered only by class resources and devices with a NUMA node).", "resource"),
		waiting:          d("waiting_for_kubelet", "1 while the plugin directory has no kubelet socket: nothing can register until the kubelet starts."),
		reloads:          d("reloads_total", "Reads of the rule file: SIGHUP, or a change the rule file watch saw."),
		reloadsUnchanged: d("reloads_unchanged_total", "Of those, reads that found the content the previous one read, and did nothing."),
		reloadFailures:   d("reload_failures_total", "Of those, reads that found a new broken rule file (each logged once; the rules in force stay)."),
		loopUp:           d("event_loop_up", "1 when the event loop answered the scrape's probe."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.uevents, c.ignored, c.lost, c.rescans, c.rescanSeconds, c.errors,
		c.devices, c.registered, c.registrations, c.allocations, c.buildInfo, c.loopUp,
		c.reloads, c.reloadsUnchanged, c.reloadFailures, c.attempts, c.waiting, c.preferred} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(c.uevents, float64(c.stats.Events.Load()))
	counter(c.ignored, float64(c.stats.Ignored.Load()))
	counter(c.lost, float64(c.stats.Lost.Load()))
	counter(c.rescans, float64(c.stats.Rescans.Load()))
	counter(c.rescanSeconds, float64(c.stats.RescanNanos.Load())/1e9)
	counter(c.errors, float64(c.stats.Errors.Load()))
	counter(c.reloads, float64(c.stats.Reloads.Load()))
	counter(c.reloadsUnchanged, float64(c.stats.ReloadsUnchanged.Load()))
	counter(c.reloadFailures, float64(c.stats.ReloadFailures.Load()))
	gauge(c.buildInfo, 1, version(), runtime.Version())

	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	rep, err := c.probe.Check(ctx)
	if err != nil {
		gauge(c.loopUp, 0)
		return
	}
	gauge(c.loopUp, 1)
	waiting := 0.0
	if rep.WaitingForKubelet {
		waiting = 1
	}
	gauge(c.waiting, waiting)
	for name, st := range rep.Resources {
		gauge(c.devices, float64(st.Healthy), name, "healthy")
		gauge(c.devices, float64(st.Devices-st.Healthy), name, "unhealthy")
		registered := 0.0
		if st.Registered {
			registered = 1
		}
		gauge(c.registered, registered, name)
		counter(c.registrations, float64(st.Registrations), name)
		counter(c.allocations, float64(st.Allocations), name)
		counter(c.attempts, float64(st.Attempts), name)
		counter(c.preferred, float64(st.PreferredAllocations), name)
	}
}

// metricsHandler serves /metrics from a registry of this process's own
// (no global registry): the daemon's metrics, Go's and the process's.
func metricsHandler(stats *daemon.Stats, probe *daemon.Probe) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(stats, probe), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
