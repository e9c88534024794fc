package check

import (
	"fmt"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourceapi "k8s.io/api/resource/v1"
	"sigs.k8s.io/yaml"
)

// draObjects are the objects DRA mode adds.
type draObjects struct {
	ServiceAccount     *v1.ServiceAccount
	ClusterRole        *rbacv1.ClusterRole
	ClusterRoleBinding *rbacv1.ClusterRoleBinding
	Policy             *admissionv1.ValidatingAdmissionPolicy
	PolicyBinding      *admissionv1.ValidatingAdmissionPolicyBinding
	DeviceClasses      []*resourceapi.DeviceClass
}

// draObject is where decodeStrict decodes a document of kind; nil for a
// kind DRA mode does not ship.
func (o *draObjects) draObject(kind string) any {
	switch kind {
	case "ServiceAccount":
		o.ServiceAccount = &v1.ServiceAccount{}
		return o.ServiceAccount
	case "ClusterRole":
		o.ClusterRole = &rbacv1.ClusterRole{}
		return o.ClusterRole
	case "ClusterRoleBinding":
		o.ClusterRoleBinding = &rbacv1.ClusterRoleBinding{}
		return o.ClusterRoleBinding
	case "ValidatingAdmissionPolicy":
		o.Policy = &admissionv1.ValidatingAdmissionPolicy{}
		return o.Policy
	case "ValidatingAdmissionPolicyBinding":
		o.PolicyBinding = &admissionv1.ValidatingAdmissionPolicyBinding{}
		return o.PolicyBinding
	case "DeviceClass":
		dc := &resourceapi.DeviceClass{}
		o.DeviceClasses = append(o.DeviceClasses, dc)
		return dc
	}
	return nil
}

// isDRA reports whether the daemon's container runs in DRA mode.
func isDRA(c v1.Container) bool {
	return slices.ContainsFunc(c.Env, func(e v1.EnvVar) bool { return e.Name == "SMARTER_DEVICE_MANAGER_MODE" && e.Value == "dra" })
}

// draMounts checks what DRA mode needs of the pod beyond what both modes
// do, and returns the mounts it must have (path → read-only): the
// kubelet's plugin and registry directories at their host paths (the
// kubelet connects to the path the driver registers), the CDI directory
// the runtime reads, no device-plugin directory.
func draMounts(t *testing.T, what string, ds *appsv1.DaemonSet) map[string]bool {
	t.Helper()
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	if spec.ServiceAccountName == "" {
		t.Errorf("%s: DRA mode runs under no service account", what)
	}
	node := slices.IndexFunc(c.Env, func(e v1.EnvVar) bool { return e.Name == "SMARTER_DEVICE_MANAGER_NODE_NAME" })
	if node < 0 || c.Env[node].ValueFrom == nil || c.Env[node].ValueFrom.FieldRef == nil || c.Env[node].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("%s: SMARTER_DEVICE_MANAGER_NODE_NAME is not the downward API's spec.nodeName: %+v", what, c.Env)
	}
	kubeletDir := "/var/lib/kubelet"
	for _, a := range c.Args {
		if d, ok := strings.CutPrefix(a, "--kubelet-dir="); ok {
			kubeletDir = d
		}
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
		if v.Name == "device-plugins" {
			t.Errorf("%s: DRA mode mounts the device-plugin directory", what)
		}
	}
	want := map[string]bool{"/dev": true, "/sys": true, "/run/udev": true, "/root/config": true}
	for _, dir := range []string{kubeletDir + "/plugins", kubeletDir + "/plugins_registry", "/var/run/cdi"} {
		want[dir] = false
		i := slices.IndexFunc(c.VolumeMounts, func(m v1.VolumeMount) bool { return m.MountPath == dir })
		if i >= 0 && hostPaths[c.VolumeMounts[i].Name] != dir {
			t.Errorf("%s: %s is mounted from the host's %q, want the same path", what, dir, hostPaths[c.VolumeMounts[i].Name])
		}
	}
	return want
}

// driverName is the daemon's default --dra-driver-name, from its --help.
func driverName(t *testing.T, daemonBin string) string {
	t.Helper()
	out, _ := exec.Command(daemonBin, "--help").CombinedOutput()
	m := regexp.MustCompile(`-dra-driver-name string\n.*\(default "([^"]+)"\)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no default --dra-driver-name in --help:\n%s", out)
	}
	return string(m[1])
}

// checkDRA asserts what DRA mode's objects promise: the DaemonSet's
// service account bound to a role that may publish ResourceSlices, read
// claims and the node; the admission policy holding it to its node's
// slices; a class for every device of the driver, and one per extended
// resource that selects exactly that resource's devices.
func checkDRA(t *testing.T, what, driver string, objs objects) {
	t.Helper()
	o := objs.draObjects
	if objs.DaemonSet == nil || o.ServiceAccount == nil || o.ClusterRole == nil || o.ClusterRoleBinding == nil || o.Policy == nil || o.PolicyBinding == nil || len(o.DeviceClasses) == 0 {
		t.Fatalf("%s: DRA mode lacks objects: %+v", what, o)
	}
	checkDaemonSet(t, what, objs.DaemonSet)
	ds := objs.DaemonSet
	sa := o.ServiceAccount
	if ds.Spec.Template.Spec.ServiceAccountName != sa.Name || sa.Namespace != ds.Namespace {
		t.Errorf("%s: the pod's service account %q is not the one shipped (%s/%s)", what, ds.Spec.Template.Spec.ServiceAccountName, sa.Namespace, sa.Name)
	}
	crb := o.ClusterRoleBinding
	if crb.RoleRef.Kind != "ClusterRole" || crb.RoleRef.Name != o.ClusterRole.Name ||
		!slices.Contains(crb.Subjects, rbacv1.Subject{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}) {
		t.Errorf("%s: %+v does not bind %s/%s to %s", what, crb, sa.Namespace, sa.Name, o.ClusterRole.Name)
	}
	allowed := func(group, resource, verb string) bool {
		return slices.ContainsFunc(o.ClusterRole.Rules, func(r rbacv1.PolicyRule) bool {
			return slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) && len(r.ResourceNames) == 0
		})
	}
	for _, verb := range []string{"get", "list", "watch", "create", "update", "delete"} {
		if !allowed("resource.k8s.io", "resourceslices", verb) {
			t.Errorf("%s: the role may not %s ResourceSlices", what, verb)
		}
	}
	if !allowed("resource.k8s.io", "resourceclaims", "get") || !allowed("", "nodes", "get") {
		t.Errorf("%s: the role may not read ResourceClaims and Nodes: %+v", what, o.ClusterRole.Rules)
	}
	if allowed("resource.k8s.io", "resourceclaims", "update") || allowed("", "nodes", "update") {
		t.Errorf("%s: the role may change claims or nodes: %+v", what, o.ClusterRole.Rules)
	}
	user := fmt.Sprintf("system:serviceaccount:%s:%s", sa.Namespace, sa.Name)
	if len(o.Policy.Spec.MatchConditions) != 1 || !strings.Contains(o.Policy.Spec.MatchConditions[0].Expression, `"`+user+`"`) {
		t.Errorf("%s: the admission policy does not match the driver's user %s: %+v", what, user, o.Policy.Spec.MatchConditions)
	}
	if o.PolicyBinding.Spec.PolicyName != o.Policy.Name || !slices.Equal(o.PolicyBinding.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("%s: the policy binding %+v does not deny by %s", what, o.PolicyBinding.Spec, o.Policy.Name)
	}

	all, per := 0, map[string]string{}
	for _, dc := range o.DeviceClasses {
		if len(dc.Spec.Selectors) != 1 || dc.Spec.Selectors[0].CEL == nil {
			t.Errorf("%s: DeviceClass %s: selectors %+v, want one CEL expression", what, dc.Name, dc.Spec.Selectors)
			continue
		}
		expr := dc.Spec.Selectors[0].CEL.Expression
		if dc.Spec.ExtendedResourceName == nil {
			all++
			if expr != fmt.Sprintf("device.driver == %q", driver) {
				t.Errorf("%s: DeviceClass %s selects %q, want every device of %s", what, dc.Name, expr, driver)
			}
			continue
		}
		name := *dc.Spec.ExtendedResourceName
		if want := fmt.Sprintf("device.driver == %q && device.attributes[%q].resource == %q", driver, driver, name); expr != want {
			t.Errorf("%s: DeviceClass %s for %s selects\n  %s\nwant\n  %s", what, dc.Name, name, expr, want)
		}
		if prev, dup := per[name]; dup {
			t.Errorf("%s: DeviceClasses %s and %s both serve %s", what, prev, dc.Name, name)
		}
		per[name] = dc.Name
	}
	if all != 1 {
		t.Errorf("%s: %d classes for every device, want 1", what, all)
	}
}

// sortedPod is a pod spec with its volumes and the container's mounts in
// name order (kustomize and helm order them differently) and no image.
func sortedPod(spec v1.PodSpec) v1.PodSpec {
	spec = *spec.DeepCopy()
	slices.SortFunc(spec.Volumes, func(a, b v1.Volume) int { return strings.Compare(a.Name, b.Name) })
	c := &spec.Containers[0]
	slices.SortFunc(c.VolumeMounts, func(a, b v1.VolumeMount) int { return strings.Compare(a.Name, b.Name) })
	c.Image = ""
	return spec
}

// DRA mode, from the kustomize overlay and from the chart with mode=dra:
// what each ships passes checkDRA, and the two ship the same pod, role,
// policy and classes; the chart's kubeletDir moves the plugin directories
// on both sides and tells the daemon.
func TestDRAPackaging(t *testing.T) {
	kustomize := tool(t, "kustomize", "sigs.k8s.io/kustomize/kustomize/v5")
	helm := tool(t, "helm", "helm.sh/helm/v3/cmd/helm")
	daemonBin := daemon(t)
	driver := driverName(t, daemonBin)

	kust := decodeStrict(t, "kustomize build ../overlays/dra", run(t, kustomize, "build", "../overlays/dra"))
	checkDRA(t, "kustomize build ../overlays/dra", driver, kust)
	checkRules(t, daemonBin, "kustomize build ../overlays/dra", kust.ConfigMap)
	if !slices.ContainsFunc(kust.DeviceClasses, func(dc *resourceapi.DeviceClass) bool {
		return dc.Spec.ExtendedResourceName != nil && *dc.Spec.ExtendedResourceName == "smarter-devices/ttyUSB0"
	}) {
		t.Error("the DRA overlay has no DeviceClass for smarter-devices/ttyUSB0")
	}
	if !reflect.DeepEqual(kust.ConfigMap.Data, plain(t).ConfigMap.Data) {
		t.Error("the DRA overlay's rules differ from the base's")
	}

	chart := helmTemplate(t, helm, "--set", "mode=dra")
	checkDRA(t, "helm template --set mode=dra", driver, chart)
	if got, want := sortedPod(chart.DaemonSet.Spec.Template.Spec), sortedPod(kust.DaemonSet.Spec.Template.Spec); !reflect.DeepEqual(got, want) {
		gy, _ := yaml.Marshal(got)
		wy, _ := yaml.Marshal(want)
		t.Errorf("the chart's DRA pod spec differs from the overlay's:\nchart:\n%s\noverlay:\n%s", gy, wy)
	}
	if !reflect.DeepEqual(chart.ClusterRole.Rules, kust.ClusterRole.Rules) || !reflect.DeepEqual(chart.Policy.Spec, kust.Policy.Spec) {
		t.Error("the chart's DRA role or admission policy differs from the overlay's")
	}
	specs := func(o objects) map[string]resourceapi.DeviceClassSpec {
		m := map[string]resourceapi.DeviceClassSpec{}
		for _, dc := range o.DeviceClasses {
			m[dc.Name] = dc.Spec
		}
		return m
	}
	if !reflect.DeepEqual(specs(chart), specs(kust)) {
		t.Errorf("the chart's DeviceClasses %v differ from the overlay's %v", specs(chart), specs(kust))
	}

	const microk8s = "/var/snap/microk8s/common/var/lib/kubelet"
	moved := helmTemplate(t, helm, "--set", "mode=dra", "--set", "kubeletDir="+microk8s, "--set", "dra.driverName=devices.example.com",
		"--set", "dra.extendedResources={smarter-devices/net_tun}")
	checkDRA(t, "helm template (microk8s, another driver)", "devices.example.com", moved)
	args := moved.DaemonSet.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--kubelet-dir="+microk8s) || !slices.Contains(args, "--dra-driver-name=devices.example.com") {
		t.Errorf("args %q lack --kubelet-dir and --dra-driver-name", args)
	}
	if !slices.ContainsFunc(moved.DeviceClasses, func(dc *resourceapi.DeviceClass) bool { return dc.Name == "net-tun.smarter-devices" }) {
		t.Error("no DeviceClass net-tun.smarter-devices for smarter-devices/net_tun")
	}

	// The default chart renders no DRA object.
	if d := helmTemplate(t, helm).draObjects; !reflect.DeepEqual(d, draObjects{}) {
		t.Errorf("device-plugin mode renders DRA objects: %+v", d)
	}
}
