package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestNodeHelmChart is docs/deployment.md's Helm install on a worker node
// (as in TestNodeReboot), with the user's own rules as the docs write it
// (`--set-file rules=my-rules.toml --set rulesFile=rules.toml`): the chart
// rendered by the pinned helm with exactly those flags (helm template is
// what helm install applies; no Tiller, no release secret here), applied
// through the API server, the node labelled as the chart's nodeSelector
// asks. It must do what the text says: the daemon's pod runs on the node,
// the rule file's device becomes allocatable there, and a pod that asks
// for it runs with the device open.
func TestNodeHelmChart(t *testing.T) {
	helm := filepath.Join("..", "bin", "helm")
	if _, err := os.Stat(helm); err != nil {
		t.Skip("SKIPPED: no bin/helm (make e2e-nodes builds it from tools/helm)")
	}
	e := setUpNodes(t, "nodes")
	c := e.c
	ctx := context.Background()

	// The user's rules: the TOML format, one rule for the device the test
	// plugs (the shipped rules name devices a test cannot add).
	rules := filepath.Join(t.TempDir(), "my-rules.toml")
	c.must(os.WriteFile(rules, []byte("version = \"v1\"\n"+zramRuleTOML), 0o644))
	out, err := exec.Command(helm, "template", "smarter-device-manager", filepath.Join("..", "packaging", "helm", "smarter-device-manager"),
		"--namespace", sdmNamespace,
		"--set", "image.repository=docker.io/library/smarter-device-manager", "--set", "image.tag=nodes",
		"--set-file", "rules="+rules, "--set", "rulesFile=rules.toml").Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	objs, err := decodeManifest(out)
	c.must(err)
	c.must(forCluster(objs, daemonImage("nodes"), "")) // imagePullPolicy Never: imported, not pulled
	// --create-namespace's part.
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sdmNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	dev := c.hotAdd(t)
	w := c.startWorker(t, e.image, e.gateway, "sdm-node-a", dev, e.tars)
	w.startKubelet(c)
	c.labelForDaemonSet(t, w)
	c.must(c.apply(ctx, objs))
	pod := c.waitDaemonPodReadyWith(t, func(p *corev1.Pod) bool { return p.Spec.NodeName == w.name })
	c.waitNodeAllocatable(t, w.name, zram(dev), 2)
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind()+"/"+o.GetName())
	}
	t.Logf("API: helm template applied (%s); daemon pod %s Ready on %s; %s=2 allocatable", strings.Join(kinds, " "), pod.Name, w.name, zram(dev))
	c.waitServiceAccount(t, "default")
	bare := workload{name: "helm-" + w.name, bare: true, w: w}
	c.ensureBarePod(t, bare)
}

// TestNodeMicroK8s is docs/deployment.md's microk8s install on two nodes
// whose kubelet runs as microk8s runs it, --root-dir=
// /var/snap/microk8s/common/var/lib/kubelet: on node A /var/lib/kubelet is
// a directory of its own (an earlier kubelet left it, so the snap's install
// hook made no link), on node B the hook's link to the snap's root. The
// overlay the docs name (packaging/overlays/microk8s, rendered by the
// pinned kustomize) is applied as written, both nodes labelled. It must do
// what the text says: the kubelet's device-plugin socket is below
// /var/lib/kubelet whatever its root, each node's device becomes
// allocatable and a pod that asks for it runs with it open. (The overlay
// used to mount the snap's directory, which on node A holds no
// kubelet.sock: the daemon never registered there.)
func TestNodeMicroK8s(t *testing.T) {
	kustomize := filepath.Join("..", "bin", "kustomize")
	if _, err := os.Stat(kustomize); err != nil {
		t.Skip("SKIPPED: no bin/kustomize (make e2e-nodes builds it from tools/kustomize)")
	}
	e := setUpNodes(t, "nodes")
	c := e.c
	ctx := context.Background()
	out, err := exec.Command(kustomize, "build", filepath.Join("..", "packaging", "overlays", "microk8s")).Output()
	if err != nil {
		t.Fatalf("kustomize build packaging/overlays/microk8s: %v", err)
	}
	objs, err := decodeManifest(out)
	c.must(err)
	c.must(forCluster(objs, daemonImage("nodes"), zramRuleShared))

	const snapRoot = "/var/snap/microk8s/common/var/lib/kubelet"
	devA, devB := c.hotAdd(t), c.hotAdd(t)
	a := c.startWorkerLayout(t, e.image, e.gateway, "sdm-node-a", devA, e.tars, kubeletLayout{root: snapRoot, varLibKubelet: "dir"})
	bn := c.startWorkerLayout(t, e.image, e.gateway, "sdm-node-b", devB, e.tars, kubeletLayout{root: snapRoot, varLibKubelet: "link"})
	for _, w := range []*worker{a, bn} {
		w.startKubelet(c)
		c.labelForDaemonSet(t, w)
	}
	c.must(c.apply(ctx, objs))
	for _, w := range []*worker{a, bn} {
		c.waitDaemonPodReadyWith(t, func(p *corev1.Pod) bool { return p.Spec.NodeName == w.name })
		c.waitNodeAllocatable(t, w.name, zram(w.dev), 2)
		// Where the kubelet put its socket: below /var/lib/kubelet, and on
		// node A nowhere in the snap's root.
		w.must("test", "-S", "/var/lib/kubelet/device-plugins/kubelet.sock")
		_, inSnap := w.exec("test", "-S", snapRoot+"/device-plugins/kubelet.sock")
		if w == a && inSnap == nil {
			t.Errorf("node %s: the kubelet's socket is in %s/device-plugins too; the test's layout is not the one it names", w.name, snapRoot)
		}
		c.waitServiceAccount(t, "default")
		c.ensureBarePod(t, workload{name: "microk8s-" + w.name, bare: true, w: w})
		t.Logf("API: %s (/var/lib/kubelet a %s): %s=2 allocatable, a pod runs with it", w.name, map[bool]string{true: "directory", false: "link"}[w == a], zram(w.dev))
	}
}
