package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

// TestNodeUpgrade is issue 21's upgrades without losing a device, on two
// worker nodes (as in TestNodeReboot), each with a bare pod and a
// Deployment's pod holding its zram device. Node A runs the daemon from
// the .deb as the shipped unit; the .deb is upgraded to a later version
// with dpkg -i while the pods run. Node B runs the project's DaemonSet;
// its image is updated (a rolling update). For each, a watch on the Node
// records every write through the API server, and the test asserts: the
// new daemon runs (a new process of the new package; the DaemonSet rolled
// out), no pod's container restarted, no write of the Node lowered the
// device's capacity (its lowest allocatable is logged), and a zram device
// plugged in after
// the upgrade is served (allocatable, and a pod that opens it). Then dpkg
// --purge on node A leaves no file, unit or plugin socket of the daemon.
func TestNodeUpgrade(t *testing.T) {
	e := setUpNodes(t, "nodes", "nodes-2")
	c := e.c
	ctx := context.Background()
	// The later version: the same tree, packaged as the release after.
	v2, err := buildDebVersion(t.TempDir(), "99.0.0")
	c.must(err)

	devA, devB := c.hotAdd(t), c.hotAdd(t)
	a := c.startWorker(t, e.image, e.gateway, "sdm-node-a", devA, e.tars)
	bn := c.startWorker(t, e.image, e.gateway, "sdm-node-b", devB, e.tars)
	a.installDeb(e.deb)
	a.startKubelet(c)
	bn.startKubelet(c)
	c.waitNodeAllocatable(t, a.name, zram(devA), 2)
	c.applyDaemonSet(t, bn, "nodes")
	c.waitNodeAllocatable(t, bn.name, zram(devB), 2)
	c.waitServiceAccount(t, "default")

	wls := map[*worker][]workload{}
	for _, w := range []*worker{a, bn} {
		bare := workload{name: "bare-" + w.name, bare: true, w: w}
		dep := workload{name: "deploy-" + w.name, w: w}
		if _, err := c.cs.AppsV1().Deployments("default").Create(ctx, deviceDeployment(dep.name, w.name, w.dev), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.ensureBarePod(t, bare)
		c.waitWorkload(t, dep, "")
		wls[w] = []workload{bare, dep}
	}

	// Node A: the .deb upgraded under its pods.
	before := c.containers(t, wls[a]...)
	unitBefore := a.unit()
	nw := c.watchNode(t, a.name, zram(devA))
	begin := time.Now()
	a.copyIn(v2, "/root/deb/new.deb")
	a.must("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i", "--force-confdef", "--force-confold", "/root/deb/new.deb")
	after := a.waitUnit("the new package's daemon running", time.Minute, func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["SubState"] == "running" && p["MainPID"] != unitBefore["MainPID"] && atoi(p["MainPID"]) > 0
	})
	version := strings.TrimSpace(a.must("dpkg-query", "-W", "-f=${Version}", sdmPkg))
	t.Logf("node %s: dpkg -i of %s: unit active (running), MainPID %s → %s, package version %s, %.1f s",
		a.name, filepath.Base(v2), unitBefore["MainPID"], after["MainPID"], version, time.Since(begin).Seconds())
	if !strings.HasPrefix(version, "99.0.0") {
		t.Errorf("after the upgrade dpkg says version %q, want 99.0.0", version)
	}
	c.servesPlugged(t, a, "the .deb upgrade")
	c.checkWatch(t, a.name, zram(devA), "the .deb upgrade", nw)
	c.keptRunning(t, "the .deb upgrade", before, wls[a]...)

	// Node B: the DaemonSet's rolling update.
	before = c.containers(t, wls[bn]...)
	nw = c.watchNode(t, bn.name, zram(devB))
	begin = time.Now()
	dsPatch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":%q,"image":%q}]}}}}`, sdmName, daemonImage("nodes-2"))
	if _, err := c.cs.AppsV1().DaemonSets(sdmNamespace).Patch(ctx, sdmName, types.StrategicMergePatchType, []byte(dsPatch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := c.waitDaemonPodReady(t, daemonImage("nodes-2"))
	ds := c.waitRolledOut(t)
	t.Logf("node %s: DaemonSet rolled out to %s (pod %s) in %s; updatedNumberScheduled=%d numberReady=%d",
		bn.name, daemonImage("nodes-2"), pod.Name, time.Since(begin).Round(time.Millisecond), ds.Status.UpdatedNumberScheduled, ds.Status.NumberReady)
	c.servesPlugged(t, bn, "the rolling update")
	c.checkWatch(t, bn.name, zram(devB), "the rolling update", nw)
	c.keptRunning(t, "the rolling update", before, wls[bn]...)

	// Removal: nothing of the daemon left, its plugin sockets included.
	a.must("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "--purge", sdmPkg)
	left := a.must("sh", "-c", `for p; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done; ls /var/lib/kubelet/device-plugins | grep -v '^kubelet.sock$' | grep -v '^kubelet_internal_checkpoint$' || true`, "sh",
		sdmUnitPath, sdmConf, sdmConfDir, sdmWants, sdmBins[0], sdmBins[1])
	if strings.TrimSpace(left) != "" {
		t.Errorf("after dpkg --purge these are left:\n%s", left)
	}
	if out, _ := a.exec("systemctl", "list-unit-files", "--no-legend", sdmUnit); strings.TrimSpace(out) != "" {
		t.Errorf("after dpkg --purge, systemctl list-unit-files still lists it:\n%s", out)
	}
}

// servesPlugged plugs a zram device into node w after an upgrade and waits
// until it is allocatable there and a pod runs with it open.
func (c *cluster) servesPlugged(t *testing.T, w *worker, what string) {
	t.Helper()
	n, sent := c.plugInto(t, w)
	c.waitNodeAllocatable(t, w.name, zram(n), 2)
	t.Logf("API: node %s: zram%d plugged after %s: %s=2 allocatable %s after its uevent (the kubelet's next node status)",
		w.name, n, what, zram(n), time.Since(sent).Round(time.Millisecond))
	late := workload{name: "plugged-" + w.name, bare: true, w: &worker{node: w.node, name: w.name, dev: n}}
	if _, err := c.cs.CoreV1().Pods("default").Create(context.Background(), devicePod(late.name, w.name, n), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitWorkload(t, late, "")
}

// checkWatch ends a Node watch and fails if any write lowered the
// device's capacity. Allocatable is logged, not asserted: between the old
// daemon's exit and the new one's registration the kubelet counts a
// disconnected plugin's devices unhealthy, and a node status written in
// that window (it writes every 10 s) shows allocatable 0; running pods
// keep their devices, and new ones wait for the new daemon.
func (c *cluster) checkWatch(t *testing.T, node, res, what string, nw *nodeWatch) {
	t.Helper()
	writes, minCap, minAlloc := nw.stop()
	t.Logf("API: %d writes of node %s during %s: lowest %s capacity %d, allocatable %d", writes, node, what, res, minCap, minAlloc)
	if writes == 0 {
		t.Errorf("no write of node %s seen during %s: the watch saw nothing", node, what)
	} else if minCap < 2 {
		t.Errorf("during %s node %s's %s went down to capacity %d (want 2 throughout)", what, node, res, minCap)
	}
}

// nodeWatch records every write of a Node through a watch: how many, and
// the lowest capacity and allocatable of a resource any of them carried.
type nodeWatch struct {
	w                watch.Interface
	done             sync.WaitGroup
	mu               sync.Mutex
	writes           int
	minCap, minAlloc int64
}

func (c *cluster) watchNode(t *testing.T, node, res string) *nodeWatch {
	t.Helper()
	w, err := c.cs.CoreV1().Nodes().Watch(context.Background(), metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", node).String()})
	if err != nil {
		t.Fatal(err)
	}
	nw := &nodeWatch{w: w, minCap: 1 << 62, minAlloc: 1 << 62}
	nw.done.Add(1)
	go func() {
		defer nw.done.Done()
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type != watch.Modified && ev.Type != watch.Added {
				continue
			}
			capQ, allocQ := n.Status.Capacity[corev1.ResourceName(res)], n.Status.Allocatable[corev1.ResourceName(res)]
			nw.mu.Lock()
			nw.writes++
			nw.minCap, nw.minAlloc = min(nw.minCap, capQ.Value()), min(nw.minAlloc, allocQ.Value())
			nw.mu.Unlock()
		}
	}()
	return nw
}

// stop ends the watch and returns what it saw.
func (nw *nodeWatch) stop() (writes int, minCap, minAlloc int64) {
	nw.w.Stop()
	nw.done.Wait()
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.writes, nw.minCap, nw.minAlloc
}

// plugInto hot-adds a zram device on this machine and plugs it into node
// w (plugDev); it returns the device's number and when its uevent was sent.
func (c *cluster) plugInto(t *testing.T, w *worker) (int, time.Time) {
	t.Helper()
	n := c.hotAdd(t)
	sent := time.Now()
	plugDev(t, w, n)
	return n, sent
}

// keptRunning checks that each workload's container is the one it had.
func (c *cluster) keptRunning(t *testing.T, what string, before map[string]ctrState, wls ...workload) {
	t.Helper()
	for _, wl := range wls {
		p, id := c.running(t, wl)
		if p == nil {
			t.Errorf("%s: not running after %s", wl.name, what)
			continue
		}
		if b := before[wl.name]; id != b.id || p.Status.ContainerStatuses[0].RestartCount != b.restarts {
			t.Errorf("%s: container %s (restarts %d) after %s, %s (restarts %d) before: it was restarted",
				wl.name, id, p.Status.ContainerStatuses[0].RestartCount, what, b.id, b.restarts)
		}
	}
}

// ctrState is a workload's running container.
type ctrState struct {
	id       string
	restarts int32
}

func (c *cluster) containers(t *testing.T, wls ...workload) map[string]ctrState {
	t.Helper()
	m := map[string]ctrState{}
	for _, wl := range wls {
		p, id := c.running(t, wl)
		if p == nil {
			t.Fatalf("%s: not running", wl.name)
		}
		m[wl.name] = ctrState{id, p.Status.ContainerStatuses[0].RestartCount}
	}
	return m
}
