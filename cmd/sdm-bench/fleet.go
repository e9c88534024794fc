package main

import (
	"fmt"
	"strconv"
	"strings"
)

// The fleet benchmark's size (issue 22 item 3): 1,000 nodes, a churn
// window of 5 minutes, 5 nodes with a flapping cable.
const (
	fleetNodes    = 1000
	fleetSeconds  = 300
	fleetFlapping = 5
)

// fleetBench runs the e2e module's TestDRAFleet (simulated nodes, each the
// daemon and the DRA driver over a fake machine of ten USB serial
// adapters, against one real kube-apiserver) and returns the report's
// section, in Markdown, from its FLEET lines.
func fleetBench(c *config) (string, error) {
	out, err := runE2E(c, "TestDRAFleet",
		// No daemon binary is needed: TestMain builds none.
		"SDM_E2E_DAEMON="+c.binary,
		"SDM_BENCH_FLEET_NODES="+strconv.Itoa(fleetNodes),
		"SDM_BENCH_FLEET_SECONDS="+strconv.Itoa(fleetSeconds),
		"SDM_BENCH_FLEET_FLAPPING="+strconv.Itoa(fleetFlapping))
	if err != nil {
		return "", err
	}
	phase := map[string]map[string]string{}
	var alloc []map[string]string
	for _, r := range kvLines(out, "FLEET ") {
		if r["phase"] == "allocator" {
			alloc = append(alloc, r)
		} else {
			phase[r["phase"]] = r
		}
	}
	for _, p := range []string{"startup", "churn", "writes", "restart", "nodes"} {
		if phase[p] == nil {
			return "", fmt.Errorf("e2e TestDRAFleet printed no FLEET phase=%s line:\n%s", p, out)
		}
	}
	if len(alloc) != 2 {
		return "", fmt.Errorf("e2e TestDRAFleet printed %d allocator lines, want 2:\n%s", len(alloc), out)
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	st, ch, wr, nd := phase["startup"], phase["churn"], phase["writes"], phase["nodes"]
	w("## A fleet in DRA mode\n\n")
	w("%s simulated nodes (the e2e module's `TestDRAFleet`), each the daemon's event loop and rules over a fake machine of ten\n", st["nodes"])
	w("USB serial adapters (hwfixture FT232R and CP2102N, udev's identity), publishing through the project's `dra.Driver` with\n")
	w("its own connection, against one real kube-apiserver and etcd in another process (its CPU and memory are theirs\n")
	w("alone). Churn: one plug or unplug per node every 3 min on average; %s nodes have a cable that flaps 10 times a second.\n\n", wr["flapping_nodes"])
	w("| phase | seconds | requests /s | mutating /s | slice PUT p50 / p99 | worst p99 | API server CPU | RSS | watches | etcd |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range []map[string]string{st, ch} {
		w("| %s | %s | %s | %s | %s / %s ms | %s ms (%s) | %s cores | %s MB | %s | %s MB |\n", r["phase"], r["seconds"], r["requests_per_s"],
			r["mutating_per_s"], r["slice_update_p50_ms"], r["slice_update_p99_ms"], r["worst_p99_ms"], strings.ReplaceAll(r["worst"], "_", " "),
			r["apiserver_cores"], r["apiserver_rss_mb"], r["watches"], r["etcd_mb"])
	}
	w("\nSlice writes during the churn (%s s): %s in all (%s/s) for %s plugs and unplugs and %s flapping changes; a quiet node\n",
		wr["seconds"], wr["slice_writes"], wr["writes_per_s"], wr["changes"], wr["flap_changes"])
	w("%s on average (max %s), a flapping node %s (max %s); %s of the writes only dropped a device unplugged longer than\n",
		wr["quiet_writes_mean"], wr["quiet_writes_max"], wr["flapping_writes_mean"], wr["flapping_writes_max"], wr["expiry_writes"])
	w("`--remove-after` (5 min). Updates that changed nothing: %s of %s requests. The nodes'\n", wr["unchanged_updates"], wr["update_requests"])
	w("own CPU: %s ms per node per minute.\n\n", nd["cpu_per_node_ms_per_min"])
	rs := phase["restart"]
	w("All %s daemons restarted at once (a fleet-wide upgrade), %s of them with an adapter unplugged or flapping; in the\n", rs["nodes"], rs["nodes_with_unplugged"])
	w("%s s from the restart: %s slice writes, of which %s only dropped a device unplugged longer than `--remove-after` (as the\n", rs["seconds"], rs["slice_writes"], rs["expiry_writes"])
	w("old process would have); %s PUT requests, failed: %s; %s requests in all, slice PUT p99 %s ms, API server %s cores. A new\n",
		rs["update_requests"], rs["failed"], rs["requests"], rs["slice_update_p99_ms"], rs["apiserver_cores"])
	w("process carries over the devices its predecessor published as unplugged; what it cannot know is a device held for\n")
	w("flapping.\n\n")
	w("| allocator over | slices | devices | NewAllocator | Filter, every node | per node | the one feasible node |\n")
	w("|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range alloc {
		w("| %s nodes | %s | %s | %s ms | %s ms | %s µs | %s ms |\n", r["nodes"], r["slices"], r["devices"], r["new_allocator_ms"],
			r["filter_all_nodes_ms"], r["filter_per_node_us"], r["filter_target_ms"])
	}
	fleetExtrapolation(w, st, ch, wr, alloc)
	return b.String(), nil
}

// fleetExtrapolation writes the figures scaled to 5,000 nodes (SIG
// Scalability's largest cluster) beside the thresholds and SLOs they
// answer to: what grows with the nodes is scaled linearly from the run;
// the allocator's figure at 5,000 is measured, not scaled.
func fleetExtrapolation(w func(string, ...any), st, ch, wr map[string]string, alloc []map[string]string) {
	num := func(r map[string]string, k string) float64 {
		v, _ := strconv.ParseFloat(r[k], 64)
		return v
	}
	n := num(st, "nodes")
	k := 5000 / n
	perNodeMB := (num(st, "apiserver_heap_mb") - num(st, "apiserver_heap_mb_before")) / n
	w("\n### At 5,000 nodes\n\n")
	w("Scaled linearly from the %.0f-node run (writes, watches, objects and memory grow with the nodes; latency is as\n", n)
	w("measured on this shared 2-core machine and is not scaled); the allocator's row is measured over 5,000 nodes' slices.\n")
	w("Thresholds: SIG Scalability's `thresholds.md` (5,000 nodes; no threshold is set for ResourceSlices) and `slos.md`\n")
	w("(mutating calls p99 ≤ 1 s per resource and verb; pod start-up p99 ≤ 5 s).\n\n")
	w("| quantity | %.0f nodes | 5,000 nodes | for comparison |\n|---|---:|---:|---|\n", n)
	w("| ResourceSlices (one per node) | %.0f | %.0f | Nodes 5,000; Pods 150,000 |\n", n, 5000.0)
	w("| slice writes /s, churn of one change per node per 3 min | %.1f | %.0f | the nodes' own Lease renewals: %.0f /s |\n",
		num(wr, "writes_per_s"), num(wr, "writes_per_s")*k, 5000.0/10)
	w("| API requests /s (churn; nearly all slice PUTs) | %.1f | %.0f | |\n", num(ch, "requests_per_s"), num(ch, "requests_per_s")*k)
	w("| slice PUT latency p99 (churn) | %.0f ms | not scaled | SLO: ≤ 1,000 ms |\n", num(ch, "slice_update_p99_ms"))
	w("| open watches (one per daemon) | %.0f | %.0f | |\n", n, 5000.0)
	w("| API server live heap for the daemons | %.0f MB (%.2f MB a node) | %.0f MB | |\n", perNodeMB*n, perNodeMB, perNodeMB*5000)
	w("| etcd database after the churn (uncompacted) | %.1f MB | %.0f MB | etcd's default quota: 2,048 MB |\n", num(ch, "etcd_mb"), num(ch, "etcd_mb")*k)
	w("| all daemons start at once: slice create p99 | %.0f ms | not scaled | SLO: ≤ 1,000 ms |\n", num(st, "slice_create_p99_ms"))
	if len(alloc) == 2 {
		w("| scheduler's DRA Filter over every node, a claim by serial, one core | %.0f ms | %.0f ms (measured) | pod start-up SLO: 5,000 ms (the scheduler runs Filter on 16 goroutines) |\n",
			num(alloc[0], "filter_all_nodes_ms"), num(alloc[1], "filter_all_nodes_ms"))
	}
}
