package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Worker nodes (issue 21): node containers (scripts/node-image.sh, systemd
// as PID 1) running the cluster suite's containerd and kubelet as systemd
// units, joined to a control plane (etcd, API server, scheduler,
// controller manager) that runs on this machine as in TestCluster. Each
// node has its own network namespace (Docker's bridge), its own /dev (the
// devices given to it, and only those) and its own disk (its container's
// file system; containerd's and the kubelet's roots on host directories, as
// overlayfs and cAdvisor need a real file system). A reboot is a reboot of
// the container: `docker stop` (systemd shuts down cleanly) or `docker kill`
// (power cut), then `docker start`: every process of the node dies, its
// /run and /dev are fresh, its cgroups are removed in between (they live in
// this machine's kernel), its disk stays.

const (
	// What the node containers bind-mount from this machine.
	nodeBinDir = "/opt/sdm-cluster/bin" // the cluster suite's cache (scripts/cluster-build.sh)
	// Host directories of the nodes (containerd's and the kubelet's
	// roots): removed at the end, and by the next run after a killed one.
	nodesBase = "/var/lib/sdm-nodes"
	// Two pods (a bare one and a Deployment's) share each node's device.
	zramRuleShared = "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 2\n"
	zramRuleTOML   = "\n[[rule]]\nmatch = \"^zram[0-9]+$\"\ncount = 2\n"
	// The reason the kubelet gives a pod it admits and then refuses, a device
	// plugin not registered (yet) among the causes.
	unexpectedAdmission = "UnexpectedAdmissionError"
)

// kubeletTunables are the values the kubelet gives the kernel settings of
// kubeletSysctls (pkg/kubelet/cm/container_manager_linux.go,
// setupKernelTunables): a node container's /proc/sys is read-only, so they
// are set on this machine first (the kubelet then finds them set and
// writes nothing), and put back at the end.
var kubeletTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// controlPlane starts etcd, the API server, the scheduler and the
// controller manager on this machine, as TestCluster's up does, with no
// kubelet here: the nodes' kubelets reach the API server at Docker's
// bridge gateway.
func controlPlane(t *testing.T, gateway string) *cluster {
	t.Helper()
	c := &cluster{t: t, bin: binDir(t), noHostKubelet: true, extraHosts: []string{gateway}}
	t.Cleanup(c.down)
	c.clearLeftovers()
	c.logs = filepath.Join(baseDir, "logs")
	if err := os.MkdirAll(c.logs, 0o755); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	c.must(c.certs())
	c.must(c.startEtcd())
	c.must(c.startAPIServer())
	c.must(c.startControlPlane())
	c.must(c.setKubeletTunables())
	t.Logf("control plane up in %s (API server on port %d)", time.Since(begin).Round(time.Millisecond), c.apiPort)
	return c
}

// setKubeletTunables saves the kernel settings (restored at teardown, or
// by the next run after a killed one) and sets the kubelet's values.
func (c *cluster) setKubeletTunables() error {
	if err := c.saveSysctls(); err != nil {
		return err
	}
	for k, v := range kubeletTunables {
		if c.sysctls[k] == v {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}

// worker is a node container joined to the cluster as node name.
type worker struct {
	*node
	name string
	dev  int // the zram device this node has (only this one)
}

// dockerGateway is the address of Docker's default bridge on this
// machine: where a node container reaches the API server. The network's
// IPAM config names it when set; else it is the bridge interface's.
func dockerGateway(t *testing.T) string {
	t.Helper()
	out, err := dockerCmd(time.Minute, "network", "inspect", "bridge", "--format",
		`{{range .IPAM.Config}}{{.Gateway}}{{end}} {{index .Options "com.docker.network.bridge.name"}}`)
	if err != nil {
		t.Skipf("SKIPPED: node suite: no Docker bridge network: %v", err)
	}
	f := strings.Fields(out)
	if len(f) == 2 || (len(f) == 1 && net.ParseIP(f[0]) != nil) {
		return f[0]
	}
	name := "docker0"
	if len(f) == 1 {
		name = f[0]
	}
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		t.Skipf("SKIPPED: node suite: Docker's bridge %s: %v", name, err)
	}
	addrs, _ := ifc.Addrs()
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil {
			return ip.IP.String()
		}
	}
	t.Skipf("SKIPPED: node suite: Docker's bridge %s has no IPv4 address", name)
	return ""
}

// startWorker starts node name with device /dev/zram<dev> and nothing else
// of this machine's devices, installs containerd and the kubelet as
// systemd units (enabled: they start at every boot) and the images, and
// leaves the kubelet to be started by the caller (startKubelet), so that
// what a node runs before it is in place first.
func (c *cluster) startWorker(t *testing.T, image, gateway, name string, dev int, images []string) *worker {
	t.Helper()
	return c.startWorkerLayout(t, image, gateway, name, dev, images, kubeletLayout{})
}

// kubeletLayout is where a node's kubelet keeps its files: its --root-dir
// (default /var/lib/kubelet) and, when that is elsewhere, what
// /var/lib/kubelet is: "link", a symlink to the root (microk8s's install
// hook makes one where the path is free), or "dir", a directory of its own
// (an earlier kubelet left it).
type kubeletLayout struct {
	root, varLibKubelet string
}

// startWorkerLayout is startWorker with the kubelet's files laid out as
// layout says.
func (c *cluster) startWorkerLayout(t *testing.T, image, gateway, name string, dev int, images []string, layout kubeletLayout) *worker {
	t.Helper()
	root := layout.root
	if root == "" {
		root = "/var/lib/kubelet"
	}
	host := filepath.Join(nodesBase, name)
	// Registered before the container's removal, so it runs after it.
	t.Cleanup(func() {
		removeCgroups(name)
		if err := os.RemoveAll(host); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = os.Remove(nodesBase) // once the last node's is gone
	})
	removeCgroups(name)
	if err := os.RemoveAll(host); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"containerd", "kubelet"} {
		if err := os.MkdirAll(filepath.Join(host, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var devArgs []string
	if dev >= 0 { // else no device at boot
		zdev := fmt.Sprintf("/dev/zram%d", dev)
		devArgs = []string{"--device", zdev + ":" + zdev}
	}
	args := []string{
		"--hostname", name,
		// systemd shuts down on SIGRTMIN+3: `docker stop` is then a clean
		// shutdown.
		"--stop-signal", "SIGRTMIN+3",
		"-v", c.bin + ":" + nodeBinDir + ":ro",
		"-v", filepath.Join(host, "containerd") + ":/var/lib/containerd",
		// The kubelet's root too: cAdvisor finds no file system behind
		// Docker's storage driver (fuse-overlayfs here), and the kubelet
		// will not start without its root's.
		"-v", filepath.Join(host, "kubelet") + ":" + root,
		// The kubelet's OOM watcher reads the kernel's log.
		"--device", "/dev/kmsg",
	}
	n := startNodeNamed(t, image, "sdm-e2e-"+name+"-"+strconv.Itoa(os.Getpid()), append(args, devArgs...)...)
	w := &worker{node: n, name: name, dev: dev}

	if err := c.pki.issue("kubelet-"+name, "system:node:"+name, []string{"system:nodes"}, nil); err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(baseDir, "kubelet-"+name+".kubeconfig")
	if err := c.pki.kubeconfig(kc, fmt.Sprintf("https://%s:%d", gateway, c.apiPort), "kubelet-"+name); err != nil {
		t.Fatal(err)
	}
	w.copyIn(kc, "/etc/kubernetes/kubelet.kubeconfig")
	w.copyIn(c.pki.path("ca.crt"), "/etc/kubernetes/pki/ca.crt")
	// TestCluster's containerd at a node's standard paths (runc's state
	// where containerd's shim puts it by default); pods use the node's
	// network only.
	w.write("/etc/containerd/config.toml", containerdConfig("/var/lib/containerd", "/run/containerd",
		"/run/containerd/containerd.sock", "/etc/cni/net.d", "/opt/cni/bin", "/run/containerd/runc", 10010))
	w.write("/etc/cni/net.d/10-host-network-only.conflist", hostNetworkOnlyConflist)
	w.write("/etc/systemd/system/containerd.service", nodeContainerdUnit)
	w.write(root+"/config.yaml", fmt.Sprintf(nodeKubeletConfig, "/"+name)+kubeletSharedConfig)
	w.write("/etc/systemd/system/kubelet.service", fmt.Sprintf(nodeKubeletUnit, name, root, name, root))
	switch layout.varLibKubelet {
	case "link":
		w.must("sh", "-c", "rmdir /var/lib/kubelet 2>/dev/null; ln -s "+root+" /var/lib/kubelet")
	case "dir":
		w.must("mkdir", "-p", "/var/lib/kubelet")
	}
	// A persistent journal (journald's Storage=auto keeps it once the
	// directory exists), as a node on a disk has: each boot's is read back.
	w.must("mkdir", "-p", "/var/log/journal")
	w.must("journalctl", "--flush")
	w.must("systemctl", "daemon-reload")
	w.must("systemctl", "enable", "--now", "containerd.service")
	for _, img := range images {
		dst := "/root/images/" + filepath.Base(img)
		w.copyIn(img, dst)
		w.must(nodeBinDir+"/ctr", "--namespace", "k8s.io", "images", "import", dst)
	}
	w.must("systemctl", "enable", "kubelet.service")
	return w
}

// startKubelet starts the node's kubelet and waits until the node is Ready.
func (w *worker) startKubelet(c *cluster) {
	w.t.Helper()
	w.must("systemctl", "start", "kubelet.service")
	c.poll(w.t, "node "+w.name+" Ready", func() (bool, string) {
		n, err := c.cs.CoreV1().Nodes().Get(context.Background(), w.name, metav1.GetOptions{})
		if err != nil {
			st, _ := w.exec("systemctl", "is-active", "kubelet.service")
			if st = strings.TrimSpace(st); st != "active" {
				return false, err.Error() + "; kubelet " + st + ":\n" + w.journal("kubelet.service")
			}
			return false, err.Error() + "; kubelet " + st
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, cond.Reason + ": " + cond.Message
			}
		}
		return false, "no Ready condition"
	})
}

// write puts content in the node at path (its directory made).
func (w *worker) write(path, content string) {
	w.t.Helper()
	f := filepath.Join(w.t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
	w.copyIn(f, path)
}

// copyIn copies this machine's file src to dst in the node.
func (w *worker) copyIn(src, dst string) {
	w.t.Helper()
	w.must("mkdir", "-p", filepath.Dir(dst))
	if _, err := dockerCmd(2*time.Minute, "cp", src, w.id+":"+dst); err != nil {
		w.t.Fatal(err)
	}
}

// bootTimeline reads the node's journal since the reboot and returns
// when (after since) journald, containerd and the kubelet started, the device plugins registered
// with it (the first and the last registration request), and the kubelet
// first took pods bound to it from the API server ("SyncLoop ADD" with
// pods: the admission of those pods follows at once).
func (w *worker) bootTimeline(since time.Time) string {
	out, err := w.exec("journalctl", "-b", "0", "-o", "short-unix", "--no-pager")
	if err != nil {
		return err.Error()
	}
	marks := []struct{ name, substr string }{
		{"journal", "systemd-journald"},
		{"containerd started", "Started containerd.service"},
		{"kubelet started", "Started kubelet.service"},
		{"daemon started", "Started smarter-device-manager.service"},
		{"first plugin registered", "Got registration request from device plugin"},
		{"first pods from the API", `"SyncLoop ADD" source="api" pods=["`},
	}
	at := map[string]float64{}
	var lastReg float64
	for _, line := range strings.Split(out, "\n") {
		ts, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		sec, err := strconv.ParseFloat(ts, 64)
		if err != nil {
			continue
		}
		// A container shares the host's boot ID: -b 0 holds every boot
		// of the node; this one's entries are those after since.
		off := sec - float64(since.UnixNano())/1e9
		if off < 0 {
			continue
		}
		for _, m := range marks {
			if _, done := at[m.name]; !done && strings.Contains(rest, m.substr) {
				at[m.name] = off
			}
		}
		if strings.Contains(rest, "Got registration request from device plugin") {
			lastReg = off
		}
	}
	var parts []string
	for _, m := range marks {
		if v, ok := at[m.name]; ok {
			parts = append(parts, fmt.Sprintf("%s +%.1f s", m.name, v))
		}
	}
	if lastReg > 0 {
		parts = append(parts, fmt.Sprintf("last plugin registered +%.1f s", lastReg))
	}
	return strings.Join(parts, ", ")
}

// journal is the last lines of a unit's journal in the node, for a failure.
func (w *worker) journal(unit string) string {
	out, _ := w.exec("journalctl", "-u", unit, "--no-pager", "-n", "40")
	return out
}

// containerd's own unit (containerd.service upstream), its binaries from
// the bind-mounted cache.
const nodeContainerdUnit = `[Unit]
Description=containerd container runtime
After=network.target local-fs.target

[Service]
Environment=PATH=` + nodeBinDir + `:/usr/sbin:/usr/bin:/sbin:/bin
ExecStart=` + nodeBinDir + `/containerd --config /etc/containerd/config.toml
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
`

// The kubelet's unit, as Kubernetes' release packages install it (Restart
// always, RestartSec 10, no start limit): started by systemd at boot,
// after containerd. Its cgroup root
// (one per node, so two nodes' pods do not share cgroups on this machine's
// tree) is made first: the kubelet refuses a root that does not exist.
const nodeKubeletUnit = `[Unit]
Description=kubelet: the Kubernetes node agent
Wants=containerd.service
After=containerd.service
# As Kubernetes' own kubelet.service: never give up restarting it.
StartLimitIntervalSec=0

[Service]
ExecStartPre=/bin/sh -c 'for h in /sys/fs/cgroup/*/; do mkdir -p "$${h}%s"; done'
ExecStart=` + nodeBinDir + `/kubelet --config=%s/config.yaml --kubeconfig=/etc/kubernetes/kubelet.kubeconfig --hostname-override=%s --root-dir=%s --v=2
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
`

// TestCluster's kubelet settings at a node's standard paths, with its own
// cgroup root (kubeletSharedConfig follows).
const nodeKubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}
authorization:
  mode: Webhook
`

// devicePod is a device pod pinned to node.
func devicePod(name, node string, dev int) *corev1.Pod {
	p := probePod(name, dev, nil)
	p.Labels = map[string]string{"sdm-reboot": name}
	p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	return p
}

// deviceDeployment is a one-replica Deployment of device pods pinned to node.
func deviceDeployment(name, node string, dev int) *appsv1.Deployment {
	return deploymentOf(name, devicePod(name, node, dev))
}

// workload is one pod owner on a node: a bare pod or a Deployment.
type workload struct {
	name string // the bare pod's name or the Deployment's (and its pods' label)
	bare bool
	w    *worker
}

// pods are the workload's pods, newest first.
func (c *cluster) podsOf(t *testing.T, wl workload) []corev1.Pod {
	t.Helper()
	l, err := c.cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "sdm-reboot=" + wl.name})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(l.Items, func(i, j int) bool {
		return l.Items[j].CreationTimestamp.Before(&l.Items[i].CreationTimestamp)
	})
	return l.Items
}

// running is the workload's pod whose container runs and is Ready, and
// the container's ID; nil if none.
func (c *cluster) running(t *testing.T, wl workload) (*corev1.Pod, string) {
	for _, p := range c.podsOf(t, wl) {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(&p) &&
			len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil {
			return &p, p.Status.ContainerStatuses[0].ContainerID
		}
	}
	return nil, ""
}

// The two reboots: systemd shuts the node down (SIGRTMIN+3, what
// `docker stop` sends it here), or its power goes (SIGKILL to every
// process of the node).
const (
	cleanReboot = "reboot (docker stop, start)"
	powerCut    = "power cut (docker kill, start)"
)

// removeCgroupsWait removes the cgroup name in every hierarchy, retrying
// while the kernel still holds one (its last tasks exiting).
func removeCgroupsWait(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		removeCgroups(name)
		left, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", name))
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroups of the stopped node still there after %v: %v", timeout, left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rebootResult is what one workload went through in one reboot.
type rebootResult struct {
	wl         workload
	back       time.Duration // reboot begun to a new container running with its device; 0 if never
	admissions int           // its pods the kubelet refused with UnexpectedAdmissionError
	message    string        // the first refusal's message
}

// nodeEnv is what every worker-node test starts from: the node image, the
// .deb (make release's build) and its release binaries, a control plane
// on this machine, and the images every node's containerd is given.
type nodeEnv struct {
	c       *cluster
	image   string
	gateway string
	deb     string
	dist    string   // the release binaries the .deb and the DaemonSet's image hold
	tars    []string // image tarballs: pause, devprobe, the daemon's tags asked for
}

// setUpNodes skips where the node suite cannot run (no Docker, no zram),
// removes what a killed run left, builds (or finds) the node image and the
// .deb, starts the control plane and writes the images: pause, devprobe,
// and the daemon's image under each tag in daemonTags. The test fails if a
// node container it started is still there at the end.
func setUpNodes(t *testing.T, daemonTags ...string) *nodeEnv {
	t.Helper()
	skipUnlessDocker(t)
	if _, err := os.Stat("/sys/class/zram-control/hot_add"); err != nil {
		t.Skip("SKIPPED: node suite: no zram hot_add (modprobe zram num_devices=0; scripts/test-deps.sh does)")
	}
	checkNoNodesLeft(t)
	removeStaleNodes(t)
	gateway := dockerGateway(t)
	debDir := t.TempDir()
	image, deb := imageAndDeb(t, debDir)
	e := &nodeEnv{image: image, gateway: gateway, deb: deb, dist: filepath.Join(debDir, "dist", "linux-"+runtime.GOARCH)}
	c := controlPlane(t, gateway)
	e.c = c
	imgDir := filepath.Join(baseDir, "images")
	c.must(os.MkdirAll(imgDir, 0o755))
	add := func(ref string, files []imageFile, dirs, entry []string, workdir string) {
		tar := filepath.Join(imgDir, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
		c.must(writeImage(tar, ref, files, dirs, entry, workdir))
		e.tars = append(e.tars, tar)
	}
	add(pauseImage, []imageFile{{path: "pause", src: filepath.Join(c.bin, "pause"), mode: 0o755}}, nil, []string{"/pause"}, "")
	probe := filepath.Join(baseDir, "devprobe")
	c.must(goBuild(probe, "./cmd/devprobe"))
	add(probeImage, []imageFile{{path: "devprobe", src: probe, mode: 0o755}}, nil, []string{"/devprobe"}, "")
	for _, tag := range daemonTags {
		add(daemonImage(tag), []imageFile{
			{path: "smarter-device-manager", src: filepath.Join(e.dist, "smarter-device-manager"), mode: 0o755},
			{path: "smarter-device-manager-dra", src: filepath.Join(e.dist, "smarter-device-manager-dra"), mode: 0o755},
		}, []string{"root"}, []string{"/smarter-device-manager"}, "/root")
	}
	return e
}

// installDeb installs the .deb on node w (the postinst starts the unit),
// adds the zram rule to its rules file and restarts the unit on it.
func (w *worker) installDeb(deb string) {
	w.t.Helper()
	w.copyIn(deb, "/root/deb/sdm.deb")
	w.must("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i", "/root/deb/sdm.deb")
	w.must("sh", "-c", "printf '%s' '"+zramRuleTOML+"' >> "+sdmConf)
	w.must("systemctl", "restart", sdmUnit)
}

// applyDaemonSet applies the project's plain manifest (the DaemonSet, its
// image daemonImage(tag), the zram rule for two pods added to its
// ConfigMap) and labels node w as its nodeSelector asks.
func (c *cluster) applyDaemonSet(t *testing.T, w *worker, tag string) {
	t.Helper()
	ctx := context.Background()
	c.labelForDaemonSet(t, w)
	objs, err := readManifest(filepath.Join("..", "packaging", "kubernetes", "smarter-device-manager.yaml"))
	c.must(err)
	c.must(forCluster(objs, daemonImage(tag), zramRuleShared))
	c.must(c.apply(ctx, objs))
}

// labelForDaemonSet labels node w as the manifests' nodeSelector asks.
func (c *cluster) labelForDaemonSet(t *testing.T, w *worker) {
	t.Helper()
	patch := []byte(`{"metadata":{"labels":{"smarter-device-manager":"enabled"}}}`)
	if _, err := c.cs.CoreV1().Nodes().Patch(context.Background(), w.name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestNodeReboot is issue 21's reboot: node A runs the daemon as the .deb's
// systemd service, ordered before the kubelet; node B runs it as the
// project's DaemonSet. Each node has one zram device; on each a bare pod
// and a Deployment's pod hold it. Each node is rebooted (clean, then a
// power cut) while the other runs on; the test measures, per pod, the time
// from the reboot to a new container of it running with its device (its
// log through the API server says it opened /dev/zramN), and counts the
// pods the kubelet refused at admission (UnexpectedAdmissionError: "cannot
// allocate unregistered device", the race between the kubelet and a
// device plugin after a reboot). On the systemd node there must be none;
// on the DaemonSet node the count is measured and the Deployment must
// recover. The figures are logged (REBOOT lines) for BENCHMARKS.md.
func TestNodeReboot(t *testing.T) {
	e := setUpNodes(t, "nodes")
	c := e.c
	ctx := context.Background()

	// One zram device per node, made before the nodes so that each is
	// there at every boot, as a device plugged in for good is.
	devA, devB := c.hotAdd(t), c.hotAdd(t)
	begin := time.Now()
	a := c.startWorker(t, e.image, e.gateway, "sdm-node-a", devA, e.tars)
	bn := c.startWorker(t, e.image, e.gateway, "sdm-node-b", devB, e.tars)
	t.Logf("nodes booted, containerd up, images imported in %s", time.Since(begin).Round(time.Millisecond))

	// Node A: the .deb, its unit enabled by the postinst; one rule for zram.
	a.installDeb(e.deb)
	a.startKubelet(c)
	bn.startKubelet(c)
	c.waitNodeAllocatable(t, a.name, zram(devA), 2)
	t.Logf("API: node %s (systemd service): %s=2 allocatable", a.name, zram(devA))

	// Node B: the project's DaemonSet, on the nodes the user labels.
	c.applyDaemonSet(t, bn, "nodes")
	c.waitNodeAllocatable(t, bn.name, zram(devB), 2)
	t.Logf("API: node %s (DaemonSet): %s=2 allocatable", bn.name, zram(devB))

	c.waitServiceAccount(t, "default")
	var wls []workload
	for _, w := range []*worker{a, bn} {
		bare := workload{name: "bare-" + w.name, bare: true, w: w}
		dep := workload{name: "deploy-" + w.name, w: w}
		if _, err := c.cs.AppsV1().Deployments("default").Create(ctx, deviceDeployment(dep.name, w.name, w.dev), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		wls = append(wls, bare, dep)
	}
	for _, wl := range wls {
		if wl.bare {
			c.ensureBarePod(t, wl)
		}
		c.waitWorkload(t, wl, "")
	}

	for _, kind := range []string{cleanReboot, powerCut} {
		for _, w := range []*worker{a, bn} {
			var mine []workload
			for _, wl := range wls {
				if wl.w == w {
					// A bare pod refused in an earlier reboot is gone for good:
					// the user makes it again.
					if wl.bare {
						c.ensureBarePod(t, wl)
					}
					mine = append(mine, wl)
				}
			}
			res := c.reboot(t, w, kind, mine)
			for _, r := range res {
				mode := "systemd"
				if w == bn {
					mode = "DaemonSet"
				}
				what := "Deployment"
				if r.wl.bare {
					what = "bare pod"
				}
				back := "never"
				if r.back > 0 {
					back = fmt.Sprintf("%.1f s", r.back.Seconds())
				}
				t.Logf("REBOOT %-30s %-9s %-10s running with its device again after %-8s UnexpectedAdmissionError %d %s",
					kind, mode, what, back, r.admissions, r.message)
				if w == a && r.admissions > 0 {
					t.Errorf("node %s (systemd service before the kubelet), %s: %d pods refused with %s after %s: %s",
						w.name, r.wl.name, r.admissions, unexpectedAdmission, kind, r.message)
				}
				if !r.wl.bare && r.back == 0 {
					t.Errorf("node %s, Deployment %s: no pod running with its device after %s", w.name, r.wl.name, kind)
				}
				if w == a && r.back == 0 {
					t.Errorf("node %s (systemd service), %s: not running with its device after %s", w.name, r.wl.name, kind)
				}
			}
		}
	}
}

// waitNodeAllocatable waits until node's allocatable has name=want.
func (c *cluster) waitNodeAllocatable(t *testing.T, node, name string, want int64) {
	t.Helper()
	c.poll(t, fmt.Sprintf("node %s allocatable %s=%d", node, name, want), func() (bool, string) {
		n, err := c.cs.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		q, ok := n.Status.Allocatable[corev1.ResourceName(name)]
		return ok && q.Value() == want, resources(n.Status.Allocatable)
	})
}

// ensureBarePod makes the bare pod again if it is gone or was refused.
func (c *cluster) ensureBarePod(t *testing.T, wl workload) {
	t.Helper()
	ctx := context.Background()
	p, err := c.cs.CoreV1().Pods("default").Get(ctx, wl.name, metav1.GetOptions{})
	if err == nil && p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded {
		return
	}
	if err == nil {
		zero := int64(0)
		if err := c.cs.CoreV1().Pods("default").Delete(ctx, wl.name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		c.poll(t, "pod "+wl.name+" deleted", func() (bool, string) {
			_, err := c.cs.CoreV1().Pods("default").Get(ctx, wl.name, metav1.GetOptions{})
			return err != nil, "still there"
		})
	}
	if _, err := c.cs.CoreV1().Pods("default").Create(ctx, devicePod(wl.name, wl.w.name, wl.w.dev), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitWorkload(t, wl, "")
}

// waitWorkload waits until the workload has a container running, other
// than old, and its log says it opened its device.
func (c *cluster) waitWorkload(t *testing.T, wl workload, old string) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	c.poll(t, wl.name+" running", func() (bool, string) {
		var id string
		p, id = c.running(t, wl)
		if p == nil || id == old {
			var st []string
			for _, q := range c.podsOf(t, wl) {
				st = append(st, podState(&q))
			}
			return false, strings.Join(st, "; ")
		}
		return true, ""
	})
	c.checkProbeLog(t, p.Name, wl.w.dev, 0)
	return p
}

// reboot reboots node w (kind: cleanReboot or powerCut)
// and measures each workload of it: the time until a new container of it
// runs with its device, and the pods refused at admission.
func (c *cluster) reboot(t *testing.T, w *worker, kind string, wls []workload) []rebootResult {
	t.Helper()
	ctx := context.Background()
	old := map[string]string{}
	seen := map[types.UID]bool{} // pods refused before this reboot are not its
	for _, wl := range wls {
		p, id := c.running(t, wl)
		if p == nil {
			t.Fatalf("%s: not running before the reboot", wl.name)
		}
		old[wl.name] = id
		for _, q := range c.podsOf(t, wl) {
			if q.Status.Reason == unexpectedAdmission {
				seen[q.UID] = true
			}
		}
	}
	begin := time.Now()
	// Stopped, then started: a node's cgroups live in this machine's
	// kernel, not in its container, so they outlive it; a real reboot
	// starts with none, and the kubelet's cAdvisor spends seconds on each
	// stale one (25 s for four here). So they go in between, as the
	// machine's power going does.
	stop := []string{"stop", "--time", "60", w.id}
	if kind == powerCut {
		stop = []string{"kill", w.id}
	}
	if _, err := dockerCmd(3*time.Minute, stop...); err != nil {
		t.Fatal(err)
	}
	if err := removeCgroupsWait(w.name, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := dockerCmd(time.Minute, "start", w.id); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %s: %s took %s", w.name, kind, time.Since(begin).Round(time.Millisecond))

	res := make([]rebootResult, len(wls))
	deadline := begin.Add(converge)
	for {
		done := true
		for i, wl := range wls {
			r := &res[i]
			r.wl = wl
			if r.back > 0 {
				continue
			}
			// Refused pods: the bare pod ends there; a Deployment's is replaced.
			refused := 0
			for _, q := range c.podsOf(t, wl) {
				if q.Status.Reason == unexpectedAdmission && !seen[q.UID] {
					refused++
					if r.message == "" {
						r.message = q.Status.Message
					}
				}
			}
			r.admissions = refused
			if wl.bare && refused > 0 {
				continue
			}
			if p, id := c.running(t, wl); p != nil && id != old[wl.name] {
				r.back = time.Since(begin)
				continue
			}
			done = false
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("TIMELINE %s %s, from the reboot: %s", w.name, kind, w.bootTimeline(begin))
	for i, wl := range wls {
		if res[i].back > 0 {
			p, _ := c.running(t, wl)
			if p != nil {
				c.checkProbeLog(t, p.Name, w.dev, 0)
			}
		} else if !wl.bare || res[i].admissions == 0 {
			var st []string
			for _, q := range c.podsOf(t, wl) {
				st = append(st, podState(&q))
			}
			t.Logf("%s after %s: %s\nkubelet:\n%s", wl.name, kind, strings.Join(st, "; "), w.journal("kubelet.service"))
		}
		// Refused pods of a Deployment stay as Failed: cleared so the next
		// reboot counts its own.
		for _, q := range c.podsOf(t, wl) {
			if !wl.bare && q.Status.Phase == corev1.PodFailed {
				_ = c.cs.CoreV1().Pods("default").Delete(ctx, q.Name, metav1.DeleteOptions{})
			}
		}
	}
	return res
}
