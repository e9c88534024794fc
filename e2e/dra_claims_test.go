package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	runtimespec "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/deviceclass/extendedresourcecache"
	"k8s.io/dynamic-resource-allocation/structured"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"
)

// What a scheduler does for a claim, and what a kubelet does with it,
// each through the real code: the structured allocator against the
// slices and classes in the API server, the allocation written to the
// claim's status through the API server, and the kubelet's DRA manager
// preparing the pod.

// draClass is the class of every device of the driver, as the packaging
// ships it (packaging/overlays/dra).
const draClass = "smarter-devices"

// createClasses creates the DeviceClasses the packaging ships
// (packaging/overlays/dra/deviceclasses.yaml, decoded strictly as the API
// server's YAML serializer would) and, for each extended resource name
// given, one more made the way that file says to add one: its first
// extendedResourceName class with the name swapped in.
func (d *draNode) createClasses(extended ...string) {
	d.t.Helper()
	const file = "../packaging/overlays/dra/deviceclasses.yaml"
	raw, err := os.ReadFile(file)
	if err != nil {
		d.t.Fatal(err)
	}
	decoder := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, kjson.SerializerOptions{Yaml: true, Strict: true})
	var classes []*resourceapi.DeviceClass
	var template *resourceapi.DeviceClass
	for i, doc := range splitYAML(raw) {
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			d.t.Fatalf("%s document %d: %v", file, i, err)
		}
		c, ok := obj.(*resourceapi.DeviceClass)
		if !ok {
			d.t.Fatalf("%s document %d: a %T, not a DeviceClass", file, i, obj)
		}
		classes = append(classes, c)
		if template == nil && c.Spec.ExtendedResourceName != nil {
			template = c
		}
	}
	if len(classes) == 0 || classes[0].Name != draClass || template == nil {
		d.t.Fatalf("%s: want the %s class first and an extendedResourceName class", file, draClass)
	}
	for _, res := range extended {
		c := template.DeepCopy()
		was := *template.Spec.ExtendedResourceName
		c.Name = strings.ToLower(strings.TrimPrefix(res, "smarter-devices/")) + "." + draClass
		c.Spec.ExtendedResourceName = &res
		for i := range c.Spec.Selectors {
			c.Spec.Selectors[i].CEL.Expression = strings.ReplaceAll(c.Spec.Selectors[i].CEL.Expression, strconv.Quote(was), strconv.Quote(res))
		}
		if equality.Semantic.DeepEqual(c.Spec.Selectors, template.Spec.Selectors) {
			d.t.Fatalf("%s: class %s's selector does not name %s", file, template.Name, was)
		}
		classes = append(classes, c)
	}
	for _, c := range classes {
		if _, err := d.client.ResourceV1().DeviceClasses().Create(d.ctx(), c, metav1.CreateOptions{}); err != nil {
			d.t.Fatalf("creating DeviceClass %s: %v", c.Name, err)
		}
	}
}

// classLister is the allocator's view of the API server's classes.
type classLister struct{ d *draNode }

func (l classLister) List() ([]*resourceapi.DeviceClass, error) {
	list, err := l.d.client.ResourceV1().DeviceClasses().List(l.d.ctx(), metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]*resourceapi.DeviceClass, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

func (l classLister) Get(name string) (*resourceapi.DeviceClass, error) {
	return l.d.client.ResourceV1().DeviceClasses().Get(l.d.ctx(), name, metav1.GetOptions{})
}

// selectorClaim is a claim for one device of draClass that cel selects;
// config, when not empty, is the driver's opaque config for it.
func selectorClaim(name, cel, config string) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{
			Name: "dev",
			Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: draClass,
				Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: cel}}}},
		}}}},
	}
	if config != "" {
		c.Spec.Devices.Config = []resourceapi.DeviceClaimConfiguration{{Requests: []string{"dev"},
			DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
				Driver: draDriver, Parameters: runtime.RawExtension{Raw: []byte(config)}}}}}
	}
	return c
}

// extendedClaim is the claim the scheduler makes for a pod that asks for
// count of an extended resource (KEP-5004): the class found by its
// extendedResourceName through the scheduler's own cache of classes, one
// request per container and resource named as the scheduler names it
// (its createRequestsAndMappings), the claim marked as the pod's
// extended-resource claim. The pod's status maps the request back.
func (d *draNode) extendedClaim(pod *v1.Pod, res string, count int64) *resourceapi.ResourceClaim {
	d.t.Helper()
	cache := extendedresourcecache.NewExtendedResourceCache(d.logger)
	classes, err := classLister{d}.List()
	if err != nil {
		d.t.Fatal(err)
	}
	for _, c := range classes {
		cache.OnAdd(c, true)
	}
	class := cache.GetDeviceClass(v1.ResourceName(res))
	if class == nil {
		d.t.Fatalf("no DeviceClass serves the extended resource %s", res)
	}
	req := "container-0-request-0"
	pod.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceName(res): *resource.NewQuantity(count, resource.DecimalSI)}
	pod.Spec.Containers[0].Resources.Limits = pod.Spec.Containers[0].Resources.Requests
	name := pod.Name + "-extended-resources"
	pod.Status.ExtendedResourceClaimStatus = &v1.PodExtendedResourceClaimStatus{ResourceClaimName: name,
		RequestMappings: []v1.ContainerExtendedResourceRequest{{ContainerName: pod.Spec.Containers[0].Name, ResourceName: res, RequestName: req}}}
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: pod.Namespace,
			Annotations:     map[string]string{resourceapi.ExtendedResourceClaimAnnotation: "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, Controller: ptr(true)}}},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{
			Name: req,
			Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: class.Name,
				AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: count},
		}}}},
	}
}

// draPod is a pod of one container; claimName, when not empty, is a
// ResourceClaim the pod names and the container uses.
func draPod(name, claimName string) *v1.Pod {
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault, UID: uuid.NewUUID()},
		Spec:       v1.PodSpec{NodeName: draNodeName, Containers: []v1.Container{{Name: "app"}}},
	}
	if claimName != "" {
		pod.Spec.ResourceClaims = []v1.PodResourceClaim{{Name: "dev", ResourceClaimName: &claimName}}
		pod.Spec.Containers[0].Resources.Claims = []v1.ResourceClaim{{Name: "dev"}}
	}
	return pod
}

// allocatorFeatures are the allocator's features the API server has on.
var allocatorFeatures = structured.Features{DeviceTaints: true, ConsumableCapacity: true}

// allocate creates claim in the API server (its validation and
// defaulting), allocates it on the node with the structured allocator
// against the node's slices as the API server has them, the devices of
// held taken, and writes the allocation, reserved for pod, to its status
// as the scheduler does. It returns the claim as stored; no allocation
// fails the test.
func (d *draNode) allocate(claim *resourceapi.ResourceClaim, pod *v1.Pod, held ...*resourceapi.ResourceClaim) *resourceapi.ResourceClaim {
	d.t.Helper()
	ctx := d.ctx()
	created := d.createClaim(claim)
	result, err := d.tryAllocate(created, held...)
	if err != nil {
		d.t.Fatalf("allocating ResourceClaim %s: %v", claim.Name, err)
	}
	if result == nil {
		d.t.Fatalf("allocating ResourceClaim %s: the allocator found no devices; slices: %s", claim.Name, describeSlices(d.slices()))
	}
	created.Status.Allocation = result
	created.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: pod.Name, UID: pod.UID}}
	stored, err := d.client.ResourceV1().ResourceClaims(claim.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		d.t.Fatalf("writing ResourceClaim %s's allocation: %v", claim.Name, err)
	}
	return stored
}

// createClaim creates claim in the API server and returns it as stored
// (validated and defaulted).
func (d *draNode) createClaim(claim *resourceapi.ResourceClaim) *resourceapi.ResourceClaim {
	d.t.Helper()
	created, err := d.client.ResourceV1().ResourceClaims(claim.Namespace).Create(d.ctx(), claim, metav1.CreateOptions{})
	if err != nil {
		d.t.Fatalf("creating ResourceClaim %s: %v", claim.Name, err)
	}
	return created
}

// tryAllocate runs the structured allocator for claim on the node; nil
// when it finds no devices.
func (d *draNode) tryAllocate(claim *resourceapi.ResourceClaim, held ...*resourceapi.ResourceClaim) (*resourceapi.AllocationResult, error) {
	state := structured.AllocatedState{AllocatedDevices: sets.New[structured.DeviceID](),
		AllocatedSharedDeviceIDs: sets.New[structured.SharedDeviceID](), AggregatedCapacity: structured.NewConsumedCapacityCollection()}
	for _, h := range held {
		for _, r := range h.Status.Allocation.Devices.Results {
			id := structured.MakeDeviceID(r.Driver, r.Pool, r.Device)
			if r.ShareID != nil {
				state.AllocatedSharedDeviceIDs.Insert(structured.MakeSharedDeviceID(id, r.ShareID))
				state.AggregatedCapacity.Insert(structured.NewDeviceConsumedCapacity(id, r.ConsumedCapacity))
			} else {
				state.AllocatedDevices.Insert(id)
			}
		}
	}
	var sl []*resourceapi.ResourceSlice
	got := d.slices()
	for i := range got {
		sl = append(sl, &got[i])
	}
	a, err := structured.NewAllocator(d.ctx(), allocatorFeatures, state, classLister{d}, sl,
		cel.NewCache(10, cel.Features{EnableConsumableCapacity: true}))
	if err != nil {
		return nil, err
	}
	results, err := a.Allocate(d.ctx(), d.node0, []*resourceapi.ResourceClaim{claim})
	if err != nil || len(results) == 0 {
		return nil, err
	}
	return &results[0], nil
}

// allocated is the device names of a claim's allocation.
func allocated(c *resourceapi.ResourceClaim) []string {
	var out []string
	for _, r := range c.Status.Allocation.Devices.Results {
		out = append(out, r.Device)
	}
	return out
}

// prepare has the kubelet's DRA manager prepare pod's claims (the
// daemon's NodePrepareResources through its socket), the pod being
// active, and returns the CDI device IDs its container gets.
func (d *draNode) prepare(pod *v1.Pod) ([]string, error) {
	d.t.Helper()
	d.pods.add(pod)
	if err := d.kubelet.PrepareResources(d.ctx(), pod); err != nil {
		return nil, err
	}
	info, err := d.kubelet.GetResources(pod, &pod.Spec.Containers[0])
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, c := range info.CDIDevices {
		ids = append(ids, c.Name)
	}
	return ids, nil
}

// specFiles lists the CDI spec files the daemon has written.
func (d *draNode) specFiles() []string {
	d.t.Helper()
	m, err := filepath.Glob(filepath.Join(d.cdiDir, "*"))
	if err != nil {
		d.t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

// specFileOf is the name of claim's CDI spec file, if there is one.
func (d *draNode) specFileOf(uid types.UID) (string, bool) {
	for _, f := range d.specFiles() {
		if strings.Contains(f, string(uid)) {
			return f, true
		}
	}
	return "", false
}

// resolveCDI resolves ids with the CDI library, as a runtime does, from
// the daemon's CDI directory, into the devices a container spec gets.
func (d *draNode) resolveCDI(ids []string) ([]runtimespec.LinuxDevice, error) {
	cache, err := cdi.NewCache(cdi.WithSpecDirs(d.cdiDir), cdi.WithAutoRefresh(false))
	if err != nil {
		return nil, err
	}
	spec := &runtimespec.Spec{}
	if unresolved, err := cache.InjectDevices(spec, ids...); err != nil {
		return nil, fmt.Errorf("CDI: %w (unresolved: %v; spec errors: %v)", err, unresolved, cache.GetErrors())
	}
	if spec.Linux == nil {
		return nil, nil
	}
	return spec.Linux.Devices, nil
}

// checkHostNode checks that a CDI device is the node at its path on the
// host: a device node of the same type and numbers.
func checkHostNode(dev runtimespec.LinuxDevice) error {
	var st unix.Stat_t
	if err := unix.Stat(dev.Path, &st); err != nil {
		return fmt.Errorf("CDI device %s: %w", dev.Path, err)
	}
	typ := map[uint32]string{unix.S_IFBLK: "b", unix.S_IFCHR: "c"}[st.Mode&unix.S_IFMT]
	if typ != dev.Type || int64(unix.Major(st.Rdev)) != dev.Major || int64(unix.Minor(st.Rdev)) != dev.Minor {
		return fmt.Errorf("CDI device %s is %s %d:%d; the host's node is %s %d:%d", dev.Path, dev.Type, dev.Major, dev.Minor,
			typ, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return nil
}

// hostNumbers are a node's major and minor numbers.
func hostNumbers(path string) (int64, int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	return int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev)), nil
}

// nodePrepare asks the daemon, through the kubelet's connection to it,
// to prepare claim (what the kubelet's manager sends), and returns the
// CDI device IDs it answers.
func (d *draNode) nodePrepare(claim *resourceapi.ResourceClaim) ([]string, error) {
	d.t.Helper()
	p, err := d.plugin()
	if err != nil {
		return nil, err
	}
	resp, err := p.NodePrepareResources(d.ctx(), &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{{
		Namespace: claim.Namespace, Name: claim.Name, Uid: string(claim.UID)}}})
	if err != nil {
		return nil, err
	}
	r := resp.Claims[string(claim.UID)]
	if r == nil {
		return nil, fmt.Errorf("no answer for claim %s", claim.UID)
	}
	if r.Error != "" {
		return nil, fmt.Errorf("claim %s: %s", claim.UID, r.Error)
	}
	var ids []string
	for _, dev := range r.Devices {
		ids = append(ids, dev.CdiDeviceIds...)
	}
	return ids, nil
}

// nodeUnprepare asks the daemon, through the kubelet's connection to it,
// to unprepare claim.
func (d *draNode) nodeUnprepare(claim *resourceapi.ResourceClaim) error {
	d.t.Helper()
	p, err := d.plugin()
	if err != nil {
		return err
	}
	resp, err := p.NodeUnprepareResources(d.ctx(), &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{{
		Namespace: claim.Namespace, Name: claim.Name, Uid: string(claim.UID)}}})
	if err != nil {
		return err
	}
	if r := resp.Claims[string(claim.UID)]; r == nil || r.Error != "" {
		return fmt.Errorf("claim %s: %v", claim.UID, r)
	}
	return nil
}
