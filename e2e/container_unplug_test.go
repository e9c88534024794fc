package e2e

import (
	"fmt"
	"testing"

	"github.com/smarter-project/smarter-device-manager/e2e/probe"
)

// Case 7: a device unplugged under a running container. The kubelet sees
// the resource unhealthy; the process's next open of the node fails (the
// node in the container's /dev is still there, the device behind it is
// not); the container itself keeps running and exits cleanly, and the
// daemon keeps serving.
func TestContainerHotRemove(t *testing.T) {
	requireContainers(t)
	requireZram(t)
	z := zramAdd(t)
	dev := zramDisk(t, z)
	res := fmt.Sprintf("smarter-devices/zram%d", z)
	n := newNode(t, fmt.Sprintf("version: v1\nrules:\n  - match: ^zram%d$\n  - match: ^null$\n", z))
	n.startKubelet()
	n.startDaemon()
	n.waitCapacity("zram registered", map[string]counts{res: {1, 1}, resNull: {1, 1}})
	pod := n.newPod("unplug", map[string]int64{res: 1, resNull: 1})
	if err := n.allocate(pod); err != nil {
		t.Fatal(err)
	}
	c := n.runContainer(pod, podSecurity{})
	r := newReport(t, "7 hot_remove while running")
	r.roundTrip(c, dev, dev, dev)

	if err := zramRemove(z); err != nil {
		t.Fatal(err)
	}
	got := n.waitCapacity("the zram resource unhealthy after hot_remove", map[string]counts{res: {1, 0}})
	r.saw("hot_remove: the kubelet has %s capacity %d allocatable %d", res, got[res].capacity, got[res].allocatable)
	open := c.do(t, probe.Request{Op: "open", Path: dev, Flags: "rw"})
	r.saw("open rw %s %s (%s)", dev, open.Result(), open.Error)
	if open.Errno == "" {
		t.Errorf("open %s succeeded with the device gone", dev)
	}
	// The rest of the container is untouched.
	r.expect(c, probe.Request{Op: "open", Path: "/dev/null", Flags: "rw"}, "ok")
	if st := c.status(); st != "running" {
		t.Errorf("runc state: %s; want running", st)
	} else {
		r.saw("runc state %s", st)
	}
	if n.daemon.exited() {
		t.Errorf("the daemon exited (%v)", n.daemon.err)
	}
	if code := c.exit(t); code != 0 {
		t.Errorf("container exit status %d after the device went", code)
	} else {
		r.saw("exit status 0")
	}
	// The kubelet still holds the resource, unhealthy, until
	// --remove-after: a replug brings it back under the same name.
	if got := n.capacity()[res]; got != (counts{1, 0}) {
		t.Errorf("after the container exited: %s = %+v; want capacity 1, allocatable 0", res, got)
	}
}
