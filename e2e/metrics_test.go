package e2e

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// Prometheus can scrape the daemon: its /metrics parses with Prometheus'
// own text parser, and holds the daemon's per-resource figures for what
// the kubelet registered, with Go's and the process's standard metrics.
func TestMetricsParseAsPrometheus(t *testing.T) {
	n := newNode(t, "- devicematch: ^null$\n  nummaxdevices: 2\n")
	n.startKubelet()
	n.startDaemon()
	n.waitCapacity("null registered", map[string]counts{resNull: {2, 2}})
	n.waitMetrics("the registration counted", func(m map[string]float64) bool {
		return m[perResource("registrations_total", resNull)] == 1
	})

	resp, err := http.Get("http://" + n.metricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if f := expfmt.ResponseFormat(resp.Header); f.FormatType() != expfmt.TypeTextPlain {
		t.Errorf("Content-Type %q is not Prometheus' text format", resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("Prometheus cannot parse /metrics: %v", err)
	}
	devices := families["smarter_device_manager_devices"]
	if devices == nil {
		t.Fatal("no smarter_device_manager_devices")
	}
	healthy := -1.0
	for _, m := range devices.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["resource"] == resNull && labels["health"] == "healthy" {
			healthy = m.GetGauge().GetValue()
		}
	}
	if healthy != 2 {
		t.Errorf("smarter_device_manager_devices{health=\"healthy\",resource=%q} = %v; want 2", resNull, healthy)
	}
	for _, name := range []string{"smarter_device_manager_uevents_total", "smarter_device_manager_build_info",
		"go_goroutines", "go_gc_duration_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if families[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	// The daemon's families, their types and label names are what
	// dashboards and alerts are written against: a contract across
	// versions (testdata/metrics.golden; values are not).
	var contract []string
	for name, f := range families {
		if !strings.HasPrefix(name, "smarter_device_manager_") {
			continue
		}
		labels := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		names := strings.Join(slices.Sorted(maps.Keys(labels)), ",")
		if names == "" {
			names = "-"
		}
		contract = append(contract, fmt.Sprintf("%s %s %s", name, strings.ToLower(f.GetType().String()), names))
	}
	slices.Sort(contract)
	testutil.Golden(t, "testdata/metrics.golden", []byte(strings.Join(contract, "\n")+"\n"))
}
