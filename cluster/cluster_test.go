package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

const (
	sdmNamespace = "smarter-device-manager"
	sdmName      = "smarter-device-manager"
	prefix       = "smarter-devices/"
	// The rule appended to the shipped ConfigMap: one resource per zram
	// device, the old daemon's format as the rest of the file.
	zramRule = "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 1\n"
	// How long the suite waits for the cluster to converge on a state
	// before it gives up (a loaded 2-core machine is slow; this is not a
	// figure the suite asserts: the figures are printed).
	converge = 3 * time.Minute
)

func daemonImage(tag string) string { return "docker.io/library/smarter-device-manager:" + tag }

const probeImage = "docker.io/library/sdm-cluster-devprobe:1"

// TestCluster is issue 15: the project's manifest on a real single-node
// cluster, driven through the API server as a user would. Each step logs
// what the API server showed ("API:" lines).
func TestCluster(t *testing.T) {
	skipUnlessCapable(t)
	dist := filepath.Join("..", "dist", "linux-"+runtime.GOARCH)
	for _, b := range []string{"smarter-device-manager", "smarter-device-manager-dra"} {
		if _, err := os.Stat(filepath.Join(dist, b)); err != nil {
			t.Skipf("cluster suite: no %s/%s: make e2e-cluster builds the daemon's binaries first", dist, b)
		}
	}
	c := up(t)
	ctx := context.Background()
	c.must(c.importDaemonImage(dist, "cluster-1"))
	c.must(c.buildProbeImage())

	var devA, devC int
	t.Run("1-daemonset", func(t *testing.T) {
		begin := time.Now()
		// The manifest's nodeSelector: the user labels the node.
		patch := []byte(`{"metadata":{"labels":{"smarter-device-manager":"enabled"}}}`)
		if _, err := c.cs.CoreV1().Nodes().Patch(ctx, nodeName, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		objs, err := readManifest(filepath.Join("..", "packaging", "kubernetes", "smarter-device-manager.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := forCluster(objs, daemonImage("cluster-1"), zramRule); err != nil {
			t.Fatal(err)
		}
		if err := c.apply(ctx, objs); err != nil {
			t.Fatal(err)
		}
		pod := c.waitDaemonPodReady(t, daemonImage("cluster-1"))
		sc := pod.Spec.Containers[0].SecurityContext
		t.Logf("API: pod %s/%s phase=%s ready=true image=%s node=%s runAsUser=%d privileged=%v capabilities.drop=%v readOnlyRootFilesystem=%v restarts=%d",
			pod.Namespace, pod.Name, pod.Status.Phase, pod.Spec.Containers[0].Image, pod.Spec.NodeName,
			deref(sc.RunAsUser), sc.Privileged != nil && *sc.Privileged, sc.Capabilities.Drop, deref(sc.ReadOnlyRootFilesystem),
			pod.Status.ContainerStatuses[0].RestartCount)
		if sc.Privileged != nil && *sc.Privileged {
			t.Error("the daemon's pod runs privileged; the manifest says it does not")
		}
		c.checkConfined(t, pod)
		n := c.node(t)
		t.Logf("API: node %s capacity %s", nodeName, resources(n.Status.Capacity))
		t.Logf("API: node %s allocatable %s", nodeName, resources(n.Status.Allocatable))
		for name := range n.Status.Capacity {
			if strings.HasPrefix(string(name), prefix) {
				if _, ok := n.Status.Allocatable[name]; !ok {
					t.Errorf("%s in capacity, not in allocatable", name)
				}
			}
		}
		t.Logf("step 1: DaemonSet applied to pod Ready in %s", time.Since(begin).Round(time.Millisecond))
	})
	if t.Failed() {
		return
	}

	t.Run("2-hotplugged-device-pod", func(t *testing.T) {
		devA = c.hotAdd(t)
		begin := time.Now()
		c.waitAllocatable(t, zram(devA), 1)
		t.Logf("step 2: zram%d hot-added; on the node's allocatable %s later", devA, time.Since(begin).Round(time.Millisecond))
		c.runProbePod(t, "devprobe-root", devA, nil)

		devC = c.hotAdd(t)
		c.waitAllocatable(t, zram(devC), 1)
		uid := int64(1000)
		c.runProbePod(t, "devprobe-uid1000", devC, &uid)
	})
	if t.Failed() {
		return
	}

	var devB int
	t.Run("3-unplug-replug", func(t *testing.T) {
		devB = c.hotAdd(t)
		c.waitAllocatable(t, zram(devB), 1)
		if err := hotRemove(devB); err != nil {
			t.Fatal(err)
		}
		c.forgetZram(devB)
		begin := time.Now()
		n := c.waitAllocatable(t, zram(devB), 0)
		q := n.Status.Capacity[corev1.ResourceName(zram(devB))]
		t.Logf("API: after hot_remove of zram%d: node allocatable %s=0 (capacity %s) %s later", devB, zram(devB), q.String(), time.Since(begin).Round(time.Millisecond))

		pod := probePod("devprobe-replug", devB, nil)
		if _, err := c.cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cond := c.waitUnschedulable(t, "devprobe-replug")
		t.Logf("API: pod default/devprobe-replug phase=Pending PodScheduled=False reason=%s message=%q", cond.Reason, cond.Message)

		again := c.hotAdd(t)
		if again != devB {
			t.Fatalf("hot_add gave zram%d, not zram%d again (another user of zram took the number): the pending pod asks for %s", again, devB, zram(devB))
		}
		begin = time.Now()
		c.waitAllocatable(t, zram(devB), 1)
		p := c.waitPodRunning(t, "devprobe-replug")
		t.Logf("API: after hot_add: zram%d allocatable 1, pod default/devprobe-replug phase=%s node=%s %s later", devB, p.Status.Phase, p.Spec.NodeName, time.Since(begin).Round(time.Millisecond))
		c.checkProbeLog(t, "devprobe-replug", devB, 0)
	})
	if t.Failed() {
		return
	}

	t.Run("4-rolling-update", func(t *testing.T) {
		c.must(c.importDaemonImage(dist, "cluster-2"))
		devicePods := []string{"devprobe-root", "devprobe-uid1000", "devprobe-replug"}
		before := map[string]*corev1.Pod{}
		for _, name := range devicePods {
			p, err := c.cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			before[name] = p
		}
		n0 := c.node(t)
		// Watch the Node through the update: every version the API server
		// holds must keep each of the daemon's resources in its capacity.
		w, err := c.cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + nodeName, ResourceVersion: n0.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		had := map[corev1.ResourceName]bool{}
		for name := range n0.Status.Capacity {
			if strings.HasPrefix(string(name), prefix) {
				had[name] = true
			}
		}
		// What the watch saw, read after it ends (watchDone) or under mu.
		var mu sync.Mutex
		missing := map[corev1.ResourceName]bool{}
		minAlloc := map[corev1.ResourceName]int64{}
		for name := range had {
			q := n0.Status.Allocatable[name]
			minAlloc[name] = q.Value()
		}
		seen := map[corev1.ResourceName]bool{} // every resource any version carried
		versions, closedEarly := 0, false
		var watchErrs []string
		watchDone := make(chan struct{})
		stopWatch := make(chan struct{})
		go func() {
			defer close(watchDone)
			for {
				select {
				case <-stopWatch:
					return
				case ev, ok := <-w.ResultChan():
					mu.Lock()
					if !ok {
						// The API server ended the watch: versions after
						// this went unseen.
						closedEarly = true
						mu.Unlock()
						return
					}
					if ev.Type == watch.Error {
						watchErrs = append(watchErrs, fmt.Sprint(ev.Object))
						mu.Unlock()
						continue
					}
					if n, isNode := ev.Object.(*corev1.Node); isNode {
						versions++
						for name := range n.Status.Capacity {
							seen[name] = true
						}
						for name := range had {
							if _, ok := n.Status.Capacity[name]; !ok {
								missing[name] = true
							}
							q := n.Status.Allocatable[name]
							if q.Value() < minAlloc[name] {
								minAlloc[name] = q.Value()
							}
						}
					}
					mu.Unlock()
				}
			}
		}()

		begin := time.Now()
		patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":%q,"image":%q}]}}}}`, sdmName, daemonImage("cluster-2"))
		if _, err := c.cs.AppsV1().DaemonSets(sdmNamespace).Patch(ctx, sdmName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		pod := c.waitDaemonPodReady(t, daemonImage("cluster-2"))
		ds := c.waitRolledOut(t)
		t.Logf("API: DaemonSet %s/%s updatedNumberScheduled=%d numberReady=%d numberAvailable=%d; pod %s image=%s ready; rolled out in %s",
			sdmNamespace, sdmName, ds.Status.UpdatedNumberScheduled, ds.Status.NumberReady, ds.Status.NumberAvailable, pod.Name, pod.Spec.Containers[0].Image, time.Since(begin).Round(time.Millisecond))
		// The new daemon serves: every resource healthy again.
		for name := range had {
			q := n0.Status.Allocatable[name]
			c.waitAllocatable(t, string(name), q.Value())
		}
		// And it sees a device plugged after it started.
		devD := c.hotAdd(t)
		c.waitAllocatable(t, zram(devD), 1)
		// A watch sends every version in order from n0's: once it has
		// delivered the one that carries zram(devD), plugged after the
		// rollout, it has delivered every version written during the
		// update. Without that the checks below would hold for a watch
		// that saw nothing.
		c.poll(t, "the Node watch to deliver "+zram(devD), func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return seen[corev1.ResourceName(zram(devD))] || closedEarly, fmt.Sprintf("%d versions seen", versions)
		})
		close(stopWatch)
		<-watchDone
		if closedEarly || len(watchErrs) > 0 || !seen[corev1.ResourceName(zram(devD))] {
			t.Fatalf("the Node watch did not cover the rolling update (%d versions seen, closed early %v, errors %q): the capacity check below would prove nothing", versions, closedEarly, watchErrs)
		}

		for name := range had {
			if missing[name] {
				t.Errorf("%s left the node's capacity during the rolling update", name)
			}
		}
		t.Logf("API: during the update no resource left capacity (%d watched, %d Node versions seen); lowest allocatable seen: %s", len(had), versions, fmtMin(minAlloc))
		t.Logf("API: new daemon: zram%d hot-added after the update is allocatable", devD)
		for _, name := range devicePods {
			p, err := c.cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			b := before[name]
			st, bst := p.Status.ContainerStatuses[0], b.Status.ContainerStatuses[0]
			t.Logf("API: pod default/%s phase=%s restarts=%d containerID same=%v uid same=%v", name, p.Status.Phase, st.RestartCount, st.ContainerID == bst.ContainerID, p.UID == b.UID)
			if p.UID != b.UID || p.Status.Phase != corev1.PodRunning || st.RestartCount != bst.RestartCount || st.ContainerID != bst.ContainerID || st.State.Running == nil {
				t.Errorf("device pod %s did not keep running through the update", name)
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("5-dra", c.stepDRA)
}

func deref[T any](p *T) T {
	var z T
	if p == nil {
		return z
	}
	return *p
}

func zram(n int) string { return fmt.Sprintf("%szram%d", prefix, n) }

func resources(l corev1.ResourceList) string {
	var s []string
	for name, q := range l {
		s = append(s, fmt.Sprintf("%s=%s", name, q.String()))
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

func fmtMin(m map[corev1.ResourceName]int64) string {
	var s []string
	for name, v := range m {
		s = append(s, fmt.Sprintf("%s=%d", name, v))
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

func (c *cluster) importDaemonImage(dist, tag string) error {
	return c.importImage(daemonImage(tag), []imageFile{
		{path: "smarter-device-manager", src: filepath.Join(dist, "smarter-device-manager"), mode: 0o755},
		{path: "smarter-device-manager-dra", src: filepath.Join(dist, "smarter-device-manager-dra"), mode: 0o755},
	}, []string{"root"}, []string{"/smarter-device-manager"}, "/root")
}

// buildProbeImage builds cmd/devprobe static and imports it FROM scratch.
func (c *cluster) buildProbeImage() error {
	out := filepath.Join(baseDir, "devprobe")
	if err := goBuild(out, "./cmd/devprobe"); err != nil {
		return err
	}
	return c.importImage(probeImage, []imageFile{{path: "devprobe", src: out, mode: 0o755}}, nil, []string{"/devprobe"}, "")
}

func (c *cluster) hotAdd(t *testing.T) int {
	t.Helper()
	n, err := hotAdd()
	if err != nil {
		t.Fatal(err)
	}
	c.zram = append(c.zram, n)
	c.saveZram()
	return n
}

func (c *cluster) forgetZram(n int) {
	for i, z := range c.zram {
		if z == n {
			c.zram = append(c.zram[:i], c.zram[i+1:]...)
			c.saveZram()
			return
		}
	}
}

func (c *cluster) node(t *testing.T) *corev1.Node {
	t.Helper()
	n, err := c.cs.CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// poll calls f until it says done, the kubelet exits or converge passes.
func (c *cluster) poll(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(converge)
	last := ""
	for time.Now().Before(deadline) {
		done, state := f()
		if done {
			return
		}
		last = state
		if k := c.kubelet(); k != nil && k.exited() {
			t.Fatalf("%s: the kubelet exited: %v\n%s", what, k.err, k.tail(40))
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not after %s; last seen: %s", what, converge, last)
}

func (c *cluster) waitAllocatable(t *testing.T, name string, want int64) *corev1.Node {
	t.Helper()
	var n *corev1.Node
	c.poll(t, fmt.Sprintf("node allocatable %s=%d", name, want), func() (bool, string) {
		n = c.node(t)
		q, ok := n.Status.Allocatable[corev1.ResourceName(name)]
		return ok && q.Value() == want, resources(n.Status.Allocatable)
	})
	return n
}

func (c *cluster) waitDaemonPodReady(t *testing.T, image string) *corev1.Pod {
	t.Helper()
	return c.waitDaemonPodReadyWith(t, func(p *corev1.Pod) bool { return p.Spec.Containers[0].Image == image })
}

// waitDaemonPodReadyWith waits for a Ready pod of the DaemonSet that is
// not being deleted and that want accepts.
func (c *cluster) waitDaemonPodReadyWith(t *testing.T, want func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var ready *corev1.Pod
	c.poll(t, "the DaemonSet's pod Ready", func() (bool, string) {
		pods, err := c.cs.CoreV1().Pods(sdmNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + sdmName})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		for i := range pods.Items {
			p := &pods.Items[i]
			states = append(states, podState(p))
			if p.DeletionTimestamp == nil && want(p) && podReady(p) {
				ready = p
				return true, ""
			}
		}
		return false, strings.Join(states, "; ")
	})
	return ready
}

func (c *cluster) waitRolledOut(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	var ds *appsv1.DaemonSet
	c.poll(t, "the DaemonSet rolled out", func() (bool, string) {
		var err error
		ds, err = c.cs.AppsV1().DaemonSets(sdmNamespace).Get(context.Background(), sdmName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		s := ds.Status
		return s.ObservedGeneration >= ds.Generation && s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberReady == s.DesiredNumberScheduled && s.NumberUnavailable == 0 && s.DesiredNumberScheduled == 1,
			fmt.Sprintf("%+v", s)
	})
	return ds
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podState(p *corev1.Pod) string {
	s := fmt.Sprintf("%s %s", p.Name, p.Status.Phase)
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Waiting != nil {
			s += " waiting:" + cs.State.Waiting.Reason + " " + cs.State.Waiting.Message
		}
		if cs.State.Terminated != nil {
			s += fmt.Sprintf(" terminated:%s(%d)", cs.State.Terminated.Reason, cs.State.Terminated.ExitCode)
		}
	}
	for _, cond := range p.Status.Conditions {
		if cond.Status != corev1.ConditionTrue {
			s += fmt.Sprintf(" %s=%s(%s %s)", cond.Type, cond.Status, cond.Reason, cond.Message)
		}
	}
	return s
}

func probePod(name string, dev int, uid *int64) *corev1.Pod {
	res := corev1.ResourceName(zram(dev))
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			HostNetwork:                   true,
			AutomountServiceAccountToken:  new(false),
			TerminationGracePeriodSeconds: new(int64(5)),
			Containers: []corev1.Container{{
				Name:            "probe",
				Image:           probeImage,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{fmt.Sprintf("zram%d", dev)},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{res: resource.MustParse("1")},
					Limits:   corev1.ResourceList{res: resource.MustParse("1")},
				},
			}},
		},
	}
	if uid != nil {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: uid, RunAsGroup: uid}
	}
	return p
}

// runProbePod creates a device pod, waits until it runs and checks, from
// its log read through the API server, that it opened its device.
func (c *cluster) runProbePod(t *testing.T, name string, dev int, uid *int64) {
	t.Helper()
	ctx := context.Background()
	c.waitServiceAccount(t, "default")
	begin := time.Now()
	if _, err := c.cs.CoreV1().Pods("default").Create(ctx, probePod(name, dev, uid), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := c.waitPodRunning(t, name)
	t.Logf("API: pod default/%s phase=%s node=%s requests %s=1 runAsUser=%d; Running %s after create", name, p.Status.Phase, p.Spec.NodeName, zram(dev), deref(uid), time.Since(begin).Round(time.Millisecond))
	c.checkProbeLog(t, name, dev, deref(uid))
}

func (c *cluster) waitServiceAccount(t *testing.T, ns string) {
	t.Helper()
	c.poll(t, "service account "+ns+"/default", func() (bool, string) {
		_, err := c.cs.CoreV1().ServiceAccounts(ns).Get(context.Background(), "default", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

func (c *cluster) waitPodRunning(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	c.poll(t, "pod "+name+" Running", func() (bool, string) {
		var err error
		p, err = c.cs.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			t.Fatalf("pod %s ended: %s", name, podState(p))
		}
		return p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil, podState(p)
	})
	return p
}

func (c *cluster) waitUnschedulable(t *testing.T, name string) corev1.PodCondition {
	t.Helper()
	var cond corev1.PodCondition
	c.poll(t, "pod "+name+" Unschedulable", func() (bool, string) {
		p, err := c.cs.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if p.Spec.NodeName != "" {
			t.Fatalf("pod %s was bound to %s with its device unplugged", name, p.Spec.NodeName)
		}
		for _, cd := range p.Status.Conditions {
			if cd.Type == corev1.PodScheduled && cd.Status == corev1.ConditionFalse && cd.Reason == corev1.PodReasonUnschedulable {
				cond = cd
				return true, ""
			}
		}
		return false, podState(p)
	})
	return cond
}

// probeReport is one line the device pod writes (cmd/devprobe).
type probeReport struct {
	Path  string `json:"path"`
	UID   int    `json:"uid"`
	GID   int    `json:"gid"`
	Errno string `json:"errno"`
}

// checkProbeLog reads the pod's log through the API server (what kubectl
// logs does: the API server asks the kubelet) and checks the pod opened
// its device as the user it runs as.
func (c *cluster) checkProbeLog(t *testing.T, name string, dev int, uid int64) {
	t.Helper()
	var rep probeReport
	var raw string
	c.poll(t, "pod "+name+"'s log", func() (bool, string) {
		b, err := c.cs.CoreV1().Pods("default").GetLogs(name, &corev1.PodLogOptions{}).DoRaw(context.Background())
		if err != nil {
			if apierrors.IsNotFound(err) {
				return false, err.Error()
			}
			return false, err.Error()
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			if json.Unmarshal(sc.Bytes(), &rep) == nil && rep.Path != "" {
				raw = sc.Text()
				return true, ""
			}
		}
		return false, "log: " + string(b)
	})
	t.Logf("API: pod default/%s log: %s", name, raw)
	if want := fmt.Sprintf("/dev/zram%d", dev); rep.Path != want || rep.Errno != "" || int64(rep.UID) != uid {
		t.Errorf("pod %s: opened %s as uid %d: %q; want %s opened as uid %d", name, rep.Path, rep.UID, rep.Errno, want, uid)
	}
}

// checkConfined asserts what the manifest's securityContext promises on
// the daemon's real process, as runc set it up, not on the pod's spec (which
// only echoes what was applied): root (runAsUser 0, for the kubelet's
// root-owned plugin directory), no capability in any set (drop ALL), no new
// privileges, a seccomp filter (RuntimeDefault), and a root file system
// that refuses a write (readOnlyRootFilesystem).
func (c *cluster) checkConfined(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	out, err := c.ctr("task", "ls")
	if err != nil {
		t.Fatal(err)
	}
	pid := 0
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			pid, _ = strconv.Atoi(f[1])
		}
	}
	if pid <= 1 {
		t.Fatalf("no task for the daemon's container %s in ctr task ls:\n%s", id, out)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			status[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	want := map[string]string{
		"Uid": "0 0 0 0", "Gid": "0 0 0 0",
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapBnd": "0000000000000000", "CapAmb": "0000000000000000",
		"NoNewPrivs": "1", "Seccomp": "2",
	}
	for k, v := range want {
		if status[k] != v {
			t.Errorf("the daemon's process (PID %d): %s is %q, want %q", pid, k, status[k], v)
		}
	}
	// Through /proc/PID/root the write goes to the container's own root
	// mount, so its read-only flag answers.
	probe := fmt.Sprintf("/proc/%d/root/sdm-cluster-write-probe", pid)
	err = os.WriteFile(probe, []byte("x"), 0o644)
	if err == nil {
		_ = os.Remove(probe)
		t.Errorf("the daemon's root file system took a write (%s); the manifest makes it read-only", probe)
	} else if !errors.Is(err, syscall.EROFS) {
		t.Errorf("a write to the daemon's root file system: %v, want EROFS", err)
	}
	t.Logf("host: daemon PID %d: Uid %s, CapEff %s, CapBnd %s, NoNewPrivs %s, Seccomp %s; a write to its root: %v",
		pid, status["Uid"], status["CapEff"], status["CapBnd"], status["NoNewPrivs"], status["Seccomp"], err)
}
