package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

type report struct {
	started, finished time.Time
	command           string
	machine           []string
	binarySize        int64
	latency           []series
	allocate          []series
	// sizes are the real-kubelet runs by size, by the plugin directory's
	// file system ("tmpfs", "disk"); sizeLatency their latency series.
	sizes       map[string][]sizeRun
	sizeLatency []series
	kubeletIdle time.Duration
	footprint   []footprint
	storm       stormResult
	micro       []string
	// dra is the DRA section, already Markdown (draBench).
	dra string
	// attacks is the attack section, already Markdown (attackBench).
	attacks string
	// reboots is the node reboot section, already Markdown (rebootBench).
	reboots string
	// flap is the flapping device section, already Markdown (flapBench).
	flap string
	// fleet is the fleet section, already Markdown (fleetBench).
	fleet string
	// failed names the parts that failed (their error is on stderr).
	failed []string
}

func describeMachine() []string {
	var out []string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				out = append(out, "CPU: "+strings.TrimSpace(strings.SplitN(line, ":", 2)[1]))
				break
			}
		}
	}
	out = append(out, fmt.Sprintf("cores: %d", runtime.NumCPU()))
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		out = append(out, "memory: "+strings.Join(strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:], " "))
	}
	if b, err := exec.Command("uname", "-sr").Output(); err == nil {
		out = append(out, "kernel: "+strings.TrimSpace(string(b)))
	}
	if b, err := exec.Command("go", "version").Output(); err == nil {
		out = append(out, "toolchain: "+strings.TrimSpace(string(b)))
	}
	return out
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func mib(b int64) string {
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// percentiles writes a table of series with their p50, p90, p99 and max.
func percentiles(w func(string, ...any), series []series) {
	w("| series | samples | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n")
	for _, s := range series {
		w("| %s | %d | %s | %s | %s | %s |\n", s.name, s.count(), ms(s.pct(0.5)), ms(s.pct(0.9)), ms(s.pct(0.99)), ms(s.pct(1)))
	}
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# Benchmarks\n\n")
	w("Written by `cmd/sdm-bench` — regenerate with `make bench` (as root); no figure here is edited by hand.\n")
	w("Figures come from one run on one shared machine: compare runs on the same machine, not across machines.\n\n")
	w("Run: %s, %s to %s.\n\n", r.command, r.started.UTC().Format(time.RFC3339), r.finished.UTC().Format("15:04:05Z"))
	if len(r.failed) > 0 {
		w("**Failed in this run** (their figures are missing below): %s.\n\n", strings.Join(r.failed, "; "))
	}
	w("Machine:\n\n")
	for _, m := range r.machine {
		w("- %s\n", m)
	}

	w("\n## Hotplug latency\n\n")
	w("From the kernel's first uevent of the change — timestamped on receipt by an independent netlink listener —\n")
	w("to the ListAndWatch message showing the device Healthy / Unhealthy at a kubelet-side gRPC client\n")
	w("(`plugin/plugintest`), over real zram `hot_add` / `hot_remove` cycles. *Health flip*: the resource stays\n")
	w("registered and only its health changes (the usual replug). *New resource*: `--remove-after=1ms`, so every\n")
	w("add starts a gRPC server, registers it with the kubelet and opens its first ListAndWatch stream. In udev mode\n")
	w("the figure includes systemd-udevd's own processing (the daemon waits for udev's event). The *real kubelet*\n")
	w("rows run the same cycles against k8s.io/kubernetes' device manager (the e2e module), timing until its\n")
	w("`GetCapacity()` shows the change (polled every 100 µs: it has no change notification).\n\n")
	percentiles(w, r.latency)

	w("\n## Allocate through the real kubelet\n\n")
	w("k8s.io/kubernetes' device manager (the e2e module) admitting a pod's container: `ManagerImpl.Allocate` from call\n")
	w("to return, which picks device IDs (asking the plugin's GetPreferredAllocation where the plugin offers it: class\n")
	w("resources and devices with a NUMA node), calls the plugin's Allocate for each resource and checkpoints. The daemon\n")
	w("runs the old daemon's default rules over 90 device nodes (`mknod` in a temporary device root), one resource each;\n")
	w("each pod asks for one ID of a `video` node, of `snd` and of a `gpiochip` (20 IDs each) and of a `ttyS` port (1 ID),\n")
	w("in rounds of 20 pods.\n\n")
	percentiles(w, r.allocate)

	if len(r.sizes["tmpfs"]) > 0 {
		w("\n## Against the real kubelet, by size\n\n")
		w("Issue 14's table, every figure at each size: the daemon as `make build` makes it, against k8s.io/kubernetes'\n")
		w("device manager (the e2e module's `TestKubeletBench`). The device root is a tmpfs holding N nodes (one resource\n")
		w("each) with the host's `/dev` bind-mounted below it, where zram devices come and go. Memory is read from\n")
		w("`/proc/PID/status` after the third start and 2 s of settling; start-up is from the process's start until the\n")
		w("device manager's `GetCapacity()` shows every resource allocatable, with the daemon's CPU and the device manager's\n")
		w("(the test process's) over that span; wake-ups are the daemon's context switches. Latency runs from the kernel's\n")
		w("first uevent (stamped by the test's own netlink listener) to the device manager's ListAndWatch client having the\n")
		w("message (its `State pushed for device plugin` log line, written when the stream's Recv returns and before its\n")
		w("callback); the device manager's own processing of the message (its checkpoint write) is shown apart, and so\n")
		w("is the kernel's own part of the span: zram's first uevent is its bdi's, and the node's own uevent (the node made\n")
		w("or already gone) follows it. The plugin directory is on a tmpfs: on this machine's ext4 creating a file (a\n")
		w("socket's bind) costs ~0.7 ms of kernel time against ~15 µs on tmpfs, so the start-up on disk is shown in its own\n")
		w("row. The old daemon is not built or run by this tool: its figures are issue 14's, measured side by side on this\n")
		w("machine with ~90 resources.\n\n")
		r.kubeletTable(w)
		w("\n")
		percentiles(w, r.sizeLatency)
	}

	w("\n## Start-up\n\n")
	w("Process start → every resource registered and its first ListAndWatch message received, with N matching\n")
	w("device nodes (`mknod` on a tmpfs device root, one resource each); median of 3 starts. The fake kubelet\n")
	w("runs on the same cores and, like kubelet, dials every plugin back: the daemon's own CPU time over the\n")
	w("same span is shown apart.\n\n")
	w("| devices | median | runs | daemon CPU (median) |\n|---:|---:|---|---:|\n")
	for _, f := range r.footprint {
		var runs []string
		for _, s := range f.startup {
			runs = append(runs, ms(s))
		}
		w("| %d | %s | %s | %s |\n", f.devices, ms(f.medianStartup()), strings.Join(runs, ", "), ms(series{samples: f.startupCPU}.pct(0.5)))
	}

	w("\n## Footprint\n\n")
	w("After start-up and 2 s of settling, then an idle window with no device change: resident memory\n")
	w("(VmRSS, peak VmHWM) of the daemon process, split into its private memory (RssAnon) and the pages of\n")
	w("its binary it has mapped (RssFile: page cache, shared and reclaimable), its Go heap after a GC (from\n")
	w("`--debug-addr`), goroutines, and the CPU time it used during the idle window (100 Hz clock ticks: 10 ms\n")
	w("resolution; the idle window includes the 1-minute safety resync).\n\n")
	w("| resources | VmRSS | VmHWM | RssAnon | RssFile | Go heap in use | goroutines | CPU in %v idle | rescans in idle |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n", r.footprintWindow())
	for _, f := range r.footprint {
		w("| %d | %s | %s | %s | %s | %s | %d | %v | %d |\n", f.devices, mib(f.mem.rss), mib(f.mem.hwm), mib(f.mem.anon), mib(f.mem.file),
			mib(int64(f.heapInuse)), f.goroutines, f.idleCPU, f.idleRescans)
	}
	if n := len(r.footprint); n >= 2 {
		lo, hi := r.footprint[0], r.footprint[n-1]
		extra := float64(hi.devices - lo.devices)
		w("\nPer extra resource (from %d to %d): %.1f KiB RSS, %.1f KiB Go heap, %.1f goroutines.\n", lo.devices, hi.devices,
			float64(hi.mem.rss-lo.mem.rss)/extra/1024, (float64(hi.heapInuse)-float64(lo.heapInuse))/extra/1024,
			float64(hi.goroutines-lo.goroutines)/extra)
	}
	w("\nBinary (`make build`: static, `-trimpath -ldflags='-s -w'`): %s.\n", mib(r.binarySize))

	if r.dra != "" {
		w("\n%s", r.dra)
	}
	if r.attacks != "" {
		w("\n%s", r.attacks)
	}
	if r.flap != "" {
		w("\n%s", r.flap)
	}
	if r.fleet != "" {
		w("\n%s", r.fleet)
	}
	if r.reboots != "" {
		w("\n%s", r.reboots)
	}

	s := r.storm
	w("\n## Uevent storm\n\n")
	w("%d `change` uevents written to `/sys/class/mem/null/uevent` as fast as one writer can, with %d real zram\n", s.written, s.added)
	w("adds and %d removal in the middle; the daemon runs in kernel mode with the default receive buffer.\n\n", s.removed)
	w("| figure | value |\n|---|---:|\n")
	w("| events heard by the independent listener | %d |\n", s.heard)
	w("| events received by the daemon | %d |\n", s.daemonEvents)
	if s.wall > 0 {
		w("| events absorbed per second (write start → daemon idle) | %.0f |\n", float64(s.daemonEvents)/s.wall.Seconds())
	}
	w("| daemon CPU time | %v |\n", s.cpu)
	if s.daemonEvents > 0 {
		w("| CPU per event | %.1f µs |\n", float64(s.cpu)/float64(s.daemonEvents)/1e3)
	}
	w("| state reads (coalesced rescans) | %d |\n", s.rescans)
	if s.rescans > 0 {
		w("| mean state read (scan + rules + diff) | %.0f µs |\n", float64(s.rescanTime)/float64(s.rescans)/1e3)
	}
	w("| lost-event notices (ENOBUFS) | %d |\n", s.lost)
	w("| final state exact | %v |\n", s.exact)
	w("\nPresent at the end: %s; advertised healthy: %s.\n", strings.Join(s.present, ", "), strings.Join(s.advertised, ", "))

	w("\n## Go micro-benchmarks\n\n")
	w("`go test -run '^$' -bench . -benchmem ./conf ./hotplug ./daemon`: the rule matcher (Resolve over 1,000\n")
	w("devices), uevent parsing, and the device-root scan at 1,000 nodes.\n\n```\n")
	for _, l := range r.micro {
		w("%s\n", l)
	}
	w("```\n")
	return b.String()
}

func (r *report) footprintWindow() time.Duration {
	if len(r.footprint) == 0 {
		return 0
	}
	return r.footprint[0].idleWindow
}
