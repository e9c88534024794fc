package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestKubeletBench measures, for the benchmark report (make bench), the
// daemon against the real kubelet device manager at each size of
// SDM_BENCH_SIZES (resources; default 10,100,1000): start-up until the
// kubelet lists every resource allocatable (median of 3 starts), memory
// (/proc/PID/status) and Go heap after the start, CPU time and wake-ups in
// an idle window (SDM_BENCH_IDLE, default 20s), then SDM_BENCH_CYCLES zram
// hot_add/hot_remove cycles with those resources running, each timed from
// the kernel's first uevent to the moment the kubelet's ListAndWatch client
// has the message (its "State pushed for device plugin" log line, written
// right after the stream's Recv returns, before the manager's callback),
// and, apart, the manager's own processing of it (until its "Processed
// device updates" line: the checkpoint write). It asserts nothing about
// time or size; it prints one FOOTPRINT line per size and LATENCY lines.
// With SDM_BENCH_PROFILES set to a directory it writes there the daemon's
// heap and goroutine profiles at each size.
func TestKubeletBench(t *testing.T) {
	cycles, _ := strconv.Atoi(os.Getenv("SDM_BENCH_CYCLES"))
	if cycles <= 0 {
		t.Skip("skipping: a benchmark; set SDM_BENCH_CYCLES (make bench does)")
	}
	requireSuite(t)
	requireZram(t)
	sizes := []int{10, 100, 1000}
	if s := os.Getenv("SDM_BENCH_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n <= 0 {
				t.Fatalf("SDM_BENCH_SIZES: %q", f)
			}
			sizes = append(sizes, n)
		}
	}
	idleFor := 20 * time.Second
	if s := os.Getenv("SDM_BENCH_IDLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SDM_BENCH_IDLE: %v", err)
		}
		idleFor = d
	}
	// The plugin directory's file system: this machine's disk, or a tmpfs
	// (creating a file, a socket's bind among them, costs some file
	// systems far more kernel time than others).
	onTmpfs := false
	switch fsType := os.Getenv("SDM_BENCH_PLUGIN_FS"); fsType {
	case "", "disk":
	case "tmpfs":
		onTmpfs = true
	default:
		t.Fatalf("SDM_BENCH_PLUGIN_FS: %q is not disk or tmpfs", fsType)
	}
	for _, size := range sizes {
		benchSize(t, size, cycles, idleFor, onTmpfs, os.Getenv("SDM_BENCH_PROFILES"))
	}
}

// benchSize is one size of TestKubeletBench. Its device root is a tmpfs
// holding size nodes (bd0, bd1 …, one resource each) and the host's /dev
// bind-mounted at host/, where the zram devices come and go (resources
// host_zram0 …).
func benchSize(t *testing.T, size, cycles int, idleFor time.Duration, onTmpfs bool, profiles string) {
	devRoot := benchDevRoot(t, size)
	n := newNode(t, "- devicematch: ^bd[0-9]+$\n  nummaxdevices: 1\n- devicematch: ^host/zram[0-9]+$\n  nummaxdevices: 1\n")
	fsName := "disk"
	if onTmpfs {
		fsName = "tmpfs"
		if err := syscall.Mount("tmpfs", n.dir, "tmpfs", 0, "size=16m,mode=755"); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		// Before the directory's own removal (cleanups run last first).
		t.Cleanup(func() { _ = syscall.Unmount(n.dir, syscall.MNT_DETACH) })
	}
	debugAddr := freePort(t)
	// Damping off: the series cycle one device hundreds of times a minute,
	// which flap damping holds by design; a clean change takes the same path
	// either way (TestFlapBench times clean plugs with damping on).
	n.daemonArgs = []string{"--log-level", "warn", "--remove-after", "0", "--dev-root", devRoot, "--debug-addr", debugAddr, "--flap-half-life", "0"}
	pushed := n.tapKubelet()
	n.startKubelet()

	allUp := func(got map[string]counts) bool {
		for i := range size {
			if got["smarter-devices/bd"+strconv.Itoa(i)].allocatable != 1 {
				return false
			}
		}
		return true
	}
	allDown := func(got map[string]counts) bool {
		for i := range size {
			if got["smarter-devices/bd"+strconv.Itoa(i)].allocatable != 0 {
				return false
			}
		}
		return true
	}
	// GetCapacity is polled as often as it can be without taking much of
	// the CPU from the daemon and the kubelet it times: each call walks
	// every resource.
	pollStart := time.Duration(max(1, size/100)) * time.Millisecond
	var starts, startCPU, kubeletCPU []time.Duration
	for run := range 3 {
		if run > 0 {
			n.stopDaemon()
			n.waitFor("every resource gone after the daemon stopped", allDown)
		}
		began, kubelet0 := time.Now(), selfCPU()
		n.startDaemon()
		var startProfile sync.WaitGroup
		if profiles != "" && run == 2 {
			// The start-up's CPU profile and execution trace, from as soon
			// as the debug endpoint answers.
			startProfile.Go(func() {
				saveStartProfile(debugAddr, "profile?seconds=2", filepath.Join(profiles, fmt.Sprintf("startup-cpu-%d.pb.gz", size)))
			})
			startProfile.Go(func() {
				saveStartProfile(debugAddr, "trace?seconds=1", filepath.Join(profiles, fmt.Sprintf("startup-trace-%d.out", size)))
			})
		}
		for !allUp(n.capacity()) {
			if n.daemon.exited() {
				t.Fatalf("the daemon exited: %v", n.daemon.err)
			}
			if time.Since(began) > 2*waitLimit {
				t.Fatalf("%d resources not all allocatable within %v", size, 2*waitLimit)
			}
			time.Sleep(pollStart)
		}
		starts = append(starts, time.Since(began))
		startCPU = append(startCPU, procCPU(t, n.daemon.cmd.Process.Pid))
		kubeletCPU = append(kubeletCPU, selfCPU()-kubelet0)
		startProfile.Wait()
	}
	pid := n.daemon.cmd.Process.Pid

	// Settle, then idle with nothing happening.
	time.Sleep(2 * time.Second)
	cpu0, wake0 := procCPU(t, pid), procWakeups(t, pid)
	if profiles != "" {
		// The idle window is the CPU profile's.
		saveProfile(t, debugAddr, fmt.Sprintf("profile?seconds=%d", int(idleFor.Seconds())), filepath.Join(profiles, fmt.Sprintf("idle-cpu-%d.pb.gz", size)))
	} else {
		time.Sleep(idleFor)
	}
	cpu1, wake1 := procCPU(t, pid), procWakeups(t, pid)
	vars := debugVars(t, debugAddr)
	mem := procMem(t, pid)
	if profiles != "" {
		for _, p := range []string{"heap", "goroutine"} {
			saveProfile(t, debugAddr, p, filepath.Join(profiles, fmt.Sprintf("%s-%d.pb.gz", p, size)))
		}
	}
	fmt.Printf("FOOTPRINT plugin_fs=%s resources=%d startup_ms=%s startup_cpu_ms=%s startup_kubelet_cpu_ms=%s vmrss=%d vmhwm=%d rssanon=%d rssfile=%d heap_inuse=%d stack_inuse=%d goroutines=%d idle_s=%.0f idle_cpu_ms=%.0f wakeups=%d\n",
		fsName, size, msList(starts), msList(startCPU), msList(kubeletCPU), mem["VmRSS:"], mem["VmHWM:"], mem["RssAnon:"], mem["RssFile:"],
		vars.Memstats.HeapInuse, vars.Memstats.StackInuse, vars.Goroutines, idleFor.Seconds(), ms(cpu1-cpu0), wake1-wake0)

	// Hotplug with size resources running. The kubelet's log says when a
	// message arrived: polling GetCapacity meanwhile would take a core
	// from the daemon and the kubelet at 1,000 resources.
	l := listenUevents(t)
	var add, remove, addKubelet, removeKubelet, addKernel, removeKernel []time.Duration
	var cyclesProfile sync.WaitGroup
	if profiles != "" {
		// A CPU profile and an execution trace of the first cycles.
		cyclesProfile.Go(func() {
			saveStartProfile(debugAddr, "profile?seconds=2", filepath.Join(profiles, fmt.Sprintf("hotplug-cpu-%d.pb.gz", size)))
		})
		cyclesProfile.Go(func() {
			saveStartProfile(debugAddr, "trace?seconds=2", filepath.Join(profiles, fmt.Sprintf("hotplug-trace-%d.out", size)))
		})
	}
	before := debugVars(t, debugAddr)
	for i := range cycles {
		next := nextZram(t)
		res := "smarter-devices/host_zram" + strconv.Itoa(next)
		l.drain()
		pushed.reset(res)
		z := zramAdd(t)
		if z != next {
			t.Fatalf("zram hot_add gave zram%d, expected zram%d", z, next)
		}
		t0, own := l.firstAndOwn(t, "add", "zram"+strconv.Itoa(z))
		// The first add registers the resource: its first message is no
		// health flip.
		rx, done := pushed.first(t, res)
		n.waitCapacity(res+" allocatable", map[string]counts{res: {1, 1}})
		if i > 0 {
			add = append(add, rx.Sub(t0))
			addKubelet = append(addKubelet, done.Sub(rx))
			addKernel = append(addKernel, own.Sub(t0))
		}
		l.drain()
		pushed.reset(res)
		if err := zramRemove(z); err != nil {
			t.Fatal(err)
		}
		t2, own := l.firstAndOwn(t, "remove", "zram"+strconv.Itoa(z))
		rx, done = pushed.first(t, res)
		n.waitCapacity(res+" not allocatable", map[string]counts{res: {1, 0}})
		remove = append(remove, rx.Sub(t2))
		removeKubelet = append(removeKubelet, done.Sub(rx))
		removeKernel = append(removeKernel, own.Sub(t2))
	}
	cyclesProfile.Wait()
	after := debugVars(t, debugAddr)
	if r := after.Stats.Rescans - before.Stats.Rescans; r > 0 {
		fmt.Printf("RECONCILE plugin_fs=%s resources=%d rescans=%d mean_us=%.0f\n", fsName, size, r,
			float64(after.Stats.RescanNanos-before.Stats.RescanNanos)/float64(r)/1e3)
	}
	printLatency(fmt.Sprintf("real kubelet, %d resources, plugin dir on %s: add → ListAndWatch message received", size, fsName), add)
	printLatency(fmt.Sprintf("real kubelet, %d resources, plugin dir on %s: remove → ListAndWatch message received (unhealthy)", size, fsName), remove)
	printLatency(fmt.Sprintf("real kubelet, %d resources, plugin dir on %s: the kubelet's own processing of the add message (checkpoint)", size, fsName), addKubelet)
	printLatency(fmt.Sprintf("real kubelet, %d resources, plugin dir on %s: the kubelet's own processing of the remove message (checkpoint)", size, fsName), removeKubelet)
	printLatency(fmt.Sprintf("real kubelet, %d resources, plugin dir on %s: the kernel's own part of the add (first uevent → the node's uevent)", size, fsName), addKernel)
	printLatency(fmt.Sprintf("real kubelet, %d resources, plugin dir on %s: the kernel's own part of the remove (first uevent → the node's uevent)", size, fsName), removeKernel)

	// Stop this size's daemon and kubelet before the next size starts.
	n.stopDaemon()
	n.daemon = nil
	n.stopKubelet()
}

// benchDevRoot mounts a tmpfs holding size character nodes bd0 … (1:3, as
// /dev/null: nothing opens them) and the host's /dev bind-mounted at host/;
// cleanup unmounts both.
func benchDevRoot(t *testing.T, size int) string {
	dir := mkdirTemp(t)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16m,mode=755"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	for i := range size {
		if err := syscall.Mknod(filepath.Join(dir, "bd"+strconv.Itoa(i)), syscall.S_IFCHR|0o600, 1<<8|3); err != nil {
			t.Fatalf("mknod: %v", err)
		}
	}
	host := filepath.Join(dir, "host")
	if err := os.Mkdir(host, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("/dev", host, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind /dev: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(host, syscall.MNT_DETACH) })
	return dir
}

// pushedLines timestamps the kubelet's "State pushed for device plugin"
// and "Processed device updates for resource" log lines of one resource.
type pushedLines struct {
	mu       sync.Mutex
	resource string
	rx, done []time.Time
	changed  chan struct{}
}

// tapKubelet makes the kubelet's log lines about the ListAndWatch messages
// it receives time-stamped as they are written.
func (n *node) tapKubelet() *pushedLines {
	p := &pushedLines{changed: make(chan struct{}, 1)}
	n.klog.setTap(func(line []byte) {
		at := time.Now()
		isRx := bytes.Contains(line, []byte(`"State pushed for device plugin"`))
		isDone := !isRx && bytes.Contains(line, []byte(`"Processed device updates for resource"`))
		if !isRx && !isDone {
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.resource == "" || !bytes.Contains(line, []byte(`"`+p.resource+`"`)) {
			return
		}
		if isRx {
			p.rx = append(p.rx, at)
		} else {
			p.done = append(p.done, at)
		}
		select {
		case p.changed <- struct{}{}:
		default:
		}
	})
	n.t.Cleanup(func() { n.klog.setTap(nil) })
	return p
}

func (p *pushedLines) reset(res string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resource, p.rx, p.done = res, nil, nil
}

// first waits for the first message received since reset and the end of
// its processing.
func (p *pushedLines) first(t *testing.T, res string) (rx, done time.Time) {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		p.mu.Lock()
		if len(p.rx) > 0 && len(p.done) > 0 {
			rx, done = p.rx[0], p.done[0]
			p.mu.Unlock()
			return rx, done
		}
		p.mu.Unlock()
		select {
		case <-p.changed:
		case <-deadline:
			t.Fatalf("the kubelet logged no ListAndWatch message for %s", res)
		}
	}
}

func printLatency(name string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	pct := func(p float64) float64 {
		i := min(max(int(p*float64(len(d))+0.5)-1, 0), len(d)-1)
		return float64(d[i]) / float64(time.Millisecond)
	}
	fmt.Printf("LATENCY series=%q n=%d p50=%.2f p90=%.2f p99=%.2f max=%.2f\n", name, len(d), pct(0.5), pct(0.9), pct(0.99), pct(1))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func msList(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%.2f", ms(d)))
	}
	return strings.Join(s, ",")
}

// freePort returns a loopback address with a port free a moment ago.
func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// procCPU is the user+system CPU time pid has used (100 Hz ticks).
func procCPU(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// procWakeups is how often pid's threads have been switched in, all told
// (voluntary and not): each is a wake-up of the process.
func procWakeups(t *testing.T, pid int) int64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, task := range tasks {
		m := readStatus(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		sum += m["voluntary_ctxt_switches:"] + m["nonvoluntary_ctxt_switches:"]
	}
	return sum
}

// procMem returns pid's /proc status figures in bytes (VmRSS: …).
func procMem(t *testing.T, pid int) map[string]int64 {
	m := readStatus(fmt.Sprintf("/proc/%d/status", pid))
	if len(m) == 0 {
		t.Fatalf("no /proc/%d/status", pid)
	}
	for k, v := range m {
		if strings.HasPrefix(k, "Vm") || strings.HasPrefix(k, "Rss") {
			m[k] = v << 10
		}
	}
	return m
}

// readStatus reads the numeric fields of a /proc status file.
func readStatus(path string) map[string]int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	m := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
			m[f[0]] = v
		}
	}
	return m
}

type benchVars struct {
	Memstats   struct{ HeapInuse, StackInuse uint64 }
	Goroutines int
	Stats      struct {
		Rescans     uint64 `json:"rescans"`
		RescanNanos uint64 `json:"rescan_nanos"`
	} `json:"smarter_device_manager"`
}

// debugVars reads the daemon's /debug/vars after a GC.
func debugVars(t *testing.T, addr string) benchVars {
	var v benchVars
	resp, err := http.Get("http://" + addr + "/debug/vars?gc=1")
	if err != nil {
		t.Fatalf("debug vars: %v", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("debug vars: %v", err)
	}
	return v
}

func saveProfile(t *testing.T, addr, name, file string) {
	resp, err := http.Get("http://" + addr + "/debug/pprof/" + name)
	if err != nil {
		t.Fatalf("profile %s: %v", name, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// saveStartProfile writes a profile or trace of the daemon (what, e.g.
// "profile?seconds=2"), trying until its debug endpoint answers (it may
// just have been started); failures leave no file.
func saveStartProfile(addr, what, file string) {
	for range 200 {
		resp, err := http.Get("http://" + addr + "/debug/pprof/" + what)
		if err != nil {
			time.Sleep(time.Millisecond)
			continue
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(resp.Body); err == nil {
			_ = os.WriteFile(file, buf.Bytes(), 0o644)
		}
		return
	}
}

// selfCPU is the CPU time this process (the kubelet's device manager, and
// the test polling it) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
