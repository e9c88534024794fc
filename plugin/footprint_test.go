package plugin_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// BenchmarkFootprint serves n resources on one registrar and reports what
// each costs this process: goroutines, Go heap and stacks in use, and
// private resident memory (RssAnon). With kubelet=true the fake kubelet
// (in this process too) holds a connection and a ListAndWatch stream per
// resource, so its client side is counted as well: compare runs of the
// same kind. Run it without -race, once:
//
//	go test -run '^$' -bench Footprint -benchtime 1x ./plugin/
func BenchmarkFootprint(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, kubelet := range []bool{false, true} {
			b.Run(fmt.Sprintf("resources=%d/kubelet=%v", n, kubelet), func(b *testing.B) {
				footprint(b, n, kubelet)
			})
		}
	}
}

// level is what the process holds at one moment.
type level struct {
	goroutines int
	heap       uint64 // Go heap in use
	stack      uint64 // goroutine stacks in use
	anon       uint64 // RssAnon
}

func measure(b *testing.B) level {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return level{goroutines: runtime.NumGoroutine(), heap: ms.HeapInuse, stack: ms.StackInuse, anon: rssAnon(b)}
}

// rssAnon reads this process's RssAnon from /proc/self/status, in bytes.
func rssAnon(b *testing.B) uint64 {
	b.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			kib, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kib << 10
		}
	}
	b.Fatal("no RssAnon in /proc/self/status")
	return 0
}

func footprint(b *testing.B, n int, kubelet bool) {
	dir := testutil.ShortTempDir(b)
	var k *plugintest.FakeKubelet
	if kubelet {
		var err error
		if k, err = plugintest.StartFakeKubelet(dir); err != nil {
			b.Fatal(err)
		}
		defer k.Stop()
	}
	reg := plugin.NewRegistrar()
	defer reg.Close()
	base := measure(b)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	servers := make([]*plugin.Server, n)
	for i := range servers {
		servers[i] = plugin.NewServer(plugin.Options{
			ResourceName:  "smarter-devices/r" + strconv.Itoa(i),
			Socket:        "r" + strconv.Itoa(i) + ".sock",
			Dir:           dir,
			Logger:        zerolog.Nop(),
			Registrar:     reg,
			CheckInterval: -1,
		}, plugin.Snapshot{Devices: []plugin.Device{{ID: "0", Healthy: true}}})
		wg.Go(func() { _ = servers[i].Run(ctx) })
	}
	ready := func() bool {
		if kubelet {
			return k.Listed() == n
		}
		for _, s := range servers {
			if st, _ := s.Status(); !st.Serving {
				return false
			}
		}
		return true
	}
	testutil.Eventually(b, 2*waitTimeout, "every resource served", ready)
	for b.Loop() {
	}
	// After the loop: b.Loop resets the timer, which drops reported metrics.
	got := measure(b)
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	b.ReportMetric(float64(got.goroutines-base.goroutines)/float64(n), "goroutines/resource")
	b.ReportMetric(per(got.heap, base.heap), "heap-B/resource")
	b.ReportMetric(per(got.stack, base.stack), "stack-B/resource")
	b.ReportMetric(per(got.anon, base.anon), "RssAnon-B/resource")
}
