package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The kubelet calls GetPreferredAllocation before Allocate when the plugin
// offers it and more IDs are free than the pod needs. A plain resource,
// whose IDs all hand out the same node, does not offer it, so the kubelet
// makes no such call; a class resource, whose IDs are different devices,
// does, and the kubelet asks it. The daemon's own counters say which calls
// it got.
func TestPreferredAllocationOnlyWhereOffered(t *testing.T) {
	const resMem = "smarter-devices/mem"
	n := newNode(t, "version: v1\nrules:\n  - match: ^null$\n    count: 3\n  - match: ^(zero|full)$\n    class: mem\n")
	n.startKubelet()
	n.startDaemon()
	n.waitCapacity("both resources registered", map[string]counts{resNull: {3, 3}, resMem: {2, 2}})

	pod := n.newPod("p", map[string]int64{resNull: 1, resMem: 1})
	if err := n.allocate(pod); err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	m := n.metrics()
	for _, c := range []struct {
		res             string
		allocs, prefers float64
	}{
		{resNull, 1, 0},
		{resMem, 1, 1},
	} {
		allocs, prefers := n.sample(m, perResource("allocations_total", c.res)), n.sample(m, perResource("preferred_allocations_total", c.res))
		if allocs != c.allocs || prefers != c.prefers {
			t.Errorf("%s: %v Allocate and %v GetPreferredAllocation calls from the kubelet; want %v and %v",
				c.res, allocs, prefers, c.allocs, c.prefers)
		}
	}
}

// legacyRules is the old daemon's default rule file (its conf.yaml, which
// conf's tests hold the embedded default to), the one the Allocate
// benchmark below runs with.
const legacyRules = "../conf/default.yaml"

// allocateNodes are the device nodes the Allocate benchmark makes, 90
// resources under legacyRules: a Raspberry Pi's and a Jetson's worth, and
// then some serial ports.
func allocateNodes() []string {
	nodes := []string{"snd/controlC0", "snd/pcmC0D0p", "gpiomem", "hci0", "rtc0", "vchiq", "vcsm-cma"}
	add := func(prefix string, count int) {
		for i := range count {
			nodes = append(nodes, prefix+strconv.Itoa(i))
		}
	}
	add("gpiochip", 10)
	add("i2c-", 10)
	add("video", 20)
	add("ttyUSB", 8)
	add("ttyACM", 4)
	add("ttyTHS", 2)
	add("ttyS", 30)
	return nodes
}

// TestKubeletAllocateLatency measures, for the benchmark report (make
// bench), the real kubelet device manager's Allocate for a pod's container:
// from ManagerImpl.Allocate's call to its return, which picks IDs (asking the
// plugin's GetPreferredAllocation where offered), calls the plugin's
// Allocate per resource and checkpoints. The daemon runs the old daemon's
// default rules over 90 resources; each pod asks for one ID of a video
// node, of snd and of a gpiochip (20 IDs each: more free than needed) and
// of a serial port (1 ID). It asserts nothing about time; it runs only when
// SDM_BENCH_CYCLES is set (pods in all, in rounds of 20) and prints one
// LATENCY line.
func TestKubeletAllocateLatency(t *testing.T) {
	cycles, _ := strconv.Atoi(os.Getenv("SDM_BENCH_CYCLES"))
	if cycles <= 0 {
		t.Skip("skipping: a benchmark; set SDM_BENCH_CYCLES (make bench does)")
	}
	requireSuite(t)
	rules, err := os.ReadFile(legacyRules)
	if err != nil {
		t.Fatal(err)
	}
	nodes := allocateNodes()
	devRoot := mkdirTemp(t)
	for _, p := range nodes {
		path := filepath.Join(devRoot, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		// 1:3 is /dev/null's number: nothing here opens them.
		if err := syscall.Mknod(path, syscall.S_IFCHR|0o600, 1<<8|3); err != nil {
			t.Fatalf("mknod %s: %v", path, err)
		}
	}
	n := newNode(t, string(rules))
	n.daemonArgs = []string{"--log-level", "warn", "--dev-root", devRoot}
	n.startKubelet()
	n.startDaemon()
	var resources int
	got := n.waitFor("every resource registered", func(got map[string]counts) bool {
		resources = 0
		for _, c := range got {
			if c.allocatable > 0 {
				resources++
			}
		}
		return resources >= 90
	})
	t.Logf("%d resources registered", len(got))

	const perRound = 20
	var d []time.Duration
	for round := 0; len(d) < max(cycles, perRound); round++ {
		// The kubelet frees the devices of pods that are no longer active
		// at the next Allocate: a new round has every ID free again.
		n.pods.reset()
		for i := range perRound {
			pod := n.newPod(fmt.Sprintf("r%d-p%d", round, i), map[string]int64{
				"smarter-devices/video" + strconv.Itoa(i):       1,
				"smarter-devices/snd":                           1,
				"smarter-devices/gpiochip" + strconv.Itoa(i%10): 1,
				"smarter-devices/ttyS" + strconv.Itoa(i):        1,
			})
			start := time.Now()
			err := n.allocate(pod)
			d = append(d, time.Since(start))
			if err != nil {
				t.Fatalf("Allocate %s: %v", pod.Name, err)
			}
		}
	}
	slices.Sort(d)
	pct := func(p float64) float64 {
		i := min(max(int(p*float64(len(d))+0.5)-1, 0), len(d)-1)
		return float64(d[i]) / float64(time.Millisecond)
	}
	fmt.Printf("LATENCY series=%q n=%d p50=%.2f p90=%.2f p99=%.2f max=%.2f\n",
		fmt.Sprintf("real kubelet: Allocate of a pod (4 resources of %d, legacy rules)", resources), len(d), pct(0.5), pct(0.9), pct(0.99), pct(1))
}
