package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const draDriver = "device-manager.smarter-project.github.io"

// The rules of step 5: zram devices, and evict_on_unplug (DRA mode only:
// a NoExecute taint on an unplugged device) in the versioned format, which
// the legacy list the shipped ConfigMap uses cannot express.
const draRules = `version: v1
rules:
  - match: ^zram[0-9]+$
    evict_on_unplug: true
`

// stepDRA is issue 15's step 5: the DRA overlay (packaging/overlays/dra,
// rendered by the pinned kustomize) applied over the running DaemonSet,
// ResourceSlices, a pod whose ResourceClaimTemplate selects its device by
// attribute, and its eviction when the device is unplugged.
func (c *cluster) stepDRA(t *testing.T) {
	ctx := context.Background()
	kustomize := filepath.Join("..", "bin", "kustomize")
	if _, err := os.Stat(kustomize); err != nil {
		t.Fatal("no bin/kustomize: make e2e-cluster builds it from tools/kustomize")
	}
	// What kube-proxy would do for the driver's pod: its in-cluster config
	// dials the kubernetes Service, 10.96.0.1:443. The address goes on lo
	// (a route to it on any machine), and a DNAT rule in the host's OUTPUT
	// chain, which a hostNetwork pod's packets pass, sends it to the API
	// server's own port, 443 or whatever free port it had to take.
	if out, err := exec.Command("ip", "addr", "add", serviceIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add %s/32 dev lo: %v: %s", serviceIP, err, out)
	}
	c.serviceIPOnLo = true
	ip := hostIP()
	if ip == "" {
		t.Fatal("no address of this host for the kubernetes Service's DNAT rule")
	}
	rule := serviceDNATRule(fmt.Sprintf("%s:%d", ip, c.apiPort))
	if out, err := exec.Command("iptables", append([]string{"-t", "nat", "-A"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables: the kubernetes Service's DNAT rule: %v: %s", err, out)
	}
	c.serviceDNAT = true
	if conn, err := net.DialTimeout("tcp", serviceIP+":443", 5*time.Second); err != nil {
		t.Fatalf("the kubernetes Service's address: %v", err)
	} else {
		conn.Close()
	}
	t.Logf("host: %s:443 reaches the API server at %s:%d (DNAT, kube-proxy's part)", serviceIP, ip, c.apiPort)

	out, err := exec.Command(kustomize, "build", filepath.Join("..", "packaging", "overlays", "dra")).Output()
	if err != nil {
		t.Fatalf("kustomize build packaging/overlays/dra: %v", err)
	}
	objs, err := decodeManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := forCluster(objs, daemonImage("cluster-2"), ""); err != nil {
		t.Fatal(err)
	}
	if err := setRules(objs, draRules); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := c.apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	pod := c.waitDaemonPodReadyWith(t, func(p *corev1.Pod) bool {
		for _, e := range p.Spec.Containers[0].Env {
			if e.Name == "SMARTER_DEVICE_MANAGER_MODE" && e.Value == "dra" {
				return true
			}
		}
		return false
	})
	t.Logf("API: DaemonSet pod %s in DRA mode Ready %s after apply (serviceAccount %s)", pod.Name, time.Since(begin).Round(time.Millisecond), pod.Spec.ServiceAccountName)

	devE := c.hotAdd(t)
	path := fmt.Sprintf("/dev/zram%d", devE)
	var dev resourcev1.Device
	var slice string
	c.poll(t, "a ResourceSlice device for "+path, func() (bool, string) {
		l, err := c.cs.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, s := range l.Items {
			if s.Spec.Driver != draDriver {
				continue
			}
			for _, d := range s.Spec.Devices {
				seen = append(seen, d.Name)
				if strAttr(d, "path") == path {
					dev, slice = d, s.Name
					return true, ""
				}
			}
		}
		return false, "devices: " + strings.Join(seen, " ")
	})
	t.Logf("API: ResourceSlice %s (driver %s, node %s): device %s path=%s resource=%s taints=%d", slice, draDriver, nodeName, dev.Name, path, strAttr(dev, "resource"), len(dev.Taints))

	if _, err := c.cs.ResourceV1().ResourceClaimTemplates("default").Create(ctx, pathClaimTemplate("zram-by-path", "zram", path), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := probePod("devprobe-dra", devE, nil)
	p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "zram"}}}
	p.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "zram", ResourceClaimTemplateName: new("zram-by-path")}}
	begin = time.Now()
	if _, err := c.cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running := c.waitPodRunning(t, "devprobe-dra")
	claim := ""
	for _, s := range running.Status.ResourceClaimStatuses {
		claim = deref(s.ResourceClaimName)
	}
	rc, err := c.cs.ResourceV1().ResourceClaims("default").Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if rc.Status.Allocation != nil {
		for _, r := range rc.Status.Allocation.Devices.Results {
			got = append(got, r.Driver+"/"+r.Pool+"/"+r.Device)
		}
	}
	t.Logf("API: pod default/devprobe-dra phase=%s %s after create; claim %s allocated %v", running.Status.Phase, time.Since(begin).Round(time.Millisecond), claim, got)
	if len(got) != 1 || !strings.HasSuffix(got[0], "/"+dev.Name) {
		t.Errorf("claim %s allocated %v; want the device %s", claim, got, dev.Name)
	}
	c.checkProbeLog(t, "devprobe-dra", devE, 0)

	// Unplug: the driver taints the device NoExecute; Kubernetes evicts.
	if err := hotRemove(devE); err != nil {
		t.Fatal(err)
	}
	c.forgetZram(devE)
	begin = time.Now()
	var taint resourcev1.DeviceTaint
	c.poll(t, "a NoExecute taint on "+dev.Name, func() (bool, string) {
		l, err := c.cs.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, s := range l.Items {
			for _, d := range s.Spec.Devices {
				if s.Spec.Driver == draDriver && d.Name == dev.Name {
					for _, tn := range d.Taints {
						if tn.Effect == resourcev1.DeviceTaintEffectNoExecute {
							taint = tn
							return true, ""
						}
					}
					return false, fmt.Sprintf("taints %v", d.Taints)
				}
			}
		}
		return false, "device gone from the slices"
	})
	t.Logf("API: after hot_remove: device %s taint %s=%s:%s %s later", dev.Name, taint.Key, taint.Value, taint.Effect, time.Since(begin).Round(time.Millisecond))
	var reason string
	c.poll(t, "pod devprobe-dra evicted", func() (bool, string) {
		p, err := c.cs.CoreV1().Pods("default").Get(ctx, "devprobe-dra", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			reason = "deleted"
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		for _, cd := range p.Status.Conditions {
			if cd.Type == corev1.DisruptionTarget && cd.Status == corev1.ConditionTrue {
				reason = fmt.Sprintf("DisruptionTarget reason=%s message=%q, deletionTimestamp set=%v", cd.Reason, cd.Message, p.DeletionTimestamp != nil)
				return p.DeletionTimestamp != nil, ""
			}
		}
		return false, podState(p)
	})
	t.Logf("API: pod default/devprobe-dra evicted: %s, %s after the unplug", reason, time.Since(begin).Round(time.Millisecond))
}

// pathClaimTemplate is a ResourceClaimTemplate named name whose one
// request (request) takes the device of the shipped smarter-devices class
// with that path.
func pathClaimTemplate(name, request, path string) *resourcev1.ResourceClaimTemplate {
	return &resourcev1.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: resourcev1.ResourceClaimTemplateSpec{Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{
			Requests: []resourcev1.DeviceRequest{{
				Name: request,
				Exactly: &resourcev1.ExactDeviceRequest{
					DeviceClassName: "smarter-devices",
					Selectors: []resourcev1.DeviceSelector{{CEL: &resourcev1.CELDeviceSelector{
						Expression: fmt.Sprintf(`device.attributes[%q].path == %q`, draDriver, path),
					}}},
				},
			}},
		}}},
	}
}

// strAttr is a string attribute in the driver's domain, which a slice may
// spell without the domain (the API's shorthand) or with it.
func strAttr(d resourcev1.Device, name string) string {
	for _, k := range []string{name, draDriver + "/" + name} {
		if a, ok := d.Attributes[resourcev1.QualifiedName(k)]; ok && a.StringValue != nil {
			return *a.StringValue
		}
	}
	return ""
}

// setRules replaces the rules in the manifest's ConfigMap.
func setRules(objs []*unstructured.Unstructured, rules string) error {
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == sdmName {
			return unstructured.SetNestedField(o.Object, rules, "data", "conf.yaml")
		}
	}
	return fmt.Errorf("no ConfigMap %s in the manifest", sdmName)
}

// serviceDNATRule is the OUTPUT chain rule (after -A) that sends the
// kubernetes Service's address to the API server; its comment lets a later
// run remove one that a killed run left (clearServiceDNAT).
func serviceDNATRule(to string) []string {
	return []string{"OUTPUT", "-d", serviceIP + "/32", "-p", "tcp", "--dport", "443",
		"-m", "comment", "--comment", dnatComment, "-j", "DNAT", "--to-destination", to}
}

const dnatComment = "sdm-cluster"

// clearServiceDNAT removes every OUTPUT rule of the nat table that carries
// the suite's comment: this run's at teardown, or a killed run's.
func clearServiceDNAT() error {
	out, err := exec.Command("iptables", "-t", "nat", "-S", "OUTPUT").Output()
	if err != nil {
		if _, lookErr := exec.LookPath("iptables"); lookErr != nil {
			return nil // no iptables: no rule of ours either
		}
		return fmt.Errorf("iptables -t nat -S OUTPUT: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "-A" || !strings.Contains(line, "--comment "+dnatComment+" ") {
			continue
		}
		if out, err := exec.Command("iptables", append([]string{"-t", "nat", "-D"}, f[1:]...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables -t nat -D %s: %w: %s", strings.Join(f[1:], " "), err, out)
		}
	}
	return nil
}
