package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	"k8s.io/kubernetes/pkg/apis/apps"
	_ "k8s.io/kubernetes/pkg/apis/apps/install" // apps/v1 defaults and conversions
	appsvalidation "k8s.io/kubernetes/pkg/apis/apps/validation"
	"k8s.io/kubernetes/pkg/apis/core"
	_ "k8s.io/kubernetes/pkg/apis/core/install" // core/v1 defaults and conversions
	corevalidation "k8s.io/kubernetes/pkg/apis/core/validation"
	"k8s.io/kubernetes/pkg/apis/rbac"
	_ "k8s.io/kubernetes/pkg/apis/rbac/install" // rbac/v1 defaults and conversions
	rbacvalidation "k8s.io/kubernetes/pkg/apis/rbac/validation"
	"k8s.io/kubernetes/pkg/apis/resource"
	_ "k8s.io/kubernetes/pkg/apis/resource/install" // resource/v1 defaults and conversions
	resourcevalidation "k8s.io/kubernetes/pkg/apis/resource/validation"
	"sigs.k8s.io/yaml"
)

// What packaging/ ships passes the API server's own validation (the code
// kube-apiserver runs on create, after defaulting): strict decoding
// (packaging/check) catches a misspelt field, this catches a value the
// server would refuse — a port name over 15 characters, an invalid label,
// a hostPath type that does not exist, a probe on an unnamed port. The
// chart and the overlays are rendered with the pinned helm and kustomize;
// DRA mode's (the dra overlay, the chart with mode=dra) add a service
// account, its role and binding, and DeviceClasses (and the admission
// policy that holds the driver to its node's ResourceSlices, which is
// left to packaging/check).
func TestPackagingPassesAPIServerValidation(t *testing.T) {
	renderings := map[string][]byte{}
	for _, f := range []string{"../packaging/kubernetes/smarter-device-manager.yaml"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		renderings[f] = raw
	}
	kustomize := buildTool(t, "kustomize", "sigs.k8s.io/kustomize/kustomize/v5")
	for _, dir := range []string{"../packaging/overlays/k3s-legacy", "../packaging/overlays/microk8s", "../packaging/overlays/dra"} {
		renderings["kustomize build "+dir] = runTool(t, kustomize, "build", dir)
	}
	helm := buildTool(t, "helm", "helm.sh/helm/v3/cmd/helm")
	chart := []string{"template", "smarter-device-manager", "../packaging/helm/smarter-device-manager", "--namespace", "smarter-device-manager"}
	renderings["helm template"] = runTool(t, helm, chart...)
	renderings["helm template (values)"] = runTool(t, helm, append(chart,
		"--set", "kubeletDir=/var/snap/microk8s/common/var/lib/kubelet,require={smarter-devices/ttyUSB0},metrics.port=9999",
		"--set", "rulesFile=rules.toml", "--set-string", "rules=version = \"v1\"")...)
	renderings["helm template (mode=dra)"] = runTool(t, helm, append(chart,
		"--set", "mode=dra,kubeletDir=/var/snap/microk8s/common/var/lib/kubelet,dra.extendedResources={smarter-devices/net_tun}")...)

	for what, raw := range renderings {
		daemonSets := 0
		for i, doc := range splitYAML(raw) {
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s document %d: %v", what, i, err)
			}
			var errs []string
			switch meta.Kind {
			case "Namespace":
				var ns core.Namespace
				convert(t, what, doc, &v1.Namespace{}, &ns)
				errs = errStrings(corevalidation.ValidateNamespace(&ns))
			case "ConfigMap":
				var cm core.ConfigMap
				convert(t, what, doc, &v1.ConfigMap{}, &cm)
				errs = errStrings(corevalidation.ValidateConfigMap(&cm))
			case "DaemonSet":
				daemonSets++
				var ds apps.DaemonSet
				convert(t, what, doc, &appsv1.DaemonSet{}, &ds)
				errs = errStrings(appsvalidation.ValidateDaemonSet(&ds, corevalidation.PodValidationOptions{}))
			case "ServiceAccount":
				var sa core.ServiceAccount
				convert(t, what, doc, &v1.ServiceAccount{}, &sa)
				errs = errStrings(corevalidation.ValidateServiceAccount(&sa))
			case "ClusterRole":
				var r rbac.ClusterRole
				convert(t, what, doc, &rbacv1.ClusterRole{}, &r)
				errs = errStrings(rbacvalidation.ValidateClusterRole(&r, rbacvalidation.ClusterRoleValidationOptions{}))
			case "ClusterRoleBinding":
				var b rbac.ClusterRoleBinding
				convert(t, what, doc, &rbacv1.ClusterRoleBinding{}, &b)
				errs = errStrings(rbacvalidation.ValidateClusterRoleBinding(&b))
			case "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
				// Its validation compiles the CEL with the API server's
				// admission stack (tracing, OpenTelemetry): more of
				// Kubernetes than this module builds. packaging/check decodes
				// it strictly and checks what it matches.
				continue
			case "DeviceClass":
				var c resource.DeviceClass
				convert(t, what, doc, &resourcev1.DeviceClass{}, &c)
				errs = errStrings(resourcevalidation.ValidateDeviceClass(&c))
			case "PodMonitor":
				continue // a CRD: its schema lives in the operator (packaging/check decodes it strictly)
			default:
				t.Fatalf("%s document %d: kind %q has no validation here; add one", what, i, meta.Kind)
			}
			for _, e := range errs {
				t.Errorf("%s: %s: %s", what, meta.Kind, e)
			}
		}
		if daemonSets != 1 {
			t.Errorf("%s: %d DaemonSets, want 1", what, daemonSets)
		}
	}
}

// convert decodes a v1 object, applies the API server's defaults and
// converts it to the internal type that validation takes.
func convert(t *testing.T, what string, doc []byte, external, internal runtime.Object) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, external); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	legacyscheme.Scheme.Default(external)
	if err := legacyscheme.Scheme.Convert(external, internal, nil); err != nil {
		t.Fatalf("%s: converting %T: %v", what, external, err)
	}
}

func errStrings[E interface{ Error() string }](list []E) []string {
	var out []string
	for _, e := range list {
		out = append(out, e.Error())
	}
	return out
}

// splitYAML splits a stream at its "---" lines, dropping empty documents.
func splitYAML(raw []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	flush := func() {
		var meta struct{ Kind string }
		if yaml.Unmarshal(cur, &meta) == nil && meta.Kind != "" {
			docs = append(docs, cur)
		}
		cur = nil
	}
	for _, line := range bytes.SplitAfter(raw, []byte("\n")) {
		if strings.TrimRight(string(line), " \r\n") == "---" {
			flush()
			continue
		}
		cur = append(cur, line...)
	}
	flush()
	return docs
}

// buildTool builds a tool pinned by tools/<name>/go.mod into bin/ (go
// caches the build) and returns its path.
func buildTool(t *testing.T, name, pkg string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", name)
	cmd := exec.Command(goTool(), "build", "-o", bin, pkg)
	cmd.Dir = filepath.Join(root, "tools", name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, out)
	}
	return bin
}

func runTool(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}
