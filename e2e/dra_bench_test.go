package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
)

// TestDRABench measures DRA mode for the benchmark report (make bench;
// cmd/sdm-bench/dra.go runs it): from the kernel's first uevent of a
// zram hot_add or hot_remove, stamped on receipt by a netlink listener of
// the test's own, to the API server's watch delivering the ResourceSlice
// with the device published (add) or tainted (remove); the daemon's
// NodePrepareResources and NodeUnprepareResources as the kubelet's DRA
// client sees them (the daemon reads the claim from the API server and
// writes the CDI spec); and the idle footprint of the daemon in each mode
// with the same rules, and the binaries' sizes. It asserts nothing about
// time; it runs only when SDM_BENCH_CYCLES is set and prints LATENCY
// lines and one DRAFOOTPRINT line per mode.
func TestDRABench(t *testing.T) {
	cycles, _ := strconv.Atoi(os.Getenv("SDM_BENCH_CYCLES"))
	if cycles <= 0 {
		t.Skip("skipping: a benchmark; set SDM_BENCH_CYCLES (make bench does)")
	}
	idle := 10 * time.Second
	if v, err := time.ParseDuration(os.Getenv("SDM_BENCH_IDLE")); err == nil {
		idle = v
	}
	requireZram(t)
	d := newDRANode(t, draRules, "0") // unplugged devices stay, tainted
	// Damping off: the series cycle one device hundreds of times a minute,
	// which flap damping holds by design; a clean change takes the same path
	// either way (TestFlapBench times clean plugs with damping on).
	d.daemonArgs = append(d.daemonArgs, "--log-level", "warn", "--flap-half-life", "0")
	d.startKubeletDRA()
	d.startDaemon()
	d.waitRegistered("the kubelet registers the driver", nil)
	d.waitSlices("the pool with null", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		_, ok := devs["null"]
		return ok
	})

	// Every change of the node's slices, stamped on receipt.
	sel := fields.Set{resourceapi.ResourceSliceSelectorNodeName: draNodeName, resourceapi.ResourceSliceSelectorDriver: draDriver}
	w, err := d.client.ResourceV1().ResourceSlices().Watch(d.ctx(), metav1.ListOptions{FieldSelector: sel.String()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// waitDevice returns when a watch event has device name in the state
	// cond wants.
	waitDevice := func(name string, cond func(resourceapi.Device, bool) bool) time.Time {
		t.Helper()
		deadline := time.After(waitLimit)
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatal("the ResourceSlice watch ended")
				}
				at := time.Now()
				s, isSlice := ev.Object.(*resourceapi.ResourceSlice)
				if !isSlice || ev.Type == watch.Deleted {
					continue
				}
				dev, found := devicesOf([]resourceapi.ResourceSlice{*s})[name]
				if cond(dev, found) {
					return at
				}
			case <-deadline:
				t.Fatalf("no ResourceSlice event with %s as wanted within %v; slices: %s", name, waitLimit, describeSlices(d.slices()))
			}
		}
	}
	drainWatch := func() {
		for {
			select {
			case <-w.ResultChan():
			default:
				return
			}
		}
	}

	l := listenUevents(t)
	var add, remove []time.Duration
	for i := range cycles + 1 {
		l.drain()
		drainWatch()
		// Normally the same number again (the device untainted); another
		// process may have taken it (a new device, published).
		z := zramAdd(t)
		name := zramDevice(z)
		t0 := l.first(t, "add", "zram"+strconv.Itoa(z))
		t1 := waitDevice(name, func(dev resourceapi.Device, ok bool) bool { return ok && len(dev.Taints) == 0 })
		l.drain()
		drainWatch()
		if err := zramRemove(z); err != nil {
			t.Fatal(err)
		}
		t2 := l.first(t, "remove", "zram"+strconv.Itoa(z))
		t3 := waitDevice(name, func(dev resourceapi.Device, ok bool) bool { _, tainted := taintOf(dev); return ok && tainted })
		if i > 0 { // the first add makes a new device, the others untaint it
			add = append(add, t1.Sub(t0))
		}
		remove = append(remove, t3.Sub(t2))
	}
	latency("DRA: uevent → ResourceSlice in the API server (watch), add", add)
	latency("DRA: uevent → ResourceSlice in the API server (watch), remove → tainted", remove)

	// NodePrepareResources: a new claim each time for one share of null.
	d.createClasses()
	var prep, unprep []time.Duration
	for i := range cycles {
		name := fmt.Sprintf("bench-%d", i)
		pod := draPod(name, name)
		claim := d.allocate(selectorClaim(name, fmt.Sprintf(`device.attributes[%q].path == "/dev/null"`, draDriver), ""), pod)
		t0 := time.Now()
		if _, err := d.nodePrepare(claim); err != nil {
			t.Fatalf("NodePrepareResources: %v", err)
		}
		prep = append(prep, time.Since(t0))
		t0 = time.Now()
		if err := d.nodeUnprepare(claim); err != nil {
			t.Fatalf("NodeUnprepareResources: %v", err)
		}
		unprep = append(unprep, time.Since(t0))
		if err := d.client.ResourceV1().ResourceClaims(claim.Namespace).Delete(d.ctx(), claim.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	latency("DRA: NodePrepareResources (claim read from the API server, CDI spec written)", prep)
	latency("DRA: NodeUnprepareResources (CDI spec removed)", unprep)

	draBin := filepath.Join(filepath.Dir(daemonBinary), "smarter-device-manager-dra")
	footprint := func(mode, bin string, pid int) {
		time.Sleep(idle) // an idle daemon: what it holds once settled
		mem := procMem(t, pid)
		size := int64(0)
		if fi, err := os.Stat(bin); err == nil {
			size = fi.Size()
		}
		fmt.Printf("DRAFOOTPRINT mode=%s idle_s=%.0f vmrss=%d vmhwm=%d rssanon=%d rssfile=%d binary=%d\n",
			mode, idle.Seconds(), mem["VmRSS:"], mem["VmHWM:"], mem["RssAnon:"], mem["RssFile:"], size)
	}
	footprint("dra", draBin, d.daemon.cmd.Process.Pid)

	// The same rules in device-plugin mode, against the kubelet's device
	// manager.
	d.stopDaemon()
	d.daemonArgs = []string{"--log-level", "warn"}
	d.startKubelet()
	d.startDaemon()
	d.waitCapacity("null registered", map[string]counts{resNull: {2, 2}})
	footprint("device-plugin", daemonBinary, d.daemon.cmd.Process.Pid)
}

// latency prints one LATENCY line (milliseconds), the format
// cmd/sdm-bench reads.
func latency(name string, d []time.Duration) {
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
