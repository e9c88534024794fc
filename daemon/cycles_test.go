package daemon

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// A real zram hot_add/hot_remove pair costs the kernel about 35ms here, so
// 1,000 real cycles would take most of a minute on their own: the default
// suite runs 1,000 cycles through the fake event source and device root,
// which go through the whole daemon and plugin stack (a plugin server
// started, registered, streamed, stopped and its socket removed every
// cycle), and 100 real cycles through the kernel. -real-cycles=1000 runs
// the full count against the kernel.
var realCycles = flag.Int("real-cycles", 100, "plug/unplug cycles of TestPlugCyclesReal (real zram devices)")

const (
	fakeCycles = 1000
	warmup     = 20 // cycles before the start level is taken: lazy initialisation
	// Slack over the start level: a few goroutines and fds of a gRPC
	// connection that is winding down, and heap noise. A leak of one
	// goroutine, one fd or 1 KiB per cycle is far above these.
	goroutineSlack = 8
	fdSlack        = 4
	heapSlack      = 512 << 10
)

// lineCounter counts the log lines of the resources started and removed,
// keeping nothing else (a kept log would itself grow the heap).
type lineCounter struct{ started, removed atomic.Int64 }

func (c *lineCounter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"message":"device added; starting resource"`)) {
		c.started.Add(1)
	}
	if bytes.Contains(p, []byte(`"message":"device stayed away; removing resource"`)) {
		c.removed.Add(1)
	}
	return len(p), nil
}

type level struct {
	goroutines, fds int
	heap            uint64
}

func measure(t *testing.T) level {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return level{goroutines: runtime.NumGoroutine(), fds: len(fds), heap: ms.HeapAlloc}
}

// cycler plugs a device in (returning its name) and pulls it out.
type cycler struct {
	plug   func() string
	unplug func(name string)
}

// runCycles plugs and unplugs a device n times, each time waiting until the
// fake kubelet has a new registration with the device healthy, then until
// the resource's server stopped (remove-after is a millisecond): each cycle
// creates and destroys a plugin server. Then goroutines, open fds and the
// heap must be back at the level they had after the warm-up.
func runCycles(t *testing.T, k *plugintest.FakeKubelet, dir string, c cycler, n int, lines *lineCounter) {
	t.Helper()
	names := map[string]bool{} // devices cycled: their sockets must go
	regs := map[string]int{}   // registrations seen by the end of a cycle
	cycle := func() {
		name := c.plug()
		names[name] = true
		res := "smarter-devices/" + name
		before := regs[name]
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k.Wait(ctx, func() bool {
			devs := k.Devices(res)
			return k.Registrations(res) > before && len(devs) > 0 && health(len(devs), pluginapi.Healthy)(devs) && k.Streaming(res)
		}); err != nil {
			t.Fatalf("%s: not registered healthy after plug-in: %v (devices %v)", res, err, k.Devices(res))
		}
		c.unplug(name)
		if err := k.Wait(ctx, func() bool { return !k.Streaming(res) }); err != nil {
			t.Fatalf("%s: server not stopped after unplug: %v", res, err)
		}
		regs[name] = k.Registrations(res)
	}
	for range warmup {
		cycle()
	}
	waitNoPluginSockets(t, dir, names)
	start := measure(t)
	for range n {
		cycle()
	}
	waitNoPluginSockets(t, dir, names)
	// Goroutines of the last stopped connections end asynchronously.
	end := measure(t)
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for end.goroutines > start.goroutines+goroutineSlack || end.fds > start.fds+fdSlack || end.heap > start.heap+heapSlack {
		select {
		case <-deadline:
			t.Fatalf("after %d cycles: goroutines %d → %d (slack %d), fds %d → %d (slack %d), heap %d → %d bytes (slack %d)",
				n, start.goroutines, end.goroutines, goroutineSlack, start.fds, end.fds, fdSlack, start.heap, end.heap, heapSlack)
		case <-tick.C:
		}
		end = measure(t)
	}
	t.Logf("%d cycles (%d resources started, %d removed in all): goroutines %d → %d, fds %d → %d, heap %d → %d KiB",
		n, lines.started.Load(), lines.removed.Load(), start.goroutines, end.goroutines, start.fds, end.fds, start.heap>>10, end.heap>>10)
	if got := lines.removed.Load(); got < int64(n) {
		t.Errorf("%d resources removed over %d cycles: a cycle did not destroy its resource", got, n)
	}
}

// waitNoPluginSockets waits until no device in names has a plugin socket
// (other zram devices on the machine keep theirs).
func waitNoPluginSockets(t *testing.T, dir string, names map[string]bool) {
	t.Helper()
	left := func() []string {
		var socks []string
		for name := range names {
			p := filepath.Join(dir, "smarter-"+name+".sock")
			if _, err := os.Lstat(p); err == nil {
				socks = append(socks, p)
			}
		}
		return socks
	}
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for socks := left(); len(socks) > 0; socks = left() {
		select {
		case <-deadline:
			t.Fatalf("plugin sockets left: %v", socks)
		case <-tick.C:
		}
	}
}

// TestPlugCyclesFake runs 1,000 cycles through the fake event source and
// device root.
func TestPlugCyclesFake(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping 1,000 plug cycles in -short mode")
	}
	lines := &lineCounter{}
	h := newHarness(t, "- devicematch: ^ttyUSB[0-9]+$\n  nummaxdevices: 2\n", func(o *Options) {
		o.RemoveAfter = time.Millisecond
		o.Logger = zerolog.New(lines).Level(zerolog.InfoLevel)
	})
	runCycles(t, h.kubelet, h.dir, cycler{
		plug: func() string {
			h.dev.Set("ttyUSB0", charDev)
			h.events.fire("add", "ttyUSB0")
			return "ttyUSB0"
		},
		unplug: func(name string) {
			h.dev.Remove(name)
			h.events.fire("remove", name)
		},
	}, fakeCycles, lines)
}

// TestPlugCyclesReal runs -real-cycles cycles of real zram hot_add and
// hot_remove through the kernel's uevents and the real /dev.
func TestPlugCyclesReal(t *testing.T) {
	lines := &lineCounter{}
	d := startKernelDaemon(t, kernelOpts{
		rules:  zramRules,
		logTo:  lines,
		mutate: func(o *Options) { o.RemoveAfter = time.Millisecond },
	})
	// Not testkernel.ZramAdd: a cleanup per cycle would pile up. One
	// cleanup removes the device a failed cycle left behind.
	var current string
	t.Cleanup(func() {
		if current != "" {
			zramRemove(t, current)
		}
	})
	runCycles(t, d.kubelet, d.dir, cycler{
		plug: func() string {
			b, err := os.ReadFile("/sys/class/zram-control/hot_add")
			if err != nil {
				t.Fatalf("zram hot_add: %v", err)
			}
			current = "zram" + string(bytes.TrimSpace(b))
			return current
		},
		unplug: func(name string) {
			zramRemove(t, name)
			current = ""
		},
	}, *realCycles, lines)
}
