package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestContainerDevices runs the cases that share one node: the daemon on
// the host's /dev with real zram devices and the real kubelet device
// manager; each container is built from what the kubelet hands the
// runtime.
func TestContainerDevices(t *testing.T) {
	requireContainers(t)
	requireZram(t)
	zram := map[string]int{}
	roles := []string{"rw", "ro"}
	for _, role := range roles {
		zram[role] = zramAdd(t)
		zramDisk(t, zram[role])
	}
	dev := func(role string) string { return fmt.Sprintf("/dev/zram%d", zram[role]) }
	res := func(role string) string { return fmt.Sprintf("smarter-devices/zram%d", zram[role]) }
	rules := fmt.Sprintf(`version: v1
rules:
  - match: ^null$
    count: 4
  - match: ^zram%d$
    count: 8
  - match: ^zram%d$
    permissions: r
`, zram["rw"], zram["ro"])
	n := newNode(t, rules)
	n.startKubelet()
	n.startDaemon()
	want := map[string]counts{resNull: {4, 4}}
	for role, c := range map[string]int64{"rw": 8, "ro": 1} {
		want[res(role)] = counts{c, c}
	}
	n.waitCapacity("every resource registered", want)

	// The root container: /dev/null and a zram device read-write.
	rootPod := n.newPod("root", map[string]int64{resNull: 1, res("rw"): 1})
	if err := n.allocate(rootPod); err != nil {
		t.Fatal(err)
	}
	root := n.runContainer(rootPod, podSecurity{})

	t.Run("1 char and block rw", func(t *testing.T) {
		r := newReport(t, "1 char+block rw")
		r.expect(root, probeReq{Op: "open", Path: "/dev/null", Flags: "rw"}, "ok")
		r.expect(root, probeReq{Op: "write", Path: "/dev/null", Data: "x"}, "ok")
		r.stat(root, dev("rw"), hostNode(t, dev("rw")))
		r.roundTrip(root, dev("rw"), dev("rw"), dev("rw"))
	})
	t.Run("1 permissions r", func(t *testing.T) {
		r := newReport(t, "1 permissions: r")
		pod := n.newPod("ro", map[string]int64{res("ro"): 1})
		if err := n.allocate(pod); err != nil {
			t.Fatal(err)
		}
		c := n.runContainer(pod, podSecurity{})
		host := hostNode(t, dev("ro"))
		st := r.stat(c, dev("ro"), host)
		// Root with the node's mode allowing writes: only the device
		// cgroup can refuse them.
		if st.Mode != host.Mode || !strings.Contains("2367", st.Mode[1:2]) {
			t.Errorf("node mode %s in the container (host %s): a refused write would not prove the cgroup refused it", st.Mode, host.Mode)
		}
		r.expect(c, probeReq{Op: "open", Path: dev("ro"), Flags: "r"}, "ok")
		r.expect(c, probeReq{Op: "read", Path: dev("ro"), Len: 16}, "ok")
		r.expect(c, probeReq{Op: "open", Path: dev("ro"), Flags: "w"}, "EPERM")
		r.expect(c, probeReq{Op: "write", Path: dev("ro"), Data: "x"}, "EPERM")
		rule := fmt.Sprintf("b %d:%d", host.Major, host.Minor)
		for _, l := range c.deviceRules() {
			if strings.HasPrefix(l, rule+" ") {
				r.saw("its device cgroup holds %q", l)
			}
		}
		if code := c.exit(t); code != 0 {
			t.Errorf("container exit status %d", code)
		}
	})
	if code := root.exit(t); code != 0 {
		t.Errorf("container exit status %d", code)
	}
}
