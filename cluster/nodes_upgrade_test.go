package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
)

// TestNodeUpgrade is issue 21's package upgrade: on a worker node (as in
// TestNodeReboot) the daemon runs from the .deb as the shipped unit, and a
// bare pod and a Deployment's pod hold the node's zram device. The .deb is
// upgraded to a later version with dpkg -i while they run. The test
// watches the Node object through the API server the whole time and
// asserts: the unit runs a new process of the new package; no pod's
// container restarted; the device's capacity and allocatable never went
// down in any write of the Node; a zram device plugged in after the
// upgrade is served (allocatable, and a pod that opens it). Then dpkg
// --purge leaves no file, unit or plugin socket of the daemon.
func TestNodeUpgrade(t *testing.T) {
	skipUnlessDocker(t)
	if _, err := os.Stat("/sys/class/zram-control/hot_add"); err != nil {
		t.Skip("SKIPPED: node suite: no zram hot_add (modprobe zram num_devices=0; scripts/test-deps.sh does)")
	}
	pid := strconv.Itoa(os.Getpid())
	t.Cleanup(func() {
		out, err := dockerCmd(time.Minute, "ps", "-aq", "--filter", "label="+nodeLabel+"="+pid)
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("node containers left behind: %q %v", out, err)
		}
	})
	removeStaleNodes(t)
	gateway := dockerGateway(t)

	begin := time.Now()
	type built struct {
		deb string
		err error
	}
	old, next := make(chan built, 1), make(chan built, 1)
	go func() {
		deb, err := buildDeb(filepath.Join(t.TempDir(), "old"))
		old <- built{deb, err}
		// The later version: the same tree, packaged as the release after.
		deb, err = buildDebVersion(filepath.Join(t.TempDir(), "new"), "99.0.0")
		next <- built{deb, err}
	}()
	image, err := nodeImage()
	v1, v2 := <-old, <-next
	if err != nil {
		t.Skipf("SKIPPED: no node image: %v", err)
	}
	for _, b := range []built{v1, v2} {
		if b.err != nil {
			t.Fatal(b.err)
		}
	}
	t.Logf("image %s, %s and %s ready in %.1f s", image, filepath.Base(v1.deb), filepath.Base(v2.deb), time.Since(begin).Seconds())

	c := controlPlane(t, gateway)
	ctx := context.Background()
	imgDir := filepath.Join(baseDir, "images")
	c.must(os.MkdirAll(imgDir, 0o755))
	pause := filepath.Join(imgDir, "pause.tar")
	c.must(writeImage(pause, pauseImage, []imageFile{{path: "pause", src: filepath.Join(c.bin, "pause"), mode: 0o755}}, nil, []string{"/pause"}, ""))
	probe := filepath.Join(baseDir, "devprobe")
	c.must(goBuild(probe, "./cmd/devprobe"))
	probeTar := filepath.Join(imgDir, "devprobe.tar")
	c.must(writeImage(probeTar, probeImage, []imageFile{{path: "devprobe", src: probe, mode: 0o755}}, nil, []string{"/devprobe"}, ""))

	dev := c.hotAdd(t)
	a := c.startWorker(t, image, gateway, "sdm-node-a", dev, []string{pause, probeTar})
	a.copyIn(v1.deb, "/root/deb/old.deb")
	a.must("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i", "/root/deb/old.deb")
	a.must("sh", "-c", "printf '%s' '"+zramRuleTOML+"' >> "+sdmConf)
	a.must("systemctl", "restart", sdmUnit)
	a.startKubelet(c)
	c.waitNodeAllocatable(t, a.name, zram(dev), 2)
	c.waitServiceAccount(t, "default")

	bare := workload{name: "bare-" + a.name, bare: true, w: a}
	dep := workload{name: "deploy-" + a.name, w: a}
	if _, err := c.cs.AppsV1().Deployments("default").Create(ctx, deviceDeployment(dep.name, a.name, dev), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.ensureBarePod(t, bare)
	c.waitWorkload(t, dep, "")
	type ctr struct {
		id       string
		restarts int32
	}
	before := map[string]ctr{}
	for _, wl := range []workload{bare, dep} {
		p, id := c.running(t, wl)
		before[wl.name] = ctr{id, p.Status.ContainerStatuses[0].RestartCount}
	}
	unitBefore := a.unit()

	// Every write of the Node from here on, through a watch: the lowest
	// capacity and allocatable of the device any of them carried.
	res := zram(dev)
	w, err := c.cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", a.name).String()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	minCap, minAlloc, writes := int64(1<<62), int64(1<<62), 0
	var watched sync.WaitGroup
	watched.Add(1)
	go func() {
		defer watched.Done()
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type != watch.Modified && ev.Type != watch.Added {
				continue
			}
			capQ, allocQ := n.Status.Capacity[corev1.ResourceName(res)], n.Status.Allocatable[corev1.ResourceName(res)]
			mu.Lock()
			writes++
			minCap, minAlloc = min(minCap, capQ.Value()), min(minAlloc, allocQ.Value())
			mu.Unlock()
		}
	}()

	begin = time.Now()
	a.copyIn(v2.deb, "/root/deb/new.deb")
	a.must("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i", "--force-confdef", "--force-confold", "/root/deb/new.deb")
	after := a.waitUnit("the new package's daemon running", time.Minute, func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["SubState"] == "running" && p["MainPID"] != unitBefore["MainPID"] && atoi(p["MainPID"]) > 0
	})
	version := strings.TrimSpace(a.must("dpkg-query", "-W", "-f=${Version}", sdmPkg))
	t.Logf("dpkg -i of %s: unit active (running), MainPID %s → %s, package version %s, %.1f s",
		filepath.Base(v2.deb), unitBefore["MainPID"], after["MainPID"], version, time.Since(begin).Seconds())
	if !strings.HasPrefix(version, "99.0.0") {
		t.Errorf("after the upgrade dpkg says version %q, want 99.0.0", version)
	}

	// A device plugged in after the upgrade: made on this machine, its node
	// made in node A's /dev (what devtmpfs does on a real node), and its
	// uevent sent again (the first came before the node existed).
	devC := c.hotAdd(t)
	mm, err := os.ReadFile(fmt.Sprintf("/sys/block/zram%d/dev", devC))
	if err != nil {
		t.Fatal(err)
	}
	major, minor, _ := strings.Cut(strings.TrimSpace(string(mm)), ":")
	a.must("mknod", "-m", "0660", fmt.Sprintf("/dev/zram%d", devC), "b", major, minor)
	plugged := time.Now()
	if err := os.WriteFile(fmt.Sprintf("/sys/block/zram%d/uevent", devC), []byte("add"), 0o200); err != nil {
		t.Fatal(err)
	}
	c.waitNodeAllocatable(t, a.name, zram(devC), 2)
	t.Logf("API: zram%d plugged after the upgrade: %s=2 allocatable %s after its uevent", devC, zram(devC), time.Since(plugged).Round(time.Millisecond))
	late := workload{name: "after-upgrade", bare: true, w: &worker{node: a.node, name: a.name, dev: devC}}
	if _, err := c.cs.CoreV1().Pods("default").Create(ctx, devicePod(late.name, a.name, devC), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitWorkload(t, late, "")

	w.Stop()
	watched.Wait()
	mu.Lock()
	t.Logf("API: %d writes of node %s during the upgrade: lowest %s capacity %d, allocatable %d", writes, a.name, res, minCap, minAlloc)
	if writes > 0 && (minCap < 2 || minAlloc < 2) {
		t.Errorf("during the upgrade node %s's %s went down to capacity %d, allocatable %d (want 2 throughout)", a.name, res, minCap, minAlloc)
	}
	mu.Unlock()
	for _, wl := range []workload{bare, dep} {
		p, id := c.running(t, wl)
		if p == nil {
			t.Errorf("%s: not running after the upgrade", wl.name)
			continue
		}
		if b := before[wl.name]; id != b.id || p.Status.ContainerStatuses[0].RestartCount != b.restarts {
			t.Errorf("%s: container %s (restarts %d) after the upgrade, %s (restarts %d) before: the upgrade restarted it",
				wl.name, id, p.Status.ContainerStatuses[0].RestartCount, b.id, b.restarts)
		}
	}

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
