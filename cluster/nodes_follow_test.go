package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestNodeDeviceFollows is issue 21's "two nodes, one device" in DRA mode:
// the project's DRA overlay (packaging/overlays/dra, rendered by the pinned
// kustomize) on two worker nodes (as in TestNodeReboot), the rule with
// evict_on_unplug: true. One zram device is plugged into node A; a
// Deployment's pod claims it by an attribute that names the device
// wherever it is (its path: a zram device has no serial) and lands on node
// A. The device is unplugged from node A (its node removed from A's /dev,
// a remove uevent) and plugged into node B (its node made in B's /dev, an
// add uevent): the pod is evicted (the driver's NoExecute taint) and the
// Deployment's replacement runs on node B with the device open. The time
// from the plug to the new pod running is logged (FOLLOW line).
func TestNodeDeviceFollows(t *testing.T) {
	kustomize := filepath.Join("..", "bin", "kustomize")
	if _, err := os.Stat(kustomize); err != nil {
		t.Skip("SKIPPED: no bin/kustomize (make e2e-nodes builds it from tools/kustomize)")
	}
	e := setUpNodes(t, "nodes")
	c := e.c
	if c.apiPort != 443 {
		t.Skipf("SKIPPED: the API server could not listen on 443 (the kubernetes Service's port), where the driver's pods reach it")
	}
	ctx := context.Background()

	a := c.startWorker(t, e.image, e.gateway, "sdm-node-a", -1, e.tars)
	bn := c.startWorker(t, e.image, e.gateway, "sdm-node-b", -1, e.tars)
	for _, w := range []*worker{a, bn} {
		// What kube-proxy does for the driver's pod: the kubernetes
		// Service's address (its in-cluster config) to the API server.
		w.must("iptables", "-t", "nat", "-A", "OUTPUT", "-d", serviceIP+"/32", "-p", "tcp", "--dport", "443",
			"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", e.gateway, c.apiPort))
		w.startKubelet(c)
		c.labelForDaemonSet(t, w)
	}
	out, err := exec.Command(kustomize, "build", filepath.Join("..", "packaging", "overlays", "dra")).Output()
	if err != nil {
		t.Fatalf("kustomize build packaging/overlays/dra: %v", err)
	}
	objs, err := decodeManifest(out)
	c.must(err)
	c.must(forCluster(objs, daemonImage("nodes"), ""))
	c.must(setRules(objs, draRules))
	c.must(c.apply(ctx, objs))
	c.poll(t, "the DRA driver's pod Ready on both nodes", func() (bool, string) {
		ds, err := c.cs.AppsV1().DaemonSets(sdmNamespace).Get(ctx, sdmName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return ds.Status.NumberReady == 2, fmt.Sprintf("%+v", ds.Status)
	})
	c.waitServiceAccount(t, "default")

	// The device, plugged into node A.
	dev := c.hotAdd(t)
	path := fmt.Sprintf("/dev/zram%d", dev)
	plugDev(t, a, dev)
	devA := c.waitSliceDevice(t, a.name, path, false)
	t.Logf("API: node %s's ResourceSlice has device %s (path %s)", a.name, devA.Name, path)

	if _, err := c.cs.ResourceV1().ResourceClaimTemplates("default").Create(ctx, pathClaimTemplate("follow", "dev", path), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := probePod("follow", dev, nil)
	p.Labels = map[string]string{"sdm-reboot": "follow"}
	p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "dev"}}}
	p.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "dev", ResourceClaimTemplateName: new("follow")}}
	wl, first := c.startFollower(t, p, a, dev)

	// Unplugged from node A: the driver taints it NoExecute; the pod goes.
	a.must("rm", "-f", path)
	unplugged := time.Now()
	if err := os.WriteFile(fmt.Sprintf("/sys/block/zram%d/uevent", dev), []byte("remove"), 0o200); err != nil {
		t.Fatal(err)
	}
	c.waitSliceDevice(t, a.name, path, true)
	c.poll(t, "pod "+first.Name+" evicted", func() (bool, string) {
		q, err := c.cs.CoreV1().Pods("default").Get(ctx, first.Name, metav1.GetOptions{})
		if err != nil {
			return true, ""
		}
		return q.DeletionTimestamp != nil, podState(q)
	})
	t.Logf("API: unplugged from %s: device tainted NoExecute and pod %s evicted %s later", a.name, first.Name, time.Since(unplugged).Round(time.Millisecond))

	// Plugged into node B: the replacement runs there with the device.
	plugged := time.Now()
	plugDev(t, bn, dev)
	moved := c.waitMoved(t, wl, first.Name, bn.name)
	took := time.Since(plugged)
	c.checkProbeLog(t, moved.Name, dev, 0)
	t.Logf("FOLLOW DRA, evict_on_unplug: device unplugged from %s, plugged into %s: pod %s running there with it %.1f s after the plug",
		a.name, bn.name, moved.Name, took.Seconds())
}

// plugDev gives this machine's zram device n to node w as a plug does: its
// node made in w's /dev (what devtmpfs does on a real node), then an add
// uevent for it.
func plugDev(t *testing.T, w *worker, n int) {
	t.Helper()
	mm, err := os.ReadFile(fmt.Sprintf("/sys/block/zram%d/dev", n))
	if err != nil {
		t.Fatal(err)
	}
	major, minor, _ := strings.Cut(strings.TrimSpace(string(mm)), ":")
	w.must("mknod", "-m", "0660", fmt.Sprintf("/dev/zram%d", n), "b", major, minor)
	if err := os.WriteFile(fmt.Sprintf("/sys/block/zram%d/uevent", n), []byte("add"), 0o200); err != nil {
		t.Fatal(err)
	}
}

// waitSliceDevice waits for node's ResourceSlice to have the device with
// path, untainted (tainted false) or with a NoExecute taint (true).
func (c *cluster) waitSliceDevice(t *testing.T, node, path string, tainted bool) resourcev1.Device {
	t.Helper()
	var found resourcev1.Device
	c.poll(t, fmt.Sprintf("device %s in node %s's slice (NoExecute taint: %v)", path, node, tainted), func() (bool, string) {
		l, err := c.cs.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, s := range l.Items {
			if s.Spec.Driver != draDriver || s.Spec.NodeName == nil || *s.Spec.NodeName != node {
				continue
			}
			for _, d := range s.Spec.Devices {
				seen = append(seen, fmt.Sprintf("%s(%s, %d taints)", d.Name, strAttr(d, "path"), len(d.Taints)))
				if strAttr(d, "path") != path {
					continue
				}
				noExec := false
				for _, tn := range d.Taints {
					noExec = noExec || tn.Effect == resourcev1.DeviceTaintEffectNoExecute
				}
				if noExec == tainted {
					found = d
					return true, ""
				}
			}
		}
		return false, strings.Join(seen, " ")
	})
	return found
}

// TestNodeDeviceFollowsDevicePlugin is the same move in device-plugin mode,
// where the API has no eviction: the daemon runs from the .deb on both
// nodes. The device is plugged into node A and a Deployment's pod asks for
// its resource (smarter-devices/zramN) and lands there. Unplugged from
// node A, the device turns unhealthy there (allocatable 0) and the pod
// keeps running (the kubelet never evicts for an unhealthy device); once
// it is plugged into node B, the resource is allocatable only there, and
// the pod deleted (what a user or an operator does on the unplug) is
// replaced on node B with the device open. The time from the plug to the
// new pod running is logged (FOLLOW line).
func TestNodeDeviceFollowsDevicePlugin(t *testing.T) {
	e := setUpNodes(t)
	c := e.c
	ctx := context.Background()

	a := c.startWorker(t, e.image, e.gateway, "sdm-node-a", -1, e.tars)
	bn := c.startWorker(t, e.image, e.gateway, "sdm-node-b", -1, e.tars)
	for _, w := range []*worker{a, bn} {
		w.installDeb(e.deb)
		w.startKubelet(c)
	}
	c.waitServiceAccount(t, "default")

	dev := c.hotAdd(t)
	path := fmt.Sprintf("/dev/zram%d", dev)
	plugDev(t, a, dev)
	c.waitNodeAllocatable(t, a.name, zram(dev), 2)

	p := probePod("follow", dev, nil)
	p.Labels = map[string]string{"sdm-reboot": "follow"}
	wl, first := c.startFollower(t, p, a, dev)

	a.must("rm", "-f", path)
	if err := os.WriteFile(fmt.Sprintf("/sys/block/zram%d/uevent", dev), []byte("remove"), 0o200); err != nil {
		t.Fatal(err)
	}
	c.waitNodeAllocatable(t, a.name, zram(dev), 0)
	if q, err := c.cs.CoreV1().Pods("default").Get(ctx, first.Name, metav1.GetOptions{}); err != nil || q.DeletionTimestamp != nil || q.Status.Phase != corev1.PodRunning {
		t.Errorf("device-plugin mode: pod %s after the unplug: %v %v; the kubelet does not evict for an unhealthy device, so it should still run", first.Name, err, podState(q))
	}
	t.Logf("API: unplugged from %s: %s allocatable 0 there; pod %s still running (no eviction in device-plugin mode)", a.name, zram(dev), first.Name)

	plugged := time.Now()
	plugDev(t, bn, dev)
	zero := int64(0)
	if err := c.cs.CoreV1().Pods("default").Delete(ctx, first.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	moved := c.waitMoved(t, wl, first.Name, bn.name)
	took := time.Since(plugged)
	c.checkProbeLog(t, moved.Name, dev, 0)
	t.Logf("FOLLOW device plugin: device unplugged from %s, plugged into %s, old pod deleted: pod %s running there with it %.1f s after the plug",
		a.name, bn.name, moved.Name, took.Seconds())
}

// deploymentOf is a one-replica Deployment named name of pod p (its labels
// the selector).
func deploymentOf(name string, p *corev1.Pod) *appsv1.Deployment {
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: p.Labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: p.Labels}, Spec: p.Spec},
		},
	}
}

// waitMoved waits for a pod of the workload other than old running and
// Ready on node.
func (c *cluster) waitMoved(t *testing.T, wl workload, old, node string) *corev1.Pod {
	t.Helper()
	var moved *corev1.Pod
	c.poll(t, "the Deployment's new pod running on "+node, func() (bool, string) {
		var st []string
		for _, q := range c.podsOf(t, wl) {
			st = append(st, podState(&q)+" on "+q.Spec.NodeName)
			if q.Name != old && q.Spec.NodeName == node && q.DeletionTimestamp == nil && q.Status.Phase == corev1.PodRunning && podReady(&q) {
				moved = &q
				return true, ""
			}
		}
		return false, strings.Join(st, "; ")
	})
	return moved
}

// startFollower makes pod p the one-replica Deployment "follow" and waits
// until its pod runs on node a with the device zram<dev> open.
func (c *cluster) startFollower(t *testing.T, p *corev1.Pod, a *worker, dev int) (workload, *corev1.Pod) {
	t.Helper()
	begin := time.Now()
	if _, err := c.cs.AppsV1().Deployments("default").Create(context.Background(), deploymentOf("follow", p), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wl := workload{name: "follow", w: &worker{node: a.node, name: a.name, dev: dev}}
	first := c.waitWorkload(t, wl, "")
	if first.Spec.NodeName != a.name {
		t.Fatalf("pod %s runs on %s; the device is on %s", first.Name, first.Spec.NodeName, a.name)
	}
	t.Logf("API: pod %s runs on %s with /dev/zram%d, %s after the Deployment was created", first.Name, first.Spec.NodeName, dev, time.Since(begin).Round(time.Millisecond))
	return wl, first
}
