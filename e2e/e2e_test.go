package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
)

// basicRules are the old daemon's legacy YAML format over nodes every
// machine has; the counts differ so that a mix-up shows.
const basicRules = `- devicematch: ^null$
  nummaxdevices: 3
- devicematch: ^zero$
  nummaxdevices: 2
- devicematch: ^full$
  nummaxdevices: 1
`

const (
	resNull = "smarter-devices/null"
	resZero = "smarter-devices/zero"
	resFull = "smarter-devices/full"
)

// basicCounts is what GetCapacity must show for basicRules.
var basicCounts = map[string]counts{
	resNull: {capacity: 3, allocatable: 3},
	resZero: {capacity: 2, allocatable: 2},
	resFull: {capacity: 1, allocatable: 1},
}

// basicIDs are the device IDs: 0..count-1, the old daemon's, which the
// kubelet checkpoints.
var basicIDs = map[string][]string{
	resNull: {"0", "1", "2"},
	resZero: {"0", "1"},
	resFull: {"0"},
}

// startBasic starts the kubelet, then the daemon on basicRules, and waits
// for every resource.
func startBasic(t *testing.T) *node {
	t.Helper()
	n := newNode(t, basicRules)
	n.startKubelet()
	n.startDaemon()
	n.waitCapacity("every resource registered", basicCounts)
	return n
}

// checkDevices checks that opts give the container exactly the nodes, each
// at the same path as on the host and read-write, and nothing else.
func checkDevices(t *testing.T, what string, opts *devicemanager.DeviceRunContainerOptions, nodes ...string) {
	t.Helper()
	var want []kubecontainer.DeviceInfo
	for _, p := range nodes {
		want = append(want, kubecontainer.DeviceInfo{PathOnHost: p, PathInContainer: p, Permissions: "rw"})
	}
	got := slices.Clone(opts.Devices)
	slices.SortFunc(got, func(a, b kubecontainer.DeviceInfo) int { return cmpString(a.PathOnHost, b.PathOnHost) })
	slices.SortFunc(want, func(a, b kubecontainer.DeviceInfo) int { return cmpString(a.PathOnHost, b.PathOnHost) })
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: container devices = %+v; want %+v", what, got, want)
	}
	if len(opts.Mounts) != 0 || len(opts.Envs) != 0 || len(opts.CDIDevices) != 0 {
		t.Errorf("%s: unexpected mounts %v, envs %v or CDI devices %v", what, opts.Mounts, opts.Envs, opts.CDIDevices)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// allocatableZero holds when the kubelet has marked every listed resource
// unhealthy: what it does when a plugin's ListAndWatch stream ends.
func allocatableZero(res ...string) func(map[string]counts) bool {
	return func(got map[string]counts) bool {
		for _, r := range res {
			if c, ok := got[r]; !ok || c.allocatable != 0 {
				return false
			}
		}
		return true
	}
}

// sameFile reports whether two stats name one file; an inode number is soon
// reused, so the modification time must match too.
func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime())
}

// checkCheckpoint checks what the next kubelet start will read: the
// resources registered, and each pod's device IDs for res, one ID of
// basicIDs each. The IDs registered per resource are not compared: the
// manager writes the file from concurrent ListAndWatch callbacks, each with a
// snapshot taken before it writes, so an older snapshot can land last.
func (n *node) checkCheckpoint(what, res string, pods ...*v1.Pod) map[string][]string {
	n.t.Helper()
	entries, reg := n.checkpoint()
	if got, want := slices.Sorted(maps.Keys(reg)), slices.Sorted(maps.Keys(basicIDs)); !slices.Equal(got, want) {
		n.t.Errorf("%s: checkpointed resources = %v; want %v", what, got, want)
	}
	ids := map[string][]string{}
	for _, pod := range pods {
		got := podDeviceIDs(entries, pod, res)
		if len(got) != 1 || !slices.Contains(basicIDs[res], got[0]) {
			n.t.Errorf("%s: checkpointed %s IDs of pod %s = %v; want one of %v", what, res, pod.Name, got, basicIDs[res])
		}
		ids[pod.Name] = got
	}
	return ids
}

func TestRegistersEveryResource(t *testing.T) {
	n := startBasic(t)
	got := n.capacity()
	t.Logf("capacity/allocatable: %v", got)
	if !reflect.DeepEqual(got, basicCounts) {
		t.Errorf("GetCapacity = %v; want exactly %v", got, basicCounts)
	}
	if ids := n.deviceIDs(); !reflect.DeepEqual(ids, basicIDs) {
		t.Errorf("device IDs = %v; want %v", ids, basicIDs)
	}

	pod := n.newPod("all", map[string]int64{resNull: 1, resZero: 1, resFull: 1})
	if err := n.allocate(pod); err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	for res := range basicIDs {
		n.checkCheckpoint("after Allocate", res, pod)
	}
	opts := n.runOptions(pod)
	t.Logf("container devices: %+v", opts.Devices)
	checkDevices(t, "pod using three resources", opts, "/dev/full", "/dev/null", "/dev/zero")
}

func TestHotplugZram(t *testing.T) {
	requireSuite(t)
	requireZram(t)
	// null is there from the start: once it is registered, the first scan
	// is done.
	n := newNode(t, "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 2\n- devicematch: ^null$\n  nummaxdevices: 1\n")
	n.startKubelet()
	n.startDaemon()
	n.waitCapacity("null registered", map[string]counts{resNull: {1, 1}})

	z := zramAdd(t)
	res := fmt.Sprintf("smarter-devices/zram%d", z)
	dev := fmt.Sprintf("/dev/zram%d", z)
	t.Logf("hot_add made zram%d", z)
	got := n.waitCapacity("after hot_add", map[string]counts{res: {2, 2}})
	t.Logf("after hot_add: %s = %+v", res, got[res])

	p1 := n.newPod("zram-1", map[string]int64{res: 1})
	if err := n.allocate(p1); err != nil {
		t.Fatalf("Allocate %s: %v", res, err)
	}
	checkDevices(t, "pod using the zram device", n.runOptions(p1), dev)

	if err := zramRemove(z); err != nil {
		t.Fatal(err)
	}
	// The device is reported unhealthy, not dropped, until --remove-after.
	got = n.waitCapacity("after hot_remove", map[string]counts{res: {2, 0}})
	t.Logf("after hot_remove: %s = %+v", res, got[res])
	p2 := n.newPod("zram-2", map[string]int64{res: 1})
	if err := n.allocate(p2); err == nil {
		t.Errorf("Allocate %s succeeded with the device gone", res)
	} else {
		t.Logf("Allocate with the device gone: %v", err)
	}

	// zram hands out the lowest free number, so the same node comes back
	// unless another test took it in between.
	z2 := zramAdd(t)
	if z2 != z {
		res2 := fmt.Sprintf("smarter-devices/zram%d", z2)
		t.Logf("zram%d came back as zram%d (another test holds the number); checking the new resource", z, z2)
		n.waitCapacity("after re-add", map[string]counts{res2: {2, 2}})
		return
	}
	got = n.waitCapacity("after re-add", map[string]counts{res: {2, 2}})
	t.Logf("after re-add: %s = %+v", res, got[res])
	if err := n.allocate(p2); err != nil {
		t.Errorf("Allocate %s after the device came back: %v", res, err)
	}
	// The kubelet kept the resource: a device coming back must not cost a
	// new registration (the daemon's own count).
	if c := n.sample(n.metrics(), perResource("registrations_total", res)); c != 1 {
		t.Errorf("%s registered %v times; want 1", res, c)
	}
}

func TestKubeletRestart(t *testing.T) {
	n := startBasic(t)
	before := n.socketIDs()
	if len(before) != len(basicCounts) {
		t.Fatalf("plugin sockets before the restart: %v; want one per resource", slices.Sorted(maps.Keys(before)))
	}

	n.stopKubelet()
	n.startKubelet()
	got := n.waitCapacity("every resource back after the kubelet restart", basicCounts)
	t.Logf("after the restart: %v", got)

	// The new manager's start removed the daemon's sockets; the daemon must
	// have served new ones, not kept serving unlinked files.
	after := n.socketIDs()
	for name, fi := range before {
		a, ok := after[name]
		switch {
		case !ok:
			t.Errorf("socket %s missing after the restart", name)
		case sameFile(fi, a):
			t.Errorf("socket %s is the file from before the restart; the kubelet's start should have removed it", name)
		}
	}
	if len(after) != len(before) {
		t.Errorf("sockets after the restart: %v; before: %v", slices.Sorted(maps.Keys(after)), slices.Sorted(maps.Keys(before)))
	}
	if ids := n.deviceIDs(); !reflect.DeepEqual(ids, basicIDs) {
		t.Errorf("device IDs after the restart = %v; want %v", ids, basicIDs)
	}
}

func TestKubeletRestartedTwentyTimes(t *testing.T) {
	n := startBasic(t)
	const restarts = 20
	var slowest time.Duration // reported, not asserted: a hint for a slow path
	for i := 1; i <= restarts; i++ {
		start := time.Now()
		n.restartKubelet()
		n.waitCapacity(fmt.Sprintf("every resource back after restart %d", i), basicCounts)
		slowest = max(slowest, time.Since(start))
	}
	if socks := n.socketIDs(); len(socks) != len(basicCounts) {
		t.Errorf("plugin sockets after %d restarts: %v; want one per resource", restarts, slices.Sorted(maps.Keys(socks)))
	}
	// The daemon's own counts: it tried after every restart and is
	// registered with the kubelet now. (Each restart's registration is
	// proved above, by the new kubelet's capacity.) Failed attempts are
	// reported, not failed, and a success need not follow each: a Register
	// the kubelet could not answer in time (while handling it, it dials the
	// socket our Register names, which its own start may just have
	// removed) comes back after the daemon's register timeout, and one cut
	// short (EOF) by the kubelet's next restart is answered by the next
	// kubelet instead.
	t.Logf("slowest restart until every resource was back: %v", slowest)
	m := n.waitMetrics(fmt.Sprintf("every resource registered, after %d attempts or more", restarts+1), func(m map[string]float64) bool {
		for res := range basicCounts {
			if m[perResource("registration_attempts_total", res)] < restarts+1 || m[perResource("resource_registered", res)] != 1 {
				return false
			}
		}
		return true
	})
	for res := range basicCounts {
		c, a := n.sample(m, perResource("registrations_total", res)), n.sample(m, perResource("registration_attempts_total", res))
		t.Logf("%s: %v registrations, %v failed attempts", res, c, a-c)
	}
}

func TestDaemonKilledKeepsDeviceIDs(t *testing.T) {
	n := startBasic(t)
	idsBefore := n.deviceIDs()
	podA := n.newPod("a", map[string]int64{resZero: 1})
	if err := n.allocate(podA); err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	idsA := n.checkCheckpoint("before the crash", resZero, podA)["a"]

	n.killDaemon()
	// A crash leaves the sockets behind; the kubelet sees the streams end.
	t.Logf("sockets left by SIGKILL: %v", slices.Sorted(maps.Keys(n.socketIDs())))
	got := n.waitCapacity("every resource unhealthy after SIGKILL", map[string]counts{
		resNull: {3, 0}, resZero: {2, 0}, resFull: {1, 0},
	})
	t.Logf("after SIGKILL: %v", got)

	n.startDaemon()
	n.waitCapacity("every resource back after the daemon restart", basicCounts)
	if ids := n.deviceIDs(); !reflect.DeepEqual(ids, idsBefore) {
		t.Errorf("device IDs after the daemon restart = %v; before %v", ids, idsBefore)
	}
	if got := n.checkCheckpoint("after the restart", resZero, podA)["a"]; !slices.Equal(got, idsA) {
		t.Errorf("checkpointed IDs of pod a after the restart = %v; want %v", got, idsA)
	}
	checkDevices(t, "pod a after the daemon restart", n.runOptions(podA), "/dev/zero")

	// Pod a's allocation still counts: one zero ID is left, then none.
	podB := n.newPod("b", map[string]int64{resZero: 1})
	if err := n.allocate(podB); err != nil {
		t.Fatalf("Allocate pod b: %v", err)
	}
	if idsB := n.checkCheckpoint("after pod b", resZero, podB)["b"]; len(idsB) != 1 || slices.Contains(idsA, idsB[0]) {
		t.Errorf("pod b got %v; pod a holds %v", idsB, idsA)
	}
	podC := n.newPod("c", map[string]int64{resZero: 1})
	if err := n.allocate(podC); err == nil {
		t.Errorf("pod c got a zero device; both are held by pods a and b")
	}
}

func TestDaemonBeforeKubelet(t *testing.T) {
	n := newNode(t, basicRules)
	n.startDaemon()
	// The daemon serves before it registers; with no kubelet.sock yet it
	// says it waits, and makes no attempt: there is nothing to retry.
	n.poll("the daemon serving its sockets", func() bool { return len(n.socketIDs()) == len(basicCounts) },
		func() string { return fmt.Sprintf("sockets %v", slices.Sorted(maps.Keys(n.socketIDs()))) })
	if _, err := os.Stat(filepath.Join(n.dir, kubeletSocket)); err == nil {
		t.Fatal("kubelet.sock exists before the kubelet started")
	}
	m := n.metrics()
	if w := n.sample(m, "smarter_device_manager_waiting_for_kubelet"); w != 1 {
		t.Errorf("waiting_for_kubelet = %v before the kubelet started; want 1", w)
	}
	for res := range basicCounts {
		if a := n.sample(m, perResource("registration_attempts_total", res)); a != 0 {
			t.Errorf("%s: %v registration attempts with no kubelet.sock; want none", res, a)
		}
	}
	n.startKubelet()
	got := n.waitCapacity("every resource registered after the kubelet started", basicCounts)
	t.Logf("capacity/allocatable: %v", got)
	m = n.waitMetrics("the daemon counting every registration", func(m map[string]float64) bool {
		for res := range basicCounts {
			if m[perResource("registrations_total", res)] < 1 {
				return false
			}
		}
		return true
	})
	if w := n.sample(m, "smarter_device_manager_waiting_for_kubelet"); w != 0 {
		t.Errorf("waiting_for_kubelet = %v with the kubelet running; want 0", w)
	}
	for res := range basicCounts {
		if c := n.sample(m, perResource("registrations_total", res)); c != 1 {
			t.Errorf("%s: %v registrations; want 1", res, c)
		}
	}
}

func TestAllocationSurvivesRestarts(t *testing.T) {
	n := startBasic(t)
	p1 := n.newPod("p1", map[string]int64{resNull: 1})
	if err := n.allocate(p1); err != nil {
		t.Fatalf("Allocate p1: %v", err)
	}
	opts := n.runOptions(p1)
	t.Logf("p1 container devices: %+v", opts.Devices)
	checkDevices(t, "p1", opts, "/dev/null")
	ids1 := n.checkCheckpoint("after p1", resNull, p1)["p1"]

	// Daemon restart: the kubelet sees the streams end, then the new run
	// registers the same IDs.
	n.stopDaemon()
	n.waitFor("null unhealthy after the daemon stopped", allocatableZero(resNull))
	n.startDaemon()
	n.waitCapacity("every resource back after the daemon restart", basicCounts)
	checkDevices(t, "p1 after the daemon restart", n.runOptions(p1), "/dev/null")
	p2 := n.newPod("p2", map[string]int64{resNull: 1})
	if err := n.allocate(p2); err != nil {
		t.Fatalf("Allocate p2 after the daemon restart: %v", err)
	}
	checkDevices(t, "p2", n.runOptions(p2), "/dev/null")

	// Kubelet restart: the allocations come back from the checkpoint.
	n.restartKubelet()
	n.waitCapacity("every resource back after the kubelet restart", basicCounts)
	checkDevices(t, "p1 after the kubelet restart", n.runOptions(p1), "/dev/null")
	checkDevices(t, "p2 after the kubelet restart", n.runOptions(p2), "/dev/null")
	p3 := n.newPod("p3", map[string]int64{resNull: 1})
	if err := n.allocate(p3); err != nil {
		t.Fatalf("Allocate p3 after the kubelet restart: %v", err)
	}
	checkDevices(t, "p3", n.runOptions(p3), "/dev/null")

	ids := n.checkCheckpoint("after both restarts", resNull, p1, p2, p3)
	if !slices.Equal(ids["p1"], ids1) {
		t.Errorf("p1's checkpointed IDs = %v after both restarts; want %v", ids["p1"], ids1)
	}
	held := map[string]string{} // null ID → pod
	for _, pod := range []*v1.Pod{p1, p2, p3} {
		for _, id := range ids[pod.Name] {
			if other, ok := held[id]; ok {
				t.Errorf("null ID %s held by both %s and %s", id, other, pod.Name)
			}
			held[id] = pod.Name
		}
	}
	t.Logf("null IDs held: %v", held)
	// Three IDs, three pods: a fourth must wait.
	p4 := n.newPod("p4", map[string]int64{resNull: 1})
	if err := n.allocate(p4); err == nil {
		t.Errorf("p4 got a null device; all three are held")
	}
}
