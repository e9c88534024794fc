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
