package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

const waitLimit = 30 * time.Second

// series is one latency distribution.
type series struct {
	name    string
	samples []time.Duration
	// n and fixed (p50, p90, p99, max) hold figures computed elsewhere
	// (the e2e module) instead of samples.
	n     int
	fixed []time.Duration
}

func (s series) count() int {
	if s.fixed != nil {
		return s.n
	}
	return len(s.samples)
}

func (s series) pct(p float64) time.Duration {
	if s.fixed != nil {
		switch p {
		case 0.5:
			return s.fixed[0]
		case 0.9:
			return s.fixed[1]
		case 0.99:
			return s.fixed[2]
		}
		return s.fixed[3]
	}
	if len(s.samples) == 0 {
		return 0
	}
	sorted := slices.Clone(s.samples)
	slices.Sort(sorted)
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// latency measures, over c.cycles zram hot_add/hot_remove cycles, the time
// from the kernel's first uevent of the change (timestamped at receipt by an
// independent netlink listener) to the ListAndWatch message that shows the device
// Healthy / Unhealthy at the fake kubelet. fresh uses --remove-after=1ms,
// so every add starts and registers a new server; otherwise the resource
// stays and only its health flips.
func latency(ctx context.Context, c *config, source string, fresh bool) ([]series, error) {
	if _, err := os.Stat("/sys/class/zram-control"); err != nil {
		return nil, fmt.Errorf("no zram-control (modprobe zram num_devices=0): %w", err)
	}
	if source == "udev" && !testkernel.UdevdAlive() {
		stop, err := testkernel.StartUdevd()
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	dir, err := os.MkdirTemp(c.workDir, "lat")
	if err != nil {
		return nil, err
	}
	rules, err := writeRules(dir, "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 1\n")
	if err != nil {
		return nil, err
	}
	k, err := plugintest.StartFakeKubelet(dir)
	if err != nil {
		return nil, err
	}
	defer k.Stop()
	l, err := listen(ctx)
	if err != nil {
		return nil, err
	}
	defer l.close()
	removeAfter := "0"
	if fresh {
		removeAfter = "1ms"
	}
	d, err := startDaemon(c, "--config", rules, "--plugin-dir", dir, "--uevent-source", source,
		"--remove-after", removeAfter, "--resync", "1h")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	if _, err := d.vars(false); err != nil { // up and listening
		return nil, err
	}

	label := "health flip"
	if fresh {
		label = "new resource"
	}
	add := series{name: fmt.Sprintf("%s, %s: add → Healthy", source, label)}
	rm := series{name: fmt.Sprintf("%s, %s: remove → Unhealthy", source, label)}
	for i := range c.cycles {
		// The next zram number is the lowest free one; the kubelet-side wait
		// starts before the syscall, which returns only after the kernel has
		// sent its uevent (hot_remove in particular takes a while longer).
		next, err := nextZram()
		if err != nil {
			return nil, err
		}
		res := "smarter-devices/zram" + strconv.Itoa(next)
		healthy := waitAsync(k, res, pluginapi.Healthy)
		l.drain()
		n, err := zramAdd()
		if err != nil {
			return nil, err
		}
		name := "zram" + strconv.Itoa(n)
		if n != next {
			_ = zramRemove(n)
			return nil, fmt.Errorf("zram hot_add gave %s, expected zram%d", name, next)
		}
		t0, err := l.await("add", name, waitLimit)
		if err != nil {
			_ = zramRemove(n)
			return nil, err
		}
		t1, err := (<-healthy).get()
		if err != nil {
			_ = zramRemove(n)
			return nil, err
		}
		unhealthy := waitAsync(k, res, pluginapi.Unhealthy)
		l.drain()
		if err := zramRemove(n); err != nil {
			return nil, err
		}
		t2, err := l.await("remove", name, waitLimit)
		if err != nil {
			return nil, err
		}
		t3, err := (<-unhealthy).get()
		if err != nil {
			return nil, err
		}
		// The first add also starts the server; in the health-flip series
		// it is not a flip, so it is left out.
		if fresh || i > 0 {
			add.samples = append(add.samples, t1.Sub(t0))
		}
		rm.samples = append(rm.samples, t3.Sub(t2))
		if fresh {
			// Wait for the resource to be stopped, so the next add is a new one.
			wctx, cancel := context.WithTimeout(ctx, waitLimit)
			err := k.Wait(wctx, func() bool { return !k.Streaming(res) })
			cancel()
			if err != nil {
				return nil, fmt.Errorf("%s not stopped after --remove-after: %w", res, err)
			}
		}
	}
	return []series{add, rm}, nil
}

type stampOrErr struct {
	at  time.Time
	err error
}

func (s stampOrErr) get() (time.Time, error) { return s.at, s.err }

// waitAsync waits in the background for resource to show health and
// delivers the moment the kubelet side saw it.
func waitAsync(k *plugintest.FakeKubelet, resource, health string) <-chan stampOrErr {
	ch := make(chan stampOrErr, 1)
	go func() {
		at, err := waitHealth(k, resource, health, waitLimit)
		ch <- stampOrErr{at, err}
	}()
	return ch
}

// nextZram is the number zram's hot_add will hand out: the lowest free one.
func nextZram() (int, error) {
	for n := 0; ; n++ {
		if _, err := os.Stat("/sys/block/zram" + strconv.Itoa(n)); os.IsNotExist(err) {
			return n, nil
		} else if err != nil {
			return 0, err
		}
	}
}

// footprint is one device count's start-up and memory figures.
type footprint struct {
	devices     int
	startup     []time.Duration // process start → every resource registered and its first ListAndWatch received
	startupCPU  []time.Duration // the daemon's own CPU time over the same span
	mem         memStatus
	heapInuse   uint64
	heapAlloc   uint64
	goroutines  int
	idleCPU     time.Duration
	idleWindow  time.Duration
	idleRescans uint64
}

func (f footprint) medianStartup() time.Duration {
	return series{samples: f.startup}.pct(0.5)
}

// startupAndFootprint starts the daemon three times on a tmpfs device root
// holding n matching nodes, timing each start; after the last it lets the
// daemon idle and reads its memory and the CPU it used while idle.
func startupAndFootprint(ctx context.Context, c *config, n int) (footprint, error) {
	f := footprint{devices: n, idleWindow: c.idle}
	devRoot := filepath.Join(c.workDir, "dev"+strconv.Itoa(n))
	unmount, err := mountDevRoot(devRoot, n)
	if err != nil {
		return f, err
	}
	defer unmount()
	for run := range 3 {
		dir, err := os.MkdirTemp(c.workDir, "up")
		if err != nil {
			return f, err
		}
		rules, err := writeRules(dir, "- devicematch: ^bd[0-9]+$\n  nummaxdevices: 1\n")
		if err != nil {
			return f, err
		}
		k, err := plugintest.StartFakeKubelet(dir)
		if err != nil {
			return f, err
		}
		start := time.Now()
		d, err := startDaemon(c, "--config", rules, "--plugin-dir", dir, "--dev-root", devRoot,
			"--uevent-source", "kernel", "--sys-root", dir)
		if err != nil {
			k.Stop()
			return f, err
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err = k.Wait(wctx, func() bool { return k.Listed() >= n })
		cancel()
		if err != nil {
			d.stop()
			k.Stop()
			return f, fmt.Errorf("%d resources not all registered: %w", n, err)
		}
		f.startup = append(f.startup, time.Since(start))
		if cpu, err := cpuTime(d.cmd.Process.Pid); err == nil {
			f.startupCPU = append(f.startupCPU, cpu)
		}
		if run == 2 {
			err = idle(c, d, &f)
		}
		if serr := d.stop(); err == nil && serr != nil {
			err = serr
		}
		k.Stop()
		if err != nil {
			return f, err
		}
	}
	return f, nil
}

func idle(c *config, d *daemonProc, f *footprint) error {
	// Let start-up garbage and the first gRPC buffers settle.
	time.Sleep(2 * time.Second)
	pid := d.cmd.Process.Pid
	before, err := d.vars(false)
	if err != nil {
		return err
	}
	cpu0, err := cpuTime(pid)
	if err != nil {
		return err
	}
	time.Sleep(c.idle)
	cpu1, err := cpuTime(pid)
	if err != nil {
		return err
	}
	after, err := d.vars(true)
	if err != nil {
		return err
	}
	f.idleCPU = cpu1 - cpu0
	f.idleRescans = after.Stats.Rescans - before.Stats.Rescans
	f.heapInuse, f.heapAlloc, f.goroutines = after.Memstats.HeapInuse, after.Memstats.HeapAlloc, after.Goroutines
	f.mem, err = procStatus(pid)
	return err
}

// stormResult is what the daemon did with a uevent storm.
type stormResult struct {
	written, heard      int           // change events written; events the independent listener heard
	daemonEvents        uint64        // events the daemon received
	rescans, lost       uint64        // its state reads, and lost-event notices
	cpu, wall           time.Duration // its CPU time, and the time until it had absorbed the storm
	rescanTime          time.Duration
	added, removed      int
	exact               bool
	advertised, present []string
}

// storm writes c.storm "change" uevents for /dev/null as fast as it can,
// with real zram adds and removes in the middle, and reports how the daemon
// absorbed them and whether its final advertised state is exactly the
// devices present.
func storm(ctx context.Context, c *config) (stormResult, error) {
	var r stormResult
	dir, err := os.MkdirTemp(c.workDir, "storm")
	if err != nil {
		return r, err
	}
	rules, err := writeRules(dir, "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 1\n")
	if err != nil {
		return r, err
	}
	k, err := plugintest.StartFakeKubelet(dir)
	if err != nil {
		return r, err
	}
	defer k.Stop()
	l, err := listen(ctx)
	if err != nil {
		return r, err
	}
	defer l.close()
	d, err := startDaemon(c, "--config", rules, "--plugin-dir", dir, "--uevent-source", "kernel",
		"--remove-after", "0", "--resync", "1h")
	if err != nil {
		return r, err
	}
	defer d.stop()
	v0, err := d.vars(false)
	if err != nil {
		return r, err
	}
	cpu0, err := cpuTime(d.cmd.Process.Pid)
	if err != nil {
		return r, err
	}
	uevent, err := os.OpenFile("/sys/class/mem/null/uevent", os.O_WRONLY, 0)
	if err != nil {
		return r, err
	}
	var zrams []int
	defer func() {
		for _, n := range zrams {
			_ = zramRemove(n)
		}
	}()
	start := time.Now()
	for i := range c.storm {
		if _, err := uevent.Write([]byte("change")); err != nil {
			uevent.Close()
			return r, err
		}
		r.written++
		switch i {
		case c.storm / 4, c.storm / 2, 3 * c.storm / 4:
			n, err := zramAdd()
			if err != nil {
				uevent.Close()
				return r, err
			}
			zrams = append(zrams, n)
			r.added++
		case 5 * c.storm / 8:
			if err := zramRemove(zrams[0]); err != nil {
				uevent.Close()
				return r, err
			}
			r.removed++
		}
	}
	uevent.Close()
	// Absorbed: the daemon has counted as many events as the kernel sent
	// (or stopped counting: a lost burst is a rescan, not a count).
	var last uint64
	var v debugVars
	for still := 0; still < 10; {
		time.Sleep(50 * time.Millisecond)
		if v, err = d.vars(false); err != nil {
			return r, err
		}
		if v.Stats.Events == last {
			still++
		} else {
			still, last = 0, v.Stats.Events
		}
	}
	r.wall = time.Since(start)
	cpu1, err := cpuTime(d.cmd.Process.Pid)
	if err != nil {
		return r, err
	}
	r.cpu = cpu1 - cpu0
	r.daemonEvents = v.Stats.Events - v0.Stats.Events
	r.rescans = v.Stats.Rescans - v0.Stats.Rescans
	r.lost = v.Stats.Lost - v0.Stats.Lost
	r.rescanTime = time.Duration(v.Stats.RescanNanos - v0.Stats.RescanNanos)
	for drained := false; !drained; {
		select {
		case <-l.events:
			r.heard++
		default:
			drained = true
		}
	}

	// Exact: healthy resources are exactly the zram nodes present now.
	present, _ := filepath.Glob("/dev/zram*")
	for _, p := range present {
		r.present = append(r.present, "smarter-devices/"+filepath.Base(p))
	}
	slices.Sort(r.present)
	wctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	_ = k.Wait(wctx, func() bool {
		return slices.Equal(healthyResources(k), r.present)
	})
	r.advertised = healthyResources(k)
	r.exact = slices.Equal(r.advertised, r.present)
	return r, nil
}

func healthyResources(k *plugintest.FakeKubelet) []string {
	var out []string
	for _, res := range k.Resources() {
		if allHealth(pluginapi.Healthy)(k.Devices(res)) {
			out = append(out, res)
		}
	}
	slices.Sort(out)
	return out
}

// kubeletLatency runs the e2e module's TestKubeletHotplugLatency: the same
// measurement, to the real kubelet device manager's GetCapacity.
func kubeletLatency(c *config) ([]series, error) {
	return e2eSeries(c, "TestKubeletHotplugLatency")
}

// kubeletAllocate runs the e2e module's TestKubeletAllocateLatency: the real
// kubelet device manager's Allocate of a pod over the old daemon's default
// rules, c.cycles pods.
func kubeletAllocate(c *config) ([]series, error) {
	return e2eSeries(c, "TestKubeletAllocateLatency")
}

// e2eSeries runs one benchmark test of the e2e module and reads the
// LATENCY lines it prints.
func e2eSeries(c *config, test string) ([]series, error) {
	cmd := exec.Command("go", "test", "-count=1", "-run", "^"+test+"$", "-v", ".")
	cmd.Dir = "e2e"
	cmd.Env = append(os.Environ(), "SDM_BENCH_CYCLES="+strconv.Itoa(c.cycles))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("e2e %s: %w\n%s", test, err, out.String())
	}
	var ss []series
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "LATENCY ")
		if !ok {
			continue
		}
		var name string
		var n int
		var p50, p90, p99, mx float64
		if _, err := fmt.Sscanf(line, "series=%q n=%d p50=%f p90=%f p99=%f max=%f", &name, &n, &p50, &p90, &p99, &mx); err != nil {
			return nil, fmt.Errorf("e2e %s line %q: %w", test, line, err)
		}
		msd := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
		ss = append(ss, series{name: name, n: n, fixed: []time.Duration{msd(p50), msd(p90), msd(p99), msd(mx)}})
	}
	if len(ss) == 0 {
		return nil, fmt.Errorf("e2e %s printed no figures (skipped?):\n%s", test, out.String())
	}
	return ss, sc.Err()
}

// micro runs the Go micro-benchmarks and returns their result lines.
func micro() ([]string, error) {
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-count", "1",
		"./conf", "./hotplug", "./daemon")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test -bench: %w\n%s", err, out.String())
	}
	var lines []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Benchmark") {
			lines = append(lines, sc.Text())
		}
	}
	return lines, sc.Err()
}
