package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// checkpointWrites counts the real device manager's checkpoint writes in
// dir as they happen: the checkpoint manager writes a temporary file and
// renames it over kubelet_internal_checkpoint (pkg/kubelet/util/store
// writeFile), which fsnotify reports as a Create of that name. The watch
// stops with the test.
func checkpointWrites(t *testing.T, dir string) *atomic.Int64 {
	t.Helper()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatalf("fsnotify: %v", err)
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		t.Fatalf("watching %s: %v", dir, err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.Events {
			if ev.Has(fsnotify.Create) && filepath.Base(ev.Name) == checkpointName {
				n.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		w.Close()
		<-done
	})
	return &n
}

// A real zram device removed and added back 40 times (real uevents),
// through the real kubelet device manager: with flap damping the manager
// gets a bounded number of updates (its checkpoint, rewritten after each,
// counts them), the device is held unhealthy (the daemon's /readyz and
// metrics say so) while a second device added mid-flap is allocatable at
// once, and quiet again the device is healthy. Damped with a 1 s half-life
// and a 5 s hold at most, so the test waits seconds, not minutes.
func TestFlapRealZram(t *testing.T) {
	requireSuite(t)
	requireZram(t)
	n := newNode(t, "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 1\n- devicematch: ^null$\n  nummaxdevices: 1\n")
	n.daemonArgs = append(n.daemonArgs, "--flap-half-life", "1s", "--flap-max-hold", "5s")
	n.startKubelet()
	n.startDaemon()
	n.waitCapacity("null registered", map[string]counts{resNull: {1, 1}})
	z := zramAdd(t)
	res := fmt.Sprintf("smarter-devices/zram%d", z)
	n.waitCapacity("the device plugged", map[string]counts{res: {1, 1}})

	writes := checkpointWrites(t, n.dir)
	const flaps = 40
	var second string
	began := time.Now()
	for i := range flaps {
		if err := zramRemove(z); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the daemon sees it gone
		if z2 := zramAdd(t); z2 != z {
			t.Fatalf("zram%d came back as zram%d: the test holds zram's lock, so the number should be free", z, z2)
		}
		time.Sleep(20 * time.Millisecond)
		if i == flaps/2 {
			z3 := zramAdd(t)
			second = fmt.Sprintf("smarter-devices/zram%d", z3)
			n.waitCapacity("a second device, plugged mid-flap, allocatable while the first is held", map[string]counts{second: {1, 1}, res: {1, 0}})
		}
	}
	flapFor := time.Since(began)
	during := writes.Load()
	// Without damping every change is an update: 80 and more. With the
	// default penalty of 6: 6 changes passed, the 7th shown held, and the
	// second device's arrival (its registration and its update).
	if during > 10 {
		t.Errorf("%d changes in %v: %d checkpoint writes by the kubelet's device manager, want at most 10", 2*flaps, flapFor.Round(time.Millisecond), during)
	}
	m := n.metrics()
	if held, eps := n.sample(m, perResource("devices_flapping", res)), n.sample(m, perResource("flaps_total", res)); held != 1 || eps < 1 {
		t.Errorf("metrics while it flaps: devices_flapping %v, flaps_total %v; want 1 and at least 1", held, eps)
	}
	resp, err := http.Get("http://" + n.metricsAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), res+": 1 devices held for flapping") {
		t.Errorf("/readyz while it flaps: %d %q; want it to name %s", resp.StatusCode, body, res)
	}
	n.waitCapacity("healthy once quiet", map[string]counts{res: {1, 1}, second: {1, 1}})
	t.Logf("FLAP real zram: %d changes in %v, %d checkpoint writes during the flap, %d until released", 2*flaps, flapFor.Round(time.Millisecond), during, writes.Load())
}

// TestFlapBench measures, for the benchmark report (make bench, part
// "flap"), what a flapping device costs: a real zram device removed and
// added back at 10, 100 and 1,000 changes a second for
// SDM_BENCH_FLAP_SECONDS (60 in make bench), alone and beside 99 quiet
// devices, with flap damping off (before) and at its defaults (after), in
// device-plugin mode against the real kubelet device manager and in DRA
// mode against the real API server. Per run it prints one FLAP line: the
// changes made; the writes the flap cost (the device manager's checkpoint
// writes, one per update it gets, counted by inotify; the ResourceSlice
// writes the API server made, counted by a watch); the daemon's CPU time;
// and the latency of a clean plug of another device during the flap (from
// the hot_add to the manager's capacity showing it allocatable, polled
// every millisecond; to the slice with it untainted, as the watch sees
// it), five plugs per run, each a new device.
func TestFlapBench(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv("SDM_BENCH_FLAP_SECONDS"))
	if secs <= 0 {
		t.Skip("skipping: a benchmark; set SDM_BENCH_FLAP_SECONDS (make bench does)")
	}
	type run struct {
		mode        string
		damped      bool
		rate, quiet int
	}
	var runs []run
	for _, mode := range []string{"device-plugin", "dra"} {
		for _, damped := range []bool{false, true} {
			for _, rate := range []int{10, 100, 1000} {
				runs = append(runs, run{mode, damped, rate, 0})
			}
			runs = append(runs, run{mode, damped, 100, 99})
		}
	}
	for _, r := range runs {
		t.Run(fmt.Sprintf("%s/damped=%v/rate=%d/quiet=%d", r.mode, r.damped, r.rate, r.quiet), func(t *testing.T) {
			flapBenchRun(t, r.mode, r.damped, r.rate, r.quiet, time.Duration(secs)*time.Second)
		})
	}
}

// flapTarget is one mode's side of a flap run.
type flapTarget struct {
	pid    int
	writes func() int64 // writes the output has made so far
	// plugged blocks until zram y is served (allocatable; published
	// untainted), and says when it saw it.
	plugged func(y int, deadline time.Time) (time.Time, bool)
}

const flapRules = "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 1\n- devicematch: ^null$\n  nummaxdevices: 1\n"

func flapBenchRun(t *testing.T, mode string, damped bool, rate, quiet int, dur time.Duration) {
	// Each run takes zram's lock for itself (a parent holding it would
	// block its subtests).
	requireSuite(t)
	requireZram(t)
	args := []string{"--log-level", "warn"}
	if !damped {
		args = append(args, "--flap-half-life", "0")
	}
	var zs []int // the flapping device, then the quiet ones
	var tg flapTarget
	switch mode {
	case "device-plugin":
		tg = flapDevicePlugin(t, args, quiet, &zs)
	case "dra":
		tg = flapDRA(t, args, quiet, &zs)
	}
	z := zs[0]
	// The setup's own writes first: count from a quiet second.
	for last := int64(-1); ; {
		time.Sleep(time.Second)
		if w := tg.writes(); w == last {
			break
		} else {
			last = w
		}
	}
	base := tg.writes()
	cpu0 := procCPU(t, tg.pid)
	var plugs []time.Duration
	plugged := make(chan time.Duration, 16)
	var pending sync.WaitGroup
	plugEvery := dur / 5
	nextPlug := plugEvery / 2
	period := time.Second / time.Duration(rate)
	changes := 0
	began := time.Now()
	next := began
	present := true
	for time.Since(began) < dur {
		if present {
			if err := zramRemove(z); err != nil {
				t.Fatal(err)
			}
		} else if z2 := zramAdd(t); z2 != z {
			t.Fatalf("zram%d came back as zram%d", z, z2)
		}
		present = !present
		changes++
		// A clean plug of another device, while z is present (else the
		// new one would take z's number), timed while the flap goes on.
		// It stays (the cleanup removes it): one number plugged again and
		// again would itself be a flapping device.
		if present && time.Since(began) >= nextPlug {
			nextPlug += plugEvery
			pending.Add(1)
			start := time.Now()
			y := zramAdd(t)
			go func() {
				defer pending.Done()
				at, ok := tg.plugged(y, start.Add(waitLimit))
				if !ok {
					t.Errorf("zram%d not served within %v", y, waitLimit)
					return
				}
				plugged <- at.Sub(start)
			}()
		}
		next = next.Add(period)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
	}
	elapsed := time.Since(began)
	cpu := procCPU(t, tg.pid) - cpu0
	w := tg.writes() - base
	pending.Wait()
	close(plugged)
	for d := range plugged {
		plugs = append(plugs, d)
	}
	slices.Sort(plugs)
	pct := func(p float64) time.Duration {
		if len(plugs) == 0 {
			return 0
		}
		return plugs[min(len(plugs)-1, int(p*float64(len(plugs))))]
	}
	fmt.Printf("FLAP mode=%s damped=%v rate=%d quiet=%d seconds=%.1f changes=%d achieved=%.0f writes=%d writes_per_s=%.2f daemon_cpu_s=%.2f plugs=%d plug_p50_ms=%.2f plug_max_ms=%.2f\n",
		mode, damped, rate, quiet, elapsed.Seconds(), changes, float64(changes)/elapsed.Seconds(), w, float64(w)/elapsed.Seconds(),
		cpu.Seconds(), len(plugs), float64(pct(0.5).Microseconds())/1000, float64(pct(1).Microseconds())/1000)
}

// flapDevicePlugin starts the kubelet device manager and the daemon with
// the flapping device and quiet ones: writes are the manager's
// checkpoint writes.
func flapDevicePlugin(t *testing.T, args []string, quiet int, zs *[]int) flapTarget {
	n := newNode(t, flapRules)
	n.daemonArgs = append(n.daemonArgs, args...)
	n.startKubelet()
	n.startDaemon()
	n.waitCapacity("null registered", map[string]counts{resNull: {1, 1}})
	want := map[string]counts{}
	for range 1 + quiet {
		z := zramAdd(t)
		*zs = append(*zs, z)
		want[fmt.Sprintf("smarter-devices/zram%d", z)] = counts{1, 1}
	}
	n.waitCapacity("every device registered", want)
	writes := checkpointWrites(t, n.dir)
	return flapTarget{pid: n.daemon.cmd.Process.Pid, writes: writes.Load,
		plugged: func(y int, deadline time.Time) (time.Time, bool) {
			res := fmt.Sprintf("smarter-devices/zram%d", y)
			for time.Now().Before(deadline) {
				if c := n.capacity()[res]; c.allocatable == 1 {
					return time.Now(), true
				}
				time.Sleep(time.Millisecond)
			}
			return time.Time{}, false
		}}
}

// flapDRA starts the API server, the kubelet's DRA manager and the daemon
// in DRA mode with the flapping device and quiet ones: writes are the
// ResourceSlice events a watch sees (one per write the API server made),
// and a plug is seen on the watch.
func flapDRA(t *testing.T, args []string, quiet int, zs *[]int) flapTarget {
	d := newDRANode(t, flapRules, "1h")
	d.daemonArgs = append(d.daemonArgs, args...)
	d.startKubeletDRA()
	d.startDaemon()
	d.waitRegistered("the kubelet registers the driver", nil)
	for range 1 + quiet {
		*zs = append(*zs, zramAdd(t))
	}
	got := d.waitSlices("every device published", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		for _, z := range *zs {
			if dev, ok := devs[zramDevice(z)]; !ok || len(dev.Taints) > 0 {
				return false
			}
		}
		return true
	})
	rv := "0"
	if len(got) > 0 {
		rv = got[0].ResourceVersion
	}
	ctx, cancel := context.WithCancel(d.ctx())
	w, err := d.client.ResourceV1().ResourceSlices().Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	if err != nil {
		cancel()
		t.Fatalf("watching ResourceSlices: %v", err)
	}
	var (
		events atomic.Int64
		mu     sync.Mutex
		seen   = map[string]time.Time{} // device → when the watch first saw it untainted
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			events.Add(1)
			s, ok := ev.Object.(*resourceapi.ResourceSlice)
			if !ok {
				continue
			}
			now := time.Now()
			mu.Lock()
			for _, dev := range s.Spec.Devices {
				if _, ok := seen[dev.Name]; !ok && len(dev.Taints) == 0 {
					seen[dev.Name] = now
				}
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		w.Stop()
		<-done
	})
	return flapTarget{pid: d.daemon.cmd.Process.Pid, writes: events.Load,
		plugged: func(y int, deadline time.Time) (time.Time, bool) {
			for time.Now().Before(deadline) {
				mu.Lock()
				at, ok := seen[zramDevice(y)]
				mu.Unlock()
				if ok {
					return at, true
				}
				time.Sleep(time.Millisecond)
			}
			return time.Time{}, false
		}}
}
