package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// sizeRun is one size of the e2e module's TestKubeletBench: the daemon
// against the real kubelet device manager with n resources.
type sizeRun struct {
	fs                       string // the plugin directory's file system: tmpfs or disk
	n                        int
	start, startCPU, kubeCPU []time.Duration
	vmrss, vmhwm, anon, file int64
	heap, stack              int64
	goroutines               int
	idle, idleCPU            time.Duration
	wakeups                  int64
	reconcile                time.Duration // mean, over the hotplug cycles
	rescans                  int
}

// kubeletSizes runs TestKubeletBench at every size of c.sizes with the
// plugin directory on fsType, against the binary `make build` makes.
func kubeletSizes(c *config, fsType string) ([]sizeRun, []series, error) {
	sizes := make([]string, len(c.sizes))
	for i, n := range c.sizes {
		sizes[i] = strconv.Itoa(n)
	}
	out, err := runE2E(c, "TestKubeletBench",
		"SDM_E2E_DAEMON="+c.binary,
		"SDM_BENCH_SIZES="+strings.Join(sizes, ","),
		"SDM_BENCH_IDLE="+c.kubeletIdle.String(),
		"SDM_BENCH_PLUGIN_FS="+fsType)
	if err != nil {
		return nil, nil, err
	}
	ss, err := parseSeries(out)
	if err != nil {
		return nil, nil, err
	}
	byN := map[int]*sizeRun{}
	var runs []sizeRun
	for _, line := range strings.Split(out, "\n") {
		kind, rest, ok := strings.Cut(line, " ")
		if !ok || (kind != "FOOTPRINT" && kind != "RECONCILE") {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		n, _ := strconv.Atoi(kv["resources"])
		if kind == "RECONCILE" {
			if r := byN[n]; r != nil {
				us, _ := strconv.ParseFloat(kv["mean_us"], 64)
				r.reconcile = time.Duration(us * float64(time.Microsecond))
				r.rescans, _ = strconv.Atoi(kv["rescans"])
			}
			continue
		}
		num := func(k string) int64 { v, _ := strconv.ParseInt(kv[k], 10, 64); return v }
		msd := func(k string) time.Duration {
			v, _ := strconv.ParseFloat(kv[k], 64)
			return time.Duration(v * float64(time.Millisecond))
		}
		list := func(k string) []time.Duration {
			var ds []time.Duration
			for _, f := range strings.Split(kv[k], ",") {
				v, _ := strconv.ParseFloat(f, 64)
				ds = append(ds, time.Duration(v*float64(time.Millisecond)))
			}
			return ds
		}
		idleS, _ := strconv.ParseFloat(kv["idle_s"], 64)
		runs = append(runs, sizeRun{
			fs: kv["plugin_fs"], n: n,
			start: list("startup_ms"), startCPU: list("startup_cpu_ms"), kubeCPU: list("startup_kubelet_cpu_ms"),
			vmrss: num("vmrss"), vmhwm: num("vmhwm"), anon: num("rssanon"), file: num("rssfile"),
			heap: num("heap_inuse"), stack: num("stack_inuse"), goroutines: int(num("goroutines")),
			idle: time.Duration(idleS * float64(time.Second)), idleCPU: msd("idle_cpu_ms"), wakeups: num("wakeups"),
		})
		byN[n] = &runs[len(runs)-1]
	}
	if len(runs) != len(c.sizes) {
		return nil, nil, fmt.Errorf("e2e TestKubeletBench printed %d FOOTPRINT lines for %d sizes:\n%s", len(runs), len(c.sizes), out)
	}
	return runs, ss, nil
}

func median(ds []time.Duration) time.Duration { return series{samples: ds}.pct(0.5) }

// kubeletTable writes issue 14's table: every figure at every size, the
// goal, and the old daemon's figures as the issue measured them (about 90
// resources, the same machine).
func (r *report) kubeletTable(w func(string, ...any)) {
	tmpfs, disk := r.sizes["tmpfs"], r.sizes["disk"]
	if len(tmpfs) == 0 {
		return
	}
	w("| figure |")
	for _, s := range tmpfs {
		w(" %d resources |", s.n)
	}
	w(" goal | old daemon (issue 14, ~90 resources) |\n|---|")
	for range tmpfs {
		w("---:|")
	}
	w("---|---|\n")
	row := func(name, goal, old string, cell func(s sizeRun) string) {
		w("| %s |", name)
		for _, s := range tmpfs {
			w(" %s |", cell(s))
		}
		w(" %s | %s |\n", goal, old)
	}
	lat := func(s sizeRun, what string) string {
		for _, ss := range r.sizeLatency {
			if ss.name == fmt.Sprintf("real kubelet, %d resources, plugin dir on %s: %s", s.n, s.fs, what) {
				return fmt.Sprintf("%s / %s", ms(ss.pct(0.5)), ms(ss.pct(0.9)))
			}
		}
		return "—"
	}
	row("VmHWM (peak resident)", "≤ 18 MiB", "28.6-29.0 MiB", func(s sizeRun) string { return mib(s.vmhwm) })
	row("RssAnon (private)", "≤ 8 MiB", "18.3-19.0 MiB", func(s sizeRun) string { return mib(s.anon) })
	row("RssFile (mapped binary)", "≤ 9 MiB", "10.0-10.2 MiB", func(s sizeRun) string { return mib(s.file) })
	row("stripped static binary", "≤ 10 MiB", "11.1 MiB", func(sizeRun) string { return mib(r.binarySize) })
	row("start → every resource registered, plugin dir on tmpfs (median of 3)", "< 50 ms (100), < 300 ms (1,000)", "326-394 ms",
		func(s sizeRun) string { return ms(median(s.start)) })
	if len(disk) == len(tmpfs) {
		row("same, plugin dir on this machine's disk (ext4)", "", "", func(s sizeRun) string {
			for _, d := range disk {
				if d.n == s.n {
					return ms(median(d.start))
				}
			}
			return "—"
		})
	}
	row("CPU over that start: the daemon / the kubelet's device manager (medians)", "", "",
		func(s sizeRun) string { return fmt.Sprintf("%s / %s", ms(median(s.startCPU)), ms(median(s.kubeCPU))) })
	row(fmt.Sprintf("idle CPU, wake-ups (%v)", r.kubeletIdle), "keep (~0 ms / 20 s, 0.15/s)", "~0 ms / 20 s, 0.15/s", func(s sizeRun) string {
		return fmt.Sprintf("%v, %.2f/s", s.idleCPU, float64(s.wakeups)/s.idle.Seconds())
	})
	row("uevent → kubelet receives the ListAndWatch message, add (p50 / p90)", "p90 < 3 ms", "never (no hotplug)",
		func(s sizeRun) string { return lat(s, "add → ListAndWatch message received") })
	row("same, remove → unhealthy (p50 / p90)", "p90 < 3 ms", "never",
		func(s sizeRun) string { return lat(s, "remove → ListAndWatch message received (unhealthy)") })
	// pct is one percentile of a series of this size.
	pct := func(s sizeRun, what string, p float64) string {
		for _, ss := range r.sizeLatency {
			if ss.name == fmt.Sprintf("real kubelet, %d resources, plugin dir on %s: %s", s.n, s.fs, what) {
				return ms(ss.pct(p))
			}
		}
		return "—"
	}
	row("the kernel's own part of it: first uevent → the node's own uevent, add / remove (p50 / p90)", "", "", func(s sizeRun) string {
		return pct(s, "the kernel's own part of the add (first uevent → the node's uevent)", 0.5) + " / " +
			pct(s, "the kernel's own part of the add (first uevent → the node's uevent)", 0.9) + ", " +
			pct(s, "the kernel's own part of the remove (first uevent → the node's uevent)", 0.5) + " / " +
			pct(s, "the kernel's own part of the remove (first uevent → the node's uevent)", 0.9)
	})
	row("the kubelet's own processing of the message (checkpoint), add / remove p90", "", "", func(s sizeRun) string {
		return pct(s, "the kubelet's own processing of the add message (checkpoint)", 0.9) + " / " +
			pct(s, "the kubelet's own processing of the remove message (checkpoint)", 0.9)
	})
	row("the daemon's reconcile (state read, plan, apply), mean over the cycles", "", "",
		func(s sizeRun) string { return ms(s.reconcile) })
	row("Go heap in use after a GC / goroutine stacks", "", "", func(s sizeRun) string { return mib(s.heap) + " / " + mib(s.stack) })
	row("goroutines", "", "", func(s sizeRun) string { return strconv.Itoa(s.goroutines) })
}
