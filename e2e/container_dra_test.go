package e2e

import (
	"fmt"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"

	"github.com/smarter-project/smarter-device-manager/e2e/probe"
)

// TestContainerDRA is the DRA case: a zram device claimed by a CEL
// selector with the claim's own owner (its opaque config: uid and gid
// 1000, 0660), allocated by the structured allocator, prepared by the
// kubelet's DRA manager through the daemon in DRA mode; the CDI device
// the manager hands the runtime becomes the container's node by
// containerd's pkg/cdi, and a process of uid 1000 under runc opens it,
// writes through it, and the host's device holds what it wrote.
func TestContainerDRA(t *testing.T) {
	requireContainers(t)
	requireZram(t)
	z := zramAdd(t)
	path := zramDisk(t, z)
	d := startDRA(t, "1h")
	d.waitSlices("the zram device published", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		_, ok := devs[zramDevice(z)]
		return ok
	})
	d.createClasses()
	pod := draPod("dra-uid-1000", "dra-uid-1000")
	d.allocate(selectorClaim("dra-uid-1000", fmt.Sprintf(`device.attributes[%q].path == %q`, draDriver, path),
		`{"owner": {"uid": 1000, "gid": 1000, "mode": "0660"}}`), pod)
	ids, err := d.prepare(pod)
	if err != nil {
		t.Fatalf("PrepareResources: %v", err)
	}
	// What the kubelet's container manager adds to a container's run
	// options from the DRA manager (GetResources' CDI devices).
	opts := &devicemanager.DeviceRunContainerOptions{}
	for _, id := range ids {
		opts.CDIDevices = append(opts.CDIDevices, kubecontainer.CDIDevice{Name: id})
	}
	r := newReport(t, "DRA claim, uid 1000")
	r.saw("CDI %v", ids)
	c := d.runContainerOpts(pod, opts, podSecurity{runAsUser: ptr(uint32(1000)), runAsGroup: ptr(uint32(1000))})
	host := hostNode(t, path)
	rep := r.stat(c, path, host)
	if rep.UID != 1000 || rep.GID != 1000 || rep.Mode != "0660" {
		t.Errorf("%s in the container is %d:%d %s; want 1000:1000 0660 (the claim's config)", path, rep.UID, rep.GID, rep.Mode)
	}
	if id := r.expect(c, probe.Request{Op: "id"}, "ok"); id.UID != 1000 || id.GID != 1000 {
		t.Errorf("the container's process is %d:%d; want 1000:1000 (runAsUser, runAsGroup)", id.UID, id.GID)
	}
	r.expect(c, probe.Request{Op: "open", Path: path, Flags: "rw"}, "ok")
	r.roundTrip(c, path, path, path)
	c.exit(t)
	// The claim's owner decides, not the process: the same CDI device in
	// a container of another user is still 1000:1000 0660, and refused.
	other := d.runContainerOpts(draPod("dra-uid-2000", "dra-uid-2000"), opts, podSecurity{runAsUser: ptr(uint32(2000)), runAsGroup: ptr(uint32(2000))})
	if id := r.expect(other, probe.Request{Op: "id"}, "ok"); id.UID != 2000 || id.GID != 2000 {
		t.Errorf("the other container's process is %d:%d; want 2000:2000", id.UID, id.GID)
	}
	if st := r.stat(other, path, host); st.UID != 1000 || st.GID != 1000 || st.Mode != "0660" {
		t.Errorf("%s in the other user's container is %d:%d %s; want 1000:1000 0660 (the claim's config)", path, st.UID, st.GID, st.Mode)
	}
	r.expect(other, probe.Request{Op: "open", Path: path, Flags: "rw"}, "EACCES")
	other.exit(t)
	if err := d.kubelet.UnprepareResources(d.ctx(), pod); err != nil {
		t.Errorf("UnprepareResources: %v", err)
	}
}
