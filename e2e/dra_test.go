package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// draRules: every zram device a resource of its own (one claim at a
// time, evicted on unplug), and /dev/null shared by two claims.
const draRules = `version: v1
rules:
  - match: ^zram[0-9]+$
    count: 1
    evict_on_unplug: true
  - match: ^null$
    count: 2
`

// zramDevice is the published name of /dev/zramN (names.go: a plain
// resource's name part, lowercased).
func zramDevice(z int) string { return fmt.Sprintf("zram%d", z) }

// startDRA starts the API server, the kubelet's DRA manager and the
// daemon in DRA mode on draRules, and waits until the kubelet has
// registered the driver and the API server has the pool with null.
func startDRA(t *testing.T, removeAfter string) *draNode {
	t.Helper()
	d := newDRANode(t, draRules, removeAfter)
	d.startKubeletDRA()
	d.startDaemon()
	d.waitRegistered("the kubelet registers the driver", nil)
	d.waitSlices("the pool with null", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		_, ok := devs["null"]
		return ok
	})
	return d
}

// 1 and 2: the daemon's pool as the API server stores it (its validation
// and defaulting passed); a claim with a CEL selector on a device's path
// and major/minor gets that device from the structured allocator, and a
// pod's extended resource gets the device through the DeviceClass that
// names it. 3: the kubelet's DRA manager prepares both through the
// daemon's socket; the CDI IDs resolve with the CDI library into the
// host's nodes; unprepare removes the specs.
func TestDRAPublishAllocatePrepare(t *testing.T) {
	requireZram(t)
	d := startDRA(t, "1h")
	za, zb := zramAdd(t), zramAdd(t)
	pathA, pathB := fmt.Sprintf("/dev/zram%d", za), fmt.Sprintf("/dev/zram%d", zb)
	sl := d.waitSlices("both zram devices published", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		_, a := devs[zramDevice(za)]
		_, b := devs[zramDevice(zb)]
		return a && b
	})
	t.Logf("slices: %s", describeSlices(sl))
	if len(sl) != 1 {
		t.Errorf("%d slices; want 1 (3 devices fit one)", len(sl))
	}
	s := sl[0].Spec
	if s.Pool.Name != draNodeName || s.NodeName == nil || *s.NodeName != draNodeName || s.Pool.ResourceSliceCount != 1 {
		t.Errorf("slice %s: pool %+v, node %v; want the node's own pool of 1 slice", sl[0].Name, s.Pool, s.NodeName)
	}
	if len(sl[0].OwnerReferences) != 1 || sl[0].OwnerReferences[0].UID != d.node0.UID {
		t.Errorf("slice owners %+v; want the Node %s", sl[0].OwnerReferences, d.node0.UID)
	}
	devs := devicesOf(sl)
	for _, z := range []int{za, zb} {
		dev := devs[zramDevice(z)]
		path := fmt.Sprintf("/dev/zram%d", z)
		major, minor, err := hostNumbers(path)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"resource": fmt.Sprintf("smarter-devices/zram%d", z), "path": path, "subsystem": "block"}
		for k, v := range want {
			if got := attr(dev, k); got != v {
				t.Errorf("device %s: attribute %s = %q; want %q", dev.Name, k, got, v)
			}
		}
		if a, b := dev.Attributes["major"].IntValue, dev.Attributes["minor"].IntValue; a == nil || b == nil || *a != major || *b != minor {
			t.Errorf("device %s: major, minor = %v, %v; want %d, %d", dev.Name, a, b, major, minor)
		}
		if len(dev.Taints) != 0 || dev.AllowMultipleAllocations != nil {
			t.Errorf("device %s: taints %v, multiple allocations %v; want none", dev.Name, dev.Taints, dev.AllowMultipleAllocations)
		}
	}
	// count 2: consumable capacity, kept by the API server (a field of a
	// feature it has off would be dropped on write).
	null := devs["null"]
	shares := null.Capacity["shares"].Value
	if null.AllowMultipleAllocations == nil || !*null.AllowMultipleAllocations || shares.Value() != 2 {
		t.Errorf("null: multiple allocations %v, capacity %v; want true, 2 shares", null.AllowMultipleAllocations, null.Capacity)
	}

	d.createClasses(fmt.Sprintf("smarter-devices/zram%d", za))

	// 2a: by a CEL selector on identity attributes a zram device has.
	p1 := draPod("by-path", "by-path")
	sel := fmt.Sprintf(`device.attributes[%q].path == %q && device.attributes[%q].subsystem == "block"`, draDriver, pathB, draDriver)
	c1 := d.allocate(selectorClaim("by-path", sel, ""), p1)
	if got := allocated(c1); !slices.Equal(got, []string{zramDevice(zb)}) {
		t.Errorf("the claim selecting %s got %v; want [%s]", pathB, got, zramDevice(zb))
	}
	// 2b: the same pod unchanged: smarter-devices/zramA: 1.
	p2 := draPod("by-extended-resource", "")
	c2 := d.allocate(d.extendedClaim(p2, fmt.Sprintf("smarter-devices/zram%d", za), 1), p2, c1)
	if got := allocated(c2); !slices.Equal(got, []string{zramDevice(za)}) {
		t.Errorf("the extended resource's claim got %v; want [%s]", got, zramDevice(za))
	}
	// Both are taken: one more claim for either finds none.
	third := d.createClaim(selectorClaim("third", fmt.Sprintf(`device.attributes[%q].path in [%q, %q]`, draDriver, pathA, pathB), ""))
	if r, err := d.tryAllocate(third, c1, c2); err != nil || r != nil {
		t.Errorf("a third claim for a zram device: %v, %v; want no allocation", r, err)
	}

	// 3: the kubelet prepares them through the daemon.
	prepared := map[*v1.Pod][]string{}
	for _, c := range []struct {
		pod   *v1.Pod
		claim *resourceapi.ResourceClaim
		path  string
	}{{p1, c1, pathB}, {p2, c2, pathA}} {
		ids, err := d.prepare(c.pod)
		if err != nil {
			t.Fatalf("pod %s: PrepareResources: %v", c.pod.Name, err)
		}
		t.Logf("pod %s: CDI devices %v", c.pod.Name, ids)
		prepared[c.pod] = ids
		if len(ids) != 1 || !strings.HasPrefix(ids[0], draDriver+"/claim=") {
			t.Errorf("pod %s: CDI devices %v; want one of kind %s/claim", c.pod.Name, ids, draDriver)
		}
		nodes, err := d.resolveCDI(ids)
		if err != nil {
			t.Fatalf("pod %s: %v", c.pod.Name, err)
		}
		if len(nodes) != 1 || nodes[0].Path != c.path {
			t.Errorf("pod %s: CDI device nodes %+v; want %s", c.pod.Name, nodes, c.path)
		}
		for _, n := range nodes {
			if err := checkHostNode(n); err != nil {
				t.Errorf("pod %s: %v", c.pod.Name, err)
			}
		}
		if _, ok := d.specFileOf(c.claim.UID); !ok {
			t.Errorf("pod %s: no CDI spec named by claim %s in %v", c.pod.Name, c.claim.UID, d.specFiles())
		}
	}
	// Prepared twice: the same answer. Asked of the daemon itself (the
	// kubelet's manager answers a claim it prepared from its own cache).
	if ids, err := d.nodePrepare(c1); err != nil || !slices.Equal(ids, prepared[p1]) {
		t.Errorf("NodePrepareResources again for claim %s: %v, %v; want %v, as the first time", c1.Name, ids, err, prepared[p1])
	}
	for _, c := range []struct {
		pod   *v1.Pod
		claim *resourceapi.ResourceClaim
	}{{p1, c1}, {p2, c2}} {
		if err := d.kubelet.UnprepareResources(d.ctx(), c.pod); err != nil {
			t.Fatalf("pod %s: UnprepareResources: %v", c.pod.Name, err)
		}
		if f, ok := d.specFileOf(c.claim.UID); ok {
			t.Errorf("pod %s: CDI spec %s still there after unprepare", c.pod.Name, f)
		}
	}
	if f := d.specFiles(); len(f) != 0 {
		t.Errorf("CDI specs left after unprepare: %v", f)
	}
}

// taintOf is a device's unplugged taint, if it has one.
func taintOf(dev resourceapi.Device) (resourceapi.DeviceTaint, bool) {
	for _, tn := range dev.Taints {
		if tn.Key == draDriver+"/unplugged" {
			return tn, true
		}
	}
	return resourceapi.DeviceTaint{}, false
}

// 4: real hotplug as the API server sees it: hot_add publishes the
// device; hot_remove taints it NoExecute (the rule asks for eviction) and
// the kubelet shows the prepared claim's device unhealthy in the pod's
// status; hot_add before --remove-after takes the taint away under the
// same name; hot_remove again, and after --remove-after the device is
// gone; hot_add brings it back, untainted, under the same name.
func TestDRAHotplug(t *testing.T) {
	requireZram(t)
	d := startDRA(t, "10s")
	z := zramAdd(t)
	name := zramDevice(z)
	d.waitSlices("hot_add: the device published", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		dev, ok := devs[name]
		return ok && len(dev.Taints) == 0
	})
	d.createClasses()
	pod := draPod("user", "user")
	claim := d.allocate(selectorClaim("user", fmt.Sprintf(`device.attributes[%q].resource == "smarter-devices/zram%d"`, draDriver, z), ""), pod)
	if _, err := d.prepare(pod); err != nil {
		t.Fatalf("PrepareResources: %v", err)
	}
	health := func() v1.ResourceHealthStatus {
		st := &v1.PodStatus{ContainerStatuses: []v1.ContainerStatus{{Name: "app"}}}
		d.kubelet.UpdateAllocatedResourcesStatus(d.logger, pod, st)
		for _, rs := range st.ContainerStatuses[0].AllocatedResourcesStatus {
			for _, h := range rs.Resources {
				return h.Health
			}
		}
		return ""
	}
	d.poll("the pod's status: the device healthy", func() bool { return health() == v1.ResourceHealthStatusHealthy },
		func() string { return fmt.Sprintf("health %q", health()) })

	if err := zramRemove(z); err != nil {
		t.Fatal(err)
	}
	sl := d.waitSlices("hot_remove: the device tainted", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		_, ok := taintOf(devs[name])
		return ok
	})
	tn, _ := taintOf(devicesOf(sl)[name])
	if tn.Effect != resourceapi.DeviceTaintEffectNoExecute || tn.TimeAdded == nil {
		t.Errorf("taint %+v; want NoExecute with the time it was added", tn)
	}
	d.poll("the pod's status: the device unhealthy", func() bool { return health() == v1.ResourceHealthStatusUnhealthy },
		func() string { return fmt.Sprintf("health %q", health()) })
	// The structured allocator honours the taint: no new claim gets it.
	another := d.createClaim(selectorClaim("another", fmt.Sprintf(`device.attributes[%q].resource == "smarter-devices/zram%d"`, draDriver, z), ""))
	if r, err := d.tryAllocate(another); err != nil || r != nil {
		t.Errorf("a claim for the unplugged device: %v, %v; want no allocation", r, err)
	}

	// zram hands out the lowest free number; the test holds the zram lock.
	if z2 := zramAdd(t); z2 != z {
		// Only another process could take the number (this one holds the
		// project's zram lock); the device is then another resource.
		t.Skipf("skipping the rest: hot_add made zram%d, not zram%d again (another process holds zram%d)", z2, z, z)
	}
	d.waitSlices("hot_add again: untainted, the same name", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		dev, ok := devs[name]
		return ok && len(dev.Taints) == 0
	})
	// The claim is still prepared: the kubelet still asks after it.
	d.poll("the pod's status: healthy again", func() bool { return health() == v1.ResourceHealthStatusHealthy },
		func() string { return fmt.Sprintf("health %q", health()) })

	if err := zramRemove(z); err != nil {
		t.Fatal(err)
	}
	d.waitSlices("hot_remove again: tainted", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		_, ok := taintOf(devs[name])
		return ok
	})
	if err := d.kubelet.UnprepareResources(d.ctx(), pod); err != nil {
		t.Errorf("UnprepareResources with the device gone: %v", err)
	}
	if f, ok := d.specFileOf(claim.UID); ok {
		t.Errorf("CDI spec %s left after unprepare", f)
	}
	sl = d.waitSlices("gone after --remove-after", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		_, ok := devs[name]
		return !ok
	})
	if _, ok := devicesOf(sl)["null"]; !ok || len(sl) != 1 {
		t.Errorf("after removal: %s; want the pool of one slice with null", describeSlices(sl))
	}
	if z2 := zramAdd(t); z2 != z {
		// Only another process could take the number (this one holds the
		// project's zram lock); the device is then another resource.
		t.Skipf("skipping the rest: hot_add made zram%d, not zram%d again (another process holds zram%d)", z2, z, z)
	}
	d.waitSlices("hot_add after removal: back, untainted, the same name", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		dev, ok := devs[name]
		return ok && len(dev.Taints) == 0
	})
}

// 5: the daemon crashes (SIGKILL) with a claim prepared and starts
// again: the kubelet registers it again, its pool is the same slice
// (taken over, not duplicated), it refuses the device to another claim
// (the first still holds it: what it prepared survived), a repeated
// prepare gets the same CDI device, and unprepare removes the spec the
// earlier process wrote.
func TestDRADaemonRestart(t *testing.T) {
	requireZram(t)
	d := startDRA(t, "1h")
	z := zramAdd(t)
	before := d.waitSlices("the device published", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		_, ok := devs[zramDevice(z)]
		return ok
	})
	d.createClasses()
	pod := draPod("survivor", "survivor")
	claim := d.allocate(selectorClaim("survivor", fmt.Sprintf(`device.attributes[%q].resource == "smarter-devices/zram%d"`, draDriver, z), ""), pod)
	ids, err := d.prepare(pod)
	if err != nil {
		t.Fatalf("PrepareResources: %v", err)
	}
	spec, ok := d.specFileOf(claim.UID)
	if !ok {
		t.Fatalf("no CDI spec for claim %s: %v", claim.UID, d.specFiles())
	}

	reg, err := d.plugin()
	if err != nil {
		t.Fatal(err)
	}
	d.killDaemon()
	d.startDaemon()
	reg = d.waitRegistered("the kubelet registers the restarted driver", reg)
	// The restarted daemon has published once it serves: wait for the
	// kubelet's registration, then for its controller's write, if any.
	after := d.waitSlices("the pool after the restart", func(sl []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		_, ok := devs[zramDevice(z)]
		return ok && len(sl) == 1
	})
	if len(before) != 1 || after[0].UID != before[0].UID {
		t.Errorf("slices before the restart %s (%v), after %s (%v); want the same one slice", describeSlices(before), uids(before), describeSlices(after), uids(after))
	}

	// The restarted daemon knows the claim holds the device (count 1):
	// another claim given the same allocation is refused.
	intruder := d.createClaim(selectorClaim("intruder", fmt.Sprintf(`device.attributes[%q].resource == "smarter-devices/zram%d"`, draDriver, z), ""))
	intruder.Status.Allocation = claim.Status.Allocation.DeepCopy()
	intruder.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: "intruder", UID: "intruder-uid"}}
	intruder, err = d.client.ResourceV1().ResourceClaims(intruder.Namespace).UpdateStatus(d.ctx(), intruder, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := d.nodePrepare(intruder); err == nil {
		t.Errorf("a second claim on the device after the restart was prepared (%v); want it refused, the first holding it", res)
	}

	// The kubelet forgets nothing, so it asks the new process directly,
	// as a restarted kubelet would: a claim not prepared by this process.
	res, err := d.nodePrepare(claim)
	if err != nil || !slices.Equal(res, ids) {
		t.Errorf("NodePrepareResources to the restarted daemon: %v, %v; want %v", res, err, ids)
	}
	if err := d.kubelet.UnprepareResources(d.ctx(), pod); err != nil {
		t.Fatalf("UnprepareResources after the restart: %v", err)
	}
	if _, ok := d.specFileOf(claim.UID); ok {
		t.Errorf("CDI spec %s left after unprepare by the restarted daemon", spec)
	}
	// Now free, the device goes to the other claim.
	if _, err := d.nodePrepare(intruder); err != nil {
		t.Errorf("the second claim once the first is unprepared: %v", err)
	} else if err := d.nodeUnprepare(intruder); err != nil {
		t.Errorf("unpreparing the second claim: %v", err)
	}
	// And once more: the claim is forgotten, a new process keeps it so.
	d.stopDaemon()
	d.startDaemon()
	d.waitRegistered("the kubelet registers the driver again", reg)
	if f := d.specFiles(); len(f) != 0 {
		t.Errorf("CDI specs after a clean restart: %v", f)
	}
	if sl := d.slices(); len(sl) != 1 || sl[0].UID != before[0].UID {
		t.Errorf("after a second restart: %s; want the same one slice", describeSlices(sl))
	}

	// A device unplugged before a restart: the new process cannot read
	// it, and carries it over as the old one published it (tainted, the
	// time it went) without writing the slice; back, it is served again.
	z2 := zramAdd(t)
	d.waitSlices("a second device", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		dev, ok := devs[zramDevice(z2)]
		return ok && len(dev.Taints) == 0
	})
	if err := zramRemove(z2); err != nil {
		t.Fatal(err)
	}
	unplugged := d.waitSlices("the second device unplugged", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		return len(devs[zramDevice(z2)].Taints) == 1
	})
	reg, _ = d.plugin()
	d.stopDaemon()
	d.startDaemon()
	d.waitRegistered("the kubelet registers the driver once more", reg)
	time.Sleep(2 * time.Second) // its controller syncs at once: a rewrite would be done
	if sl := d.slices(); len(sl) != 1 || sl[0].ResourceVersion != unplugged[0].ResourceVersion ||
		!equality.Semantic.DeepEqual(sl[0].Spec.Devices, unplugged[0].Spec.Devices) {
		t.Errorf("a restart with a device unplugged: %s (version %s); want the slice unwritten: %s (version %s)",
			describeSlices(sl), sl[0].ResourceVersion, describeSlices(unplugged), unplugged[0].ResourceVersion)
	}
}

func uids(sl []resourceapi.ResourceSlice) []types.UID {
	var out []types.UID
	for _, s := range sl {
		out = append(out, s.UID)
	}
	return out
}
