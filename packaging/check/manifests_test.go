package check

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// objects is what one rendering (a file, kustomize build, helm template)
// holds, by kind; each kind appears at most once in what we ship.
type objects struct {
	Namespace  *v1.Namespace
	ConfigMap  *v1.ConfigMap
	DaemonSet  *appsv1.DaemonSet
	PodMonitor *monitoringv1.PodMonitor
	draObjects // DRA mode's (dra_test.go)
}

// decodeStrict decodes every document of a multi-document YAML stream
// into its API type, strictly: a misspelt or misplaced field fails here,
// not on a user's cluster.
func decodeStrict(t *testing.T, what string, raw []byte) objects {
	t.Helper()
	var objs objects
	for i, doc := range splitDocs(raw) {
		var meta struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s document %d: %v", what, i, err)
		}
		var obj any
		switch meta.Kind {
		case "Namespace":
			objs.Namespace = &v1.Namespace{}
			obj = objs.Namespace
		case "ConfigMap":
			objs.ConfigMap = &v1.ConfigMap{}
			obj = objs.ConfigMap
		case "DaemonSet":
			objs.DaemonSet = &appsv1.DaemonSet{}
			obj = objs.DaemonSet
		case "PodMonitor":
			objs.PodMonitor = &monitoringv1.PodMonitor{}
			obj = objs.PodMonitor
		case "Kustomization":
			// kustomize build reads these (TestKustomize).
			continue
		default:
			if obj = objs.draObject(meta.Kind); obj != nil {
				break
			}
			t.Fatalf("%s document %d: kind %q has no decoder here; add one", what, i, meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Errorf("%s document %d (%s): %v", what, i, meta.Kind, err)
		}
	}
	return objs
}

// splitDocs splits a YAML stream at its "---" lines, keeping each
// document's final newline (a block scalar's value depends on it) and
// dropping empty documents (helm template starts with one).
func splitDocs(raw []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	flush := func() {
		if len(bytes.TrimSpace(stripComments(cur))) > 0 {
			docs = append(docs, cur)
		}
		cur = nil
	}
	for _, line := range bytes.SplitAfter(raw, []byte("\n")) {
		if string(bytes.TrimRight(line, " \r\n")) == "---" {
			flush()
			continue
		}
		cur = append(cur, line...)
	}
	flush()
	return docs
}

func stripComments(d []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(d, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// plain is the all-in-one manifest, the reference the other renderings
// are compared with.
func plain(t *testing.T) objects {
	t.Helper()
	const file = "../kubernetes/smarter-device-manager.yaml"
	objs := decodeStrict(t, file, readFile(t, file))
	if objs.Namespace == nil || objs.ConfigMap == nil || objs.DaemonSet == nil {
		t.Fatalf("%s: want a Namespace, a ConfigMap and a DaemonSet, got %+v", file, objs)
	}
	return objs
}

func TestManifestsDecodeStrictly(t *testing.T) {
	files, err := filepath.Glob("../kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests found: %v", err)
	}
	for _, file := range files {
		objs := decodeStrict(t, file, readFile(t, file))
		if objs.DaemonSet != nil {
			checkDaemonSet(t, file, objs.DaemonSet)
		}
		if objs.PodMonitor != nil {
			checkPodMonitor(t, file, objs.PodMonitor, plain(t).DaemonSet)
		}
	}
}

// checkDaemonSet asserts what the daemon needs to work and what the
// brief promises operators.
func checkDaemonSet(t *testing.T, what string, ds *appsv1.DaemonSet) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Errorf("%s: hostNetwork must be true: uevents live in the host network namespace", what)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("%s: priorityClassName %q, want system-node-critical", what, spec.PriorityClassName)
	}
	if spec.NodeSelector["smarter-device-manager"] != "enabled" {
		t.Errorf("%s: node selector %v lacks the old daemon's smarter-device-manager=enabled", what, spec.NodeSelector)
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("%s: selector %s=%s does not select the pod template (labels %v)", what, k, v, ds.Spec.Template.Labels)
		}
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", what, len(spec.Containers))
	}
	c := spec.Containers[0]
	mem := c.Resources.Limits[v1.ResourceMemory]
	// BENCHMARKS.md: ~23 MiB resident with 100 resources.
	if mem.Cmp(resource.MustParse("32Mi")) < 0 {
		t.Errorf("%s: memory limit %s is below the measured footprint with headroom", what, mem.String())
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation must be false", what)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []v1.Capability{"ALL"}) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != v1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: want a read-only root, all capabilities dropped and seccomp RuntimeDefault, got %+v", what, sc)
	}
	mounts := map[string]v1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	want := map[string]bool{"/dev": true, "/sys": true, "/run/udev": true, "/root/config": true, "/var/lib/kubelet/device-plugins": false}
	if isDRA(c) {
		want = draMounts(t, what, ds)
	}
	for path, ro := range want {
		if m, ok := mounts[path]; !ok || m.ReadOnly != ro {
			t.Errorf("%s: mount of %s missing or readOnly != %v", what, path, ro)
		}
	}
	// The kubelet bind-mounts its termination message file at this path;
	// under a read-only mount (the host's /dev) runc cannot create it and
	// the container never starts (found by the cluster suite).
	tmp := c.TerminationMessagePath
	if tmp == "" {
		tmp = v1.TerminationMessagePathDefault
	}
	for path, m := range mounts {
		if m.ReadOnly && (tmp == path || strings.HasPrefix(tmp, strings.TrimSuffix(path, "/")+"/")) {
			t.Errorf("%s: terminationMessagePath %s lies under the read-only mount %s", what, tmp, path)
		}
	}
	var metricsPort int32
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
	}
	if !slices.Contains(c.Args, fmt.Sprintf("--metrics-addr=:%d", metricsPort)) {
		t.Errorf("%s: args %q do not serve metrics on the port named metrics (%d)", what, c.Args, metricsPort)
	}
	for name, p := range map[string]*v1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		want := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[name]
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s: %s probe %+v, want GET %s on the metrics port", what, name, p, want)
		}
	}
}

func checkPodMonitor(t *testing.T, what string, pm *monitoringv1.PodMonitor, ds *appsv1.DaemonSet) {
	t.Helper()
	for k, v := range pm.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("%s: PodMonitor selector %s=%s does not select the DaemonSet's pods (%v)", what, k, v, ds.Spec.Template.Labels)
		}
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port == nil || *pm.Spec.PodMetricsEndpoints[0].Port != "metrics" {
		t.Errorf("%s: PodMonitor endpoints %+v, want the port named metrics", what, pm.Spec.PodMetricsEndpoints)
	}
	if pm.Namespace != ds.Namespace {
		t.Errorf("%s: PodMonitor in namespace %q, DaemonSet in %q", what, pm.Namespace, ds.Namespace)
	}
}

// repoRoot is the repository, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// tool builds a pinned tool from tools/<name> (its go.mod and go.sum fix
// the version) into bin/ and returns its path; the build is cached.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	root := repoRoot(t)
	bin := filepath.Join(root, "bin", name)
	cmd := exec.Command(goTool(), "build", "-o", bin, pkg)
	cmd.Dir = filepath.Join(root, "tools", name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s from tools/%s: %v\n%s", name, name, err, out)
	}
	return bin
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

// daemon builds the daemon once per test that needs it (cached by go).
func daemon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "smarter-device-manager")
	cmd := exec.Command(goTool(), "build", "-o", bin, "./cmd/smarter-device-manager")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the daemon: %v\n%s", err, out)
	}
	return bin
}

// checkRules runs the daemon's own `check` on every rule file of a
// rendered ConfigMap: a chart value that renders a broken file fails here.
func checkRules(t *testing.T, daemonBin, what string, cm *v1.ConfigMap) {
	t.Helper()
	dir := t.TempDir()
	for name, rules := range cm.Data {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(rules), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(daemonBin, "check", "--config", file).CombinedOutput(); err != nil {
			t.Errorf("%s: ConfigMap key %s does not pass check: %v\n%s", what, name, err, out)
		}
	}
}

// withoutPluginHostPath returns a copy of the pod spec with the device-plugins
// volume's host path and the volume order normalised, and that path.
func withoutPluginHostPath(t *testing.T, spec v1.PodSpec) (v1.PodSpec, string) {
	t.Helper()
	spec = *spec.DeepCopy()
	var path string
	for _, v := range spec.Volumes {
		if v.Name == "device-plugins" && v.HostPath != nil {
			path = v.HostPath.Path
			v.HostPath.Path = ""
		}
	}
	slices.SortFunc(spec.Volumes, func(a, b v1.Volume) int { return strings.Compare(a.Name, b.Name) })
	return spec, path
}

// The kustomize base renders exactly the all-in-one manifest; each overlay
// differs from it only in the host path of kubelet's plugin directory.
func TestKustomize(t *testing.T) {
	kustomize := tool(t, "kustomize", "sigs.k8s.io/kustomize/kustomize/v5")
	ref := plain(t)
	refSpec, refPath := withoutPluginHostPath(t, ref.DaemonSet.Spec.Template.Spec)
	if refPath != "/var/lib/kubelet/device-plugins" {
		t.Errorf("base plugin dir %q", refPath)
	}
	for dir, wantPath := range map[string]string{
		"../kubernetes":          "/var/lib/kubelet/device-plugins",
		"../overlays/k3s-legacy": "/var/lib/rancher/k3s/agent/kubelet/device-plugins",
		"../overlays/microk8s":   "/var/lib/kubelet/device-plugins", // the kubelet's constant: docs/deployment.md
	} {
		objs := decodeStrict(t, "kustomize build "+dir, run(t, kustomize, "build", dir))
		if objs.DaemonSet == nil || objs.ConfigMap == nil || objs.Namespace == nil {
			t.Fatalf("kustomize build %s: missing objects: %+v", dir, objs)
		}
		checkDaemonSet(t, dir, objs.DaemonSet)
		spec, path := withoutPluginHostPath(t, objs.DaemonSet.Spec.Template.Spec)
		if path != wantPath {
			t.Errorf("%s: plugin dir host path %q, want %q", dir, path, wantPath)
		}
		if !reflect.DeepEqual(spec, refSpec) {
			t.Errorf("%s: the pod spec differs from the base's in more than the plugin dir", dir)
		}
		if !reflect.DeepEqual(objs.ConfigMap.Data, ref.ConfigMap.Data) {
			t.Errorf("%s: the rules differ from the base's", dir)
		}
	}
}

func helmTemplate(t *testing.T, helm string, args ...string) objects {
	t.Helper()
	args = append([]string{"template", "smarter-device-manager", "../helm/smarter-device-manager", "--namespace", "smarter-device-manager"}, args...)
	return decodeStrict(t, "helm "+strings.Join(args, " "), run(t, helm, args...))
}

// The chart passes helm lint, and with its default values renders the same
// ConfigMap rules and the same pod spec as the all-in-one manifest; values
// for another kubelet directory (old k3s), the PodMonitor, readiness on hardware and TOML rules render
// what they say.
func TestHelmChart(t *testing.T) {
	helm := tool(t, "helm", "helm.sh/helm/v3/cmd/helm")
	run(t, helm, "lint", "--strict", "../helm/smarter-device-manager")
	daemonBin := daemon(t)

	ref := plain(t)
	objs := helmTemplate(t, helm)
	if objs.ConfigMap == nil || objs.DaemonSet == nil || objs.PodMonitor != nil {
		t.Fatalf("default values: want a ConfigMap and a DaemonSet and no PodMonitor, got %+v", objs)
	}
	checkDaemonSet(t, "helm template", objs.DaemonSet)
	checkRules(t, daemonBin, "helm template", objs.ConfigMap)
	if !reflect.DeepEqual(objs.ConfigMap.Data, ref.ConfigMap.Data) {
		t.Errorf("default rules differ from packaging/kubernetes'")
	}
	// The image differs on purpose: the chart's tag is its appVersion.
	var chart struct{ AppVersion string }
	if err := yaml.Unmarshal(readFile(t, "../helm/smarter-device-manager/Chart.yaml"), &chart); err != nil {
		t.Fatal(err)
	}
	if c := objs.DaemonSet.Spec.Template.Spec.Containers[0]; c.Image != "smarter-device-manager:"+chart.AppVersion {
		t.Errorf("image %q, want the chart's appVersion as the tag", c.Image)
	}
	got, want := objs.DaemonSet.Spec.Template.Spec.DeepCopy(), ref.DaemonSet.Spec.Template.Spec.DeepCopy()
	got.Containers[0].Image, want.Containers[0].Image = "", ""
	if !reflect.DeepEqual(got, want) {
		gy, _ := yaml.Marshal(got)
		wy, _ := yaml.Marshal(want)
		t.Errorf("the chart's pod spec differs from packaging/kubernetes':\nchart:\n%s\nmanifest:\n%s", gy, wy)
	}
	for _, o := range []struct{ kind, name, ns string }{
		{"ConfigMap", objs.ConfigMap.Name, objs.ConfigMap.Namespace},
		{"DaemonSet", objs.DaemonSet.Name, objs.DaemonSet.Namespace},
	} {
		if o.name != "smarter-device-manager" || o.ns != "smarter-device-manager" {
			t.Errorf("%s %s/%s, want smarter-device-manager/smarter-device-manager", o.kind, o.ns, o.name)
		}
	}

	toml := "version = \"v1\"\n\n[[rule]]\nmatch = \"^ttyUSB[0-9]+$\"\n"
	objs = helmTemplate(t, helm,
		"--set", "kubeletDir=/var/lib/rancher/k3s/agent/kubelet",
		"--set", "metrics.podMonitor.enabled=true",
		"--set", "require={smarter-devices/ttyUSB0}",
		"--set", "rulesFile=rules.toml",
		"--set-string", "rules="+toml,
		"--set", "image.repository=registry.example/sdm,image.tag=v9")
	if objs.PodMonitor == nil {
		t.Fatal("metrics.podMonitor.enabled rendered no PodMonitor")
	}
	checkDaemonSet(t, "helm template (old k3s values)", objs.DaemonSet)
	checkPodMonitor(t, "helm template", objs.PodMonitor, objs.DaemonSet)
	checkRules(t, daemonBin, "helm template (TOML rules)", objs.ConfigMap)
	if objs.ConfigMap.Data["rules.toml"] != toml {
		t.Errorf("rules.toml in the ConfigMap: %q, want %q", objs.ConfigMap.Data["rules.toml"], toml)
	}
	c := objs.DaemonSet.Spec.Template.Spec.Containers[0]
	for _, a := range []string{"--config=/root/config/rules.toml", "--require=smarter-devices/ttyUSB0"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %q lack %s", c.Args, a)
		}
	}
	if c.Image != "registry.example/sdm:v9" {
		t.Errorf("image %q", c.Image)
	}
	if _, path := withoutPluginHostPath(t, objs.DaemonSet.Spec.Template.Spec); path != "/var/lib/rancher/k3s/agent/kubelet/device-plugins" {
		t.Errorf("kubeletDir: plugin dir host path %q", path)
	}
}
