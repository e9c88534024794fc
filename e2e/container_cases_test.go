package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/smarter-project/smarter-device-manager/e2e/probe"
)

// TestContainerDevices runs cases 1, 2, 4, 5 and 6 on one node: the
// daemon on the host's /dev with real zram devices, udevd giving them
// groups and by-id links, and the real kubelet device manager; each
// container is built from what the kubelet hands the runtime.
func TestContainerDevices(t *testing.T) {
	requireContainers(t)
	requireZram(t)
	udevLinks(t)
	zram := map[string]int{}
	roles := []string{"rw", "ro", "gps", "cdiowner", "cdi"}
	for _, role := range roles {
		zram[role] = zramAdd(t)
		zramDisk(t, zram[role])
	}
	udevSettle(t)
	dev := func(role string) string { return fmt.Sprintf("/dev/zram%d", zram[role]) }
	res := func(role string) string { return fmt.Sprintf("smarter-devices/zram%d", zram[role]) }
	mountDir := mkdirTemp(t)
	if err := os.WriteFile(filepath.Join(mountDir, "hello"), []byte("from the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	rules := fmt.Sprintf(`version: v1
rules:
  - match: ^null$
    count: 4
  - match: ^zram%d$
    count: 8
    describe_env: true
    env: {SDM_E2E_ENV: "set by the rule"}
    mounts: ["%s:/etc/sdm-e2e:ro"]
  - match: ^zram%d$
    permissions: r
  - match: ^zram%d$
    container_path: /dev/gps0
    expose_links: true
    describe_env: true
  - match: ^zram%d$
    count: 2
    cdi: true
    owner: {uid: 1000, gid: 1000, mode: "0660"}
  - match: ^zram%d$
    count: 2
    cdi: true
    describe_env: true
`, zram["rw"], mountDir, zram["ro"], zram["gps"], zram["cdiowner"], zram["cdi"])
	n := newNode(t, rules)
	n.cdiDir = mkdirTemp(t)
	n.daemonArgs = []string{"--cdi-dir", n.cdiDir}
	n.startKubelet()
	n.startDaemon()
	want := map[string]counts{resNull: {4, 4}}
	for role, c := range map[string]int64{"rw": 8, "ro": 1, "gps": 1, "cdiowner": 2, "cdi": 2} {
		want[res(role)] = counts{c, c}
	}
	n.waitCapacity("every resource registered", want)

	// The root container of cases 1, 2 and 6: /dev/null and a zram device
	// read-write, with the rule's environment and mount.
	rootPod := n.newPod("root", map[string]int64{resNull: 1, res("rw"): 1})
	if err := n.allocate(rootPod); err != nil {
		t.Fatal(err)
	}
	root := n.runContainer(rootPod, podSecurity{})
	var gid string // describe_env's _GID, as the container sees it

	t.Run("1 char and block rw", func(t *testing.T) {
		r := newReport(t, "1 char+block rw")
		r.expect(root, probe.Request{Op: "open", Path: "/dev/null", Flags: "rw"}, "ok")
		r.expect(root, probe.Request{Op: "write", Path: "/dev/null", Data: "x"}, "ok")
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
		r.expect(c, probe.Request{Op: "open", Path: dev("ro"), Flags: "r"}, "ok")
		r.expect(c, probe.Request{Op: "read", Path: dev("ro"), Len: 16}, "ok")
		r.expect(c, probe.Request{Op: "open", Path: dev("ro"), Flags: "w"}, "EPERM")
		r.expect(c, probe.Request{Op: "write", Path: dev("ro"), Data: "x"}, "EPERM")
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
	t.Run("2 node not allocated", func(t *testing.T) {
		r := newReport(t, "2 mknod, not allocated")
		other := hostNode(t, dev("ro"))
		mine := hostNode(t, dev("rw"))
		// The same mknod for an allocated device: the node works, so only
		// the cgroup rule stops the other one.
		r.expect(root, probe.Request{Op: "mknod", Path: "/dev/mine", Type: "b", Major: mine.Major, Minor: mine.Minor}, "ok")
		r.expect(root, probe.Request{Op: "open", Path: "/dev/mine", Flags: "rw"}, "ok")
		r.expect(root, probe.Request{Op: "mknod", Path: "/dev/other", Type: "b", Major: other.Major, Minor: other.Minor}, "ok")
		r.stat(root, "/dev/other", other)
		r.expect(root, probe.Request{Op: "open", Path: "/dev/other", Flags: "r"}, "EPERM")
		r.expect(root, probe.Request{Op: "open", Path: "/dev/other", Flags: "rw"}, "EPERM")
	})
	t.Run("6 env and mounts", func(t *testing.T) {
		r := newReport(t, "6 env and mounts")
		env := envOf(t, root)
		key := envKey(res("rw"))
		for k, v := range map[string]string{"SDM_E2E_ENV": "set by the rule", key: dev("rw")} {
			r.saw("%s=%q", k, env[k])
			if env[k] != v {
				t.Errorf("the container's %s = %q; want %q", k, env[k], v)
			}
		}
		gid = env[key+"_GID"]
		r.saw("%s_GID=%q", key, gid)
		if want := strconv.Itoa(int(hostNode(t, dev("rw")).GID)); gid != want {
			t.Errorf("the container's %s_GID = %q; the node's group is %s", key, gid, want)
		}
		rep := r.expect(root, probe.Request{Op: "readfile", Path: "/etc/sdm-e2e/hello"}, "ok")
		if rep.Data != "from the host" {
			t.Errorf("/etc/sdm-e2e/hello holds %q; want %q", rep.Data, "from the host")
		}
		r.expect(root, probe.Request{Op: "writefile", Path: "/etc/sdm-e2e/hello", Data: "x"}, "EROFS")
		if code := root.exit(t); code != 0 {
			t.Errorf("container exit status %d", code)
		}
	})
	t.Run("4 container_path and links", func(t *testing.T) {
		r := newReport(t, "4 container_path+links")
		pod := n.newPod("gps", map[string]int64{res("gps"): 1})
		if err := n.allocate(pod); err != nil {
			t.Fatal(err)
		}
		c := n.runContainer(pod, podSecurity{})
		link := fmt.Sprintf("/dev/serial/by-id/usb-sdm-e2e_GPS_zram%d-if00", zram["gps"])
		host := hostNode(t, dev("gps"))
		r.stat(c, "/dev/gps0", host)
		r.stat(c, link, host)
		r.roundTrip(c, "/dev/gps0", link, dev("gps"))
		if st := c.do(r.t, probe.Request{Op: "stat", Path: dev("gps")}); st.Errno != "ENOENT" {
			t.Errorf("the host path %s is in the container too (%s %s); container_path moves it", dev("gps"), st.Result(), st.Node())
		}
		stable := envOf(t, c)[envKey(res("gps"))+"_STABLE"]
		r.saw("_STABLE=%q", stable)
		if stable != link {
			t.Errorf("_STABLE = %q; want %q", stable, link)
		}
		c.exit(t)
	})
	t.Run("5 non-root", func(t *testing.T) {
		r := newReport(t, "5 non-root uid 1000")
		group, err := strconv.ParseUint(gid, 10, 32)
		if gid == "" || err != nil {
			t.Fatalf("no _GID from case 6 (%q)", gid)
		}
		host := hostNode(t, dev("rw"))
		if host.Mode[2] == '0' {
			t.Fatalf("%s is %s: its group cannot open it (udevd sets block nodes 0660 root:disk)", dev("rw"), host.Node())
		}
		try := func(what string, pod string, res string, sec podSecurity, path, want string) probe.Reply {
			p := n.newPod(pod, map[string]int64{res: 1})
			if err := n.allocate(p); err != nil {
				t.Fatal(err)
			}
			c := n.runContainer(p, sec)
			st := c.do(r.t, probe.Request{Op: "stat", Path: path})
			rep := c.do(r.t, probe.Request{Op: "open", Path: path, Flags: "rw"})
			r.saw("%s: node %s, open rw %s", what, st.Node(), rep.Result())
			if rep.Result() != want {
				t.Errorf("%s: open rw %s gave %s (%s); want %s", what, path, rep.Result(), rep.Error, want)
			}
			c.exit(t)
			return st
		}
		uid := ptr(uint32(1000))
		// Device specs (the device plugin's Allocate): the node keeps the
		// host's owner and mode, unless containerd owns it by the pod's
		// user (device_ownership_from_security_context).
		try("supplementalGroups [_GID]", "nonroot-group", res("rw"), podSecurity{runAsUser: uid, supplementalGroups: []uint32{uint32(group)}}, dev("rw"), "ok")
		try("no group", "nonroot", res("rw"), podSecurity{runAsUser: uid}, dev("rw"), "EACCES")
		if st := try("device_ownership_from_security_context", "nonroot-owner", res("rw"),
			podSecurity{runAsUser: uid, runAsGroup: ptr(uint32(1000)), deviceOwnership: true}, dev("rw"), "ok"); st.UID != 1000 || st.GID != 1000 {
			t.Errorf("with device_ownership_from_security_context the node is %s; want it owned by 1000:1000", st.Node())
		}
		// CDI: the CDI library gives a node the spec leaves unowned to the
		// process's own non-zero uid and gid, so a non-root process opens
		// it with nothing set; owner sets the owner and mode instead.
		if st := try("CDI, no owner, no group", "nonroot-cdi", res("cdi"), podSecurity{runAsUser: uid}, dev("cdi"), "ok"); st.UID != 1000 {
			t.Errorf("the CDI device's node is %s; the CDI library owns it by the process's uid 1000", st.Node())
		}
		if st := try("CDI owner {uid: 1000, gid: 1000, mode: 0660}", "nonroot-cdi-owner", res("cdiowner"), podSecurity{runAsUser: uid}, dev("cdiowner"), "ok"); st.UID != 1000 || st.GID != 1000 || st.Mode != "0660" {
			t.Errorf("the CDI device's node is %s; the rule's owner says 0660 1000:1000", st.Node())
		}
	})
	if t.Failed() {
		t.Logf("CDI specs in %s: %s", n.cdiDir, cdiFiles(n.cdiDir))
	}
}
