package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Where the cluster lives. The kubelet's root is the standard one because
// the project's manifest mounts /var/lib/kubelet/device-plugins from the
// host: the manifest is applied as shipped. Everything else is the suite's
// own: containerd never shares the Docker engine's root, state or socket
// (/run/containerd is not touched).
const (
	baseDir    = "/var/lib/sdm-cluster"
	runDir     = "/run/sdm-cluster"
	kubeletDir = "/var/lib/kubelet"
	nodeName   = "sdm-cluster"
	// The pause image: the cluster's own (cluster/cmd/pause), FROM scratch.
	pauseImage = "docker.io/library/sdm-cluster-pause:1"
	// The cgroup the kubelet makes for pods under every v1 hierarchy (its
	// cgroupRoot is /): removed at teardown.
	podCgroup = "kubepods"
	// The file that marks kubeletDir as the suite's while it runs.
	kubeletMark = ".sdm-cluster"
	// The kubernetes Service's address (the first of the service range).
	serviceIP = "10.96.0.1"
)

// cluster is a running single-node cluster and what tears it down.
type cluster struct {
	t              *testing.T
	bin            string // the binaries of scripts/cluster-build.sh
	logs           string // every process's log
	pki            *pki
	procs          []*proc // in start order; stopped in reverse
	server         string  // the API server's URL
	cs             *kubernetes.Clientset
	rest           *rest.Config
	ctrSock        string
	apiPort        int
	serviceIPOnLo  bool              // 10.96.0.1 added to lo (step 5): removed at teardown
	serviceDNAT    bool              // its DNAT rule added (step 5): removed at teardown
	sysctls        map[string]string // what the kubelet changes, as it was
	madeDirs       []string          // host directories the DaemonSet's volumes created
	zram           []int             // zram devices hot-added, removed at teardown
	madeKubeletDir bool
	// The node suite (nodes_reboot_test.go): the control plane only, its
	// kubelets in node containers; the host's kubelet directory is left
	// alone, and the API server's certificate names these addresses too.
	noHostKubelet bool
	extraHosts    []string
}

// binDir finds the cluster's binaries: SDM_CLUSTER_BIN (make e2e-cluster
// sets it), else whatever scripts/cluster-build.sh has cached (building
// them if need be: a cold build is long).
func binDir(t *testing.T) string {
	if d := os.Getenv("SDM_CLUSTER_BIN"); d != "" {
		return d
	}
	t.Log("SDM_CLUSTER_BIN unset: running scripts/cluster-build.sh (a cold build compiles Kubernetes)")
	cmd := exec.Command("bash", "../scripts/cluster-build.sh")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cluster-build: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// skipUnlessCapable skips where the suite cannot run, naming why.
func skipUnlessCapable(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cluster suite: needs root (kubelet, containerd, runc, zram)")
	}
	if _, err := os.Stat("/usr/sbin/runc"); err != nil {
		t.Skip("cluster suite: no /usr/sbin/runc (scripts/test-deps.sh installs Debian's)")
	}
	if _, err := os.Stat("/sys/class/zram-control/hot_add"); err != nil {
		t.Skip("cluster suite: no zram hot_add (modprobe zram num_devices=0; scripts/test-deps.sh does)")
	}
	_, ours := os.Stat(filepath.Join(kubeletDir, kubeletMark))
	if ents, err := os.ReadDir(filepath.Join(kubeletDir, "pods")); err == nil && len(ents) > 0 && ours != nil {
		t.Skipf("cluster suite: %s/pods is not empty: another kubelet's state; the suite will not touch it", kubeletDir)
	}
}

// up brings the cluster up; t.Cleanup tears down whatever of it started.
func up(t *testing.T) *cluster {
	skipUnlessCapable(t)
	c := &cluster{t: t, bin: binDir(t)}
	t.Cleanup(c.down)
	// A run killed before its teardown leaves state behind: clear it first
	// (and the kubelet directory, if that run made it).
	if _, err := os.Stat(filepath.Join(kubeletDir, kubeletMark)); err == nil {
		c.madeKubeletDir = true
	}
	c.clearLeftovers()
	if _, err := os.Stat(kubeletDir); errors.Is(err, os.ErrNotExist) {
		c.madeKubeletDir = true
	}
	// Marks the kubelet directory as the suite's until teardown: a run
	// killed before it leaves pods there, which the next run clears
	// instead of taking them for another kubelet's.
	if err := os.MkdirAll(kubeletDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(kubeletDir, kubeletMark), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The manifests' hostPath volumes of type DirectoryOrCreate make these
	// when missing; teardown removes the ones it made, if left empty.
	for _, d := range []string{"/run/udev", "/var/run/cdi"} {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			c.madeDirs = append(c.madeDirs, d)
		}
	}
	c.logs = filepath.Join(baseDir, "logs")
	if err := os.MkdirAll(c.logs, 0o755); err != nil {
		t.Fatal(err)
	}
	// Keep the logs of a failed run for the reader: copied out at teardown.
	t.Logf("cluster: binaries %s; logs %s (kept in %s when a test fails)", c.bin, c.logs, filepath.Join(os.TempDir(), "sdm-cluster-logs"))

	begin := time.Now()
	c.must(c.certs())
	c.must(c.startEtcd())
	c.must(c.startAPIServer())
	c.must(c.startControlPlane())
	c.must(c.startContainerd())
	c.must(c.importImage(pauseImage, []imageFile{{path: "pause", src: filepath.Join(c.bin, "pause"), mode: 0o755}}, nil, []string{"/pause"}, ""))
	c.must(c.startKubelet())
	c.must(c.waitNodeReady())
	t.Logf("cluster: up in %s (node %s Ready)", time.Since(begin).Round(time.Second), nodeName)
	return c
}

func (c *cluster) must(err error) {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) certs() error {
	p, err := newPKI(filepath.Join(baseDir, "pki"))
	if err != nil {
		return err
	}
	c.pki = p
	hosts := []string{"127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if ip := hostIP(); ip != "" {
		hosts = append(hosts, ip)
	}
	hosts = append(hosts, c.extraHosts...)
	for _, x := range []struct {
		name, cn string
		orgs     []string
		hosts    []string
	}{
		{"apiserver", "kube-apiserver", nil, hosts},
		{"admin", "sdm-cluster-admin", []string{"system:masters"}, nil},
		// The API server reaches the kubelet (logs, exec) as a member of
		// system:masters, which the kubelet's webhook authorization allows.
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil},
		{"scheduler", "system:kube-scheduler", nil, nil},
		{"controller-manager", "system:kube-controller-manager", nil, nil},
		// The Node authorizer and NodeRestriction admit this identity for
		// its own node only, as a kubeadm-joined kubelet's.
		{"kubelet", "system:node:" + nodeName, []string{"system:nodes"}, nil},
	} {
		if err := p.issue(x.name, x.cn, x.orgs, x.hosts); err != nil {
			return err
		}
	}
	return p.serviceAccountKey()
}

// hostIP is the address the kubelet will report for the node (the source
// of the default route), which the API server dials for logs.
func hostIP() string {
	conn, err := net.Dial("udp", "192.0.2.1:9")
	if err != nil {
		return ""
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String()
}

func (c *cluster) startEtcd() error {
	cp, err := freePort()
	if err != nil {
		return err
	}
	pp, err := freePort()
	if err != nil {
		return err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", cp)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pp)
	p, err := start(c.logs, "etcd", nil, filepath.Join(c.bin, "etcd"),
		"--name=sdm", "--data-dir="+filepath.Join(baseDir, "etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=sdm="+peer,
		// The data is thrown away at teardown: no fsync spares a loaded disk.
		"--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return c.waitTCP(p, fmt.Sprintf("127.0.0.1:%d", cp))
}

func (c *cluster) etcdURL() string {
	for _, a := range c.procs[0].cmd.Args {
		if v, ok := strings.CutPrefix(a, "--listen-client-urls="); ok {
			return v
		}
	}
	return ""
}

// waitTCP waits until addr accepts connections, or p exits.
func (c *cluster) waitTCP(p *proc, addr string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail(30))
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s: nothing listens on %s after 2 minutes\n%s", p.name, addr, p.tail(30))
}

func (c *cluster) startAPIServer() error {
	// 443, the kubernetes Service's port, where it is free: in DRA mode the
	// driver's pod reaches the API server at the Service's address, and
	// with no kube-proxy on this node, that address is put on lo (step 5)
	// and the API server itself answers there.
	port := 443
	if l, err := net.Listen("tcp", ":443"); err == nil {
		l.Close()
	} else if port, err = freePort(); err != nil {
		return err
	}
	c.apiPort = port
	k := c.pki.path
	p, err := start(c.logs, "kube-apiserver", nil, filepath.Join(c.bin, "kube-apiserver"),
		"--etcd-servers="+c.etcdURL(),
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+filepath.Join(baseDir, "apiserver"),
		"--tls-cert-file="+k("apiserver.crt"), "--tls-private-key-file="+k("apiserver.key"),
		"--client-ca-file="+k("ca.crt"),
		"--kubelet-client-certificate="+k("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+k("apiserver-kubelet-client.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+k("sa.pub"),
		"--service-account-signing-key-file="+k("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		// The node's name is no host name: reach the kubelet by its address.
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--profiling=false")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	c.server = fmt.Sprintf("https://127.0.0.1:%d", port)
	for _, n := range []string{"admin", "scheduler", "controller-manager", "kubelet"} {
		if err := c.pki.kubeconfig(filepath.Join(baseDir, n+".kubeconfig"), c.server, n); err != nil {
			return err
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(baseDir, "admin.kubeconfig"))
	if err != nil {
		return fmt.Errorf("admin kubeconfig: %w", err)
	}
	c.rest = cfg
	if c.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	// Ready: /readyz answers ok (etcd reached, the bootstrap RBAC policy
	// and priority classes in place).
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("kube-apiserver exited: %v\n%s", p.err, p.tail(40))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		b, err := c.cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		cancel()
		if err == nil && string(b) == "ok" {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after 3 minutes\n%s", p.tail(40))
}

func (c *cluster) startControlPlane() error {
	k := c.pki.path
	sp, err := freePort()
	if err != nil {
		return err
	}
	p, err := start(c.logs, "kube-scheduler", nil, filepath.Join(c.bin, "kube-scheduler"),
		"--kubeconfig="+filepath.Join(baseDir, "scheduler.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(baseDir, "scheduler.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(baseDir, "scheduler.kubeconfig"),
		"--leader-elect=false", "--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", sp))
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	cp, err := freePort()
	if err != nil {
		return err
	}
	p, err = start(c.logs, "kube-controller-manager", nil, filepath.Join(c.bin, "kube-controller-manager"),
		"--kubeconfig="+filepath.Join(baseDir, "controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(baseDir, "controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(baseDir, "controller-manager.kubeconfig"),
		"--leader-elect=false", "--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", cp),
		// kube-root-ca.crt in every namespace: a pod's service account
		// volume waits for it.
		"--root-ca-file="+k("ca.crt"),
		"--service-account-private-key-file="+k("sa.key"),
		"--use-service-account-credentials=true",
		"--controllers=*")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

// hostNetworkOnlyConflist is the CNI configuration of every containerd of
// the suites (see startContainerd).
const hostNetworkOnlyConflist = `{"cniVersion":"1.0.0","name":"sdm-cluster-host-network-only","plugins":[{"type":"sdm-cluster-no-pod-network"}]}`

// containerdConfig is the configuration of every containerd of the suites
// (this machine's and the worker nodes'), at the paths given: its root and
// state, its socket, the CNI configuration and plugin directories, runc's
// state and the CRI stream server's port.
func containerdConfig(root, state, sock, cniConf, cniBin, runcRoot string, streamPort int) string {
	return fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
[plugins."io.containerd.cri.v1.runtime"]
  # A device's node in the container is owned by the pod's runAsUser and
  # runAsGroup, so a non-root container can open what it was given.
  device_ownership_from_security_context = true
  # This machine forbids lowering a process's oom_score_adj (even as
  # root); runc would fail the pod's sandbox (-998) at "can't get final
  # child's PID from pipe". Clamp to containerd's own score instead.
  restrict_oom_score_adj = true
  cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]
  [plugins."io.containerd.cri.v1.runtime".cni]
    conf_dir = %q
    bin_dirs = [%q]
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      BinaryName = "/usr/sbin/runc"
      Root = %q
      SystemdCgroup = false
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "%d"
`, root, state, sock, sock+".ttrpc", pauseImage, cniConf, cniBin, runcRoot, streamPort)
}

func (c *cluster) startContainerd() error {
	root := filepath.Join(baseDir, "containerd")
	state := filepath.Join(runDir, "containerd")
	c.ctrSock = filepath.Join(state, "containerd.sock")
	cniDir := filepath.Join(baseDir, "cni", "net.d")
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		return err
	}
	// No CNI: every pod uses the host's network. containerd's CRI reports
	// NetworkReady=false, and the node NotReady, until it has loaded a
	// network config; this one names a plugin that does not exist, so a
	// pod that is not hostNetwork fails at once instead of half-working.
	// CNI 1.0.0: containerd asks a plugin for its STATUS only from 1.1.0.
	if err := os.WriteFile(filepath.Join(cniDir, "10-host-network-only.conflist"), []byte(hostNetworkOnlyConflist), 0o644); err != nil {
		return err
	}
	sp, err := freePort()
	if err != nil {
		return err
	}
	cfg := containerdConfig(root, state, c.ctrSock, cniDir, filepath.Join(baseDir, "cni", "bin"), filepath.Join(runDir, "runc"), sp)
	path := filepath.Join(baseDir, "containerd.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	// The shim is found on PATH: the cache's, before any other.
	env := []string{"PATH=" + c.bin + ":" + os.Getenv("PATH")}
	p, err := start(c.logs, "containerd", env, filepath.Join(c.bin, "containerd"), "--config="+path)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("containerd exited: %v\n%s", p.err, p.tail(30))
		}
		if _, err := c.ctr("version"); err == nil {
			return nil
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("containerd not serving after 2 minutes\n%s", p.tail(30))
}

// ctr runs the suite's ctr against its containerd, in the CRI's namespace.
func (c *cluster) ctr(args ...string) (string, error) {
	cmd := exec.Command("nice", append([]string{"-n", "19", filepath.Join(c.bin, "ctr"), "--address", c.ctrSock, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// importImage writes a FROM scratch image and imports it with ctr, as one
// does without a registry.
func (c *cluster) importImage(ref string, files []imageFile, dirs []string, entrypoint []string, workdir string) error {
	tarball := filepath.Join(baseDir, "images", strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
	if err := os.MkdirAll(filepath.Dir(tarball), 0o755); err != nil {
		return err
	}
	if err := writeImage(tarball, ref, files, dirs, entrypoint, workdir); err != nil {
		return err
	}
	_, err := c.ctr("images", "import", tarball)
	return err
}

// kubeletSysctls are the kernel settings every kubelet sets on its node
// (pkg/kubelet/cm: setupKernelTunables; protectKernelDefaults: true would
// refuse to start instead): saved before, restored at teardown.
var kubeletSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// saveSysctls records the kubelet's kernel settings as they are, to be
// put back at teardown: in c.sysctls, and outside baseDir too, so that a
// run killed before its teardown leaves them to the next run
// (restoreSysctls).
func (c *cluster) saveSysctls() error {
	c.sysctls = map[string]string{}
	var saved strings.Builder
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			c.sysctls[k] = strings.TrimSpace(string(b))
			fmt.Fprintf(&saved, "%s %s\n", k, c.sysctls[k])
		}
	}
	return os.WriteFile(sysctlState, []byte(saved.String()), 0o644)
}

// kubeletSharedConfig ends every kubelet configuration of the suites (this
// one's and the worker nodes'): the disk and memory are shared with other
// work, so evict only when nearly nothing is left, and never collect
// images (they are imported, not pulled).
const kubeletSharedConfig = `evictionHard:
  memory.available: 50Mi
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
`

func (c *cluster) startKubelet() error {
	if err := c.saveSysctls(); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine: cgroup v1 (the devices controller mounted), no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://%s
port: %d
readOnlyPort: 0
healthzPort: 0
podLogsDir: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization:
  mode: Webhook
`, c.ctrSock, port, filepath.Join(baseDir, "pod-logs"), c.pki.path("ca.crt")) + kubeletSharedConfig
	path := filepath.Join(baseDir, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := start(c.logs, "kubelet", nil, filepath.Join(c.bin, "kubelet"),
		"--config="+path,
		"--kubeconfig="+filepath.Join(baseDir, "kubelet.kubeconfig"),
		"--root-dir="+kubeletDir,
		"--hostname-override="+nodeName,
		"--node-ip="+hostIP(),
		"--v=2")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

func (c *cluster) kubelet() *proc {
	for _, p := range c.procs {
		if p.name == "kubelet" {
			return p
		}
	}
	return nil
}

func (c *cluster) waitNodeReady() error {
	deadline := time.Now().Add(4 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		if k := c.kubelet(); k.exited() {
			return fmt.Errorf("kubelet exited: %v\n%s", k.err, k.tail(40))
		}
		n, err := c.cs.CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
		if err == nil {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					last = fmt.Sprintf("%s: %s", cond.Reason, cond.Message)
					if cond.Status == corev1.ConditionTrue {
						return nil
					}
				}
			}
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("node %s not Ready after 4 minutes (%s)\n%s", nodeName, last, c.kubelet().tail(40))
}

// down tears down everything up started, in reverse: the API objects the
// tests made go with etcd's data; containers and their shims, processes,
// mounts, cgroups, directories, zram devices.
func (c *cluster) down() {
	if c.t.Failed() && c.logs != "" {
		keep := filepath.Join(os.TempDir(), "sdm-cluster-logs")
		_ = os.RemoveAll(keep)
		_ = exec.Command("cp", "-a", c.logs, keep).Run()
		c.t.Logf("cluster: logs kept in %s", keep)
	}
	// The kubelet first, so it restarts nothing; then every container
	// (sandboxes included) through containerd, which ends their shims.
	for i := len(c.procs) - 1; i >= 0; i-- {
		if c.procs[i].name == "kubelet" {
			c.procs[i].stop(20 * time.Second)
		}
	}
	if c.ctrSock != "" {
		if out, err := c.ctr("tasks", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				_, _ = c.ctr("tasks", "kill", "-s", "SIGKILL", id)
				_, _ = c.ctr("tasks", "rm", "-f", id)
			}
		}
		if out, err := c.ctr("containers", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				_, _ = c.ctr("containers", "rm", id)
			}
		}
		if out, err := c.ctr("images", "ls", "-q"); err == nil {
			for _, ref := range strings.Fields(out) {
				_, _ = c.ctr("images", "rm", "--sync", ref)
			}
		}
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(20 * time.Second)
	}
	c.clearState()
	for k, v := range c.sysctls {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			c.t.Logf("cluster: restore %s=%s: %v", k, v, err)
		}
	}
	if c.sysctls != nil {
		_ = os.Remove(sysctlState)
	}
	for _, d := range c.madeDirs {
		_ = os.Remove(d) // only if empty: someone else may use it now
	}
	if c.serviceDNAT {
		if err := clearServiceDNAT(); err != nil {
			c.t.Logf("cluster: %v", err)
		}
	}
	if c.serviceIPOnLo {
		if out, err := exec.Command("ip", "addr", "del", serviceIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
			c.t.Logf("cluster: ip addr del %s: %v: %s", serviceIP, err, out)
		}
	}
	for _, n := range c.zram {
		if err := hotRemove(n); err != nil {
			c.t.Log(err)
		}
	}
	_ = os.Remove(zramState)
}

// clearState removes what the cluster leaves on the machine once its
// processes are gone (or what a killed run left): shims still running from
// the suite's binary, mounts under its directories and the kubelet's,
// the kubelet's pod cgroups, the directories.
func (c *cluster) clearState() {
	if c.bin != "" {
		if err := killPIDs(filepath.Join(c.bin, "containerd-shim-runc-v2")); err != nil {
			c.t.Log(err)
		}
	}
	if c.noHostKubelet {
		unmountUnder(baseDir, runDir)
		for _, d := range []string{baseDir, runDir} {
			if err := os.RemoveAll(d); err != nil {
				c.t.Logf("cluster: remove %s: %v", d, err)
			}
		}
		return
	}
	unmountUnder(baseDir, runDir, kubeletDir)
	removeCgroups(podCgroup)
	// CDI specs the DRA driver (step 5) wrote for claims and did not get
	// to remove: only its own, by their file names.
	if specs, _ := filepath.Glob("/var/run/cdi/device-manager.smarter-project.github.io_*"); len(specs) > 0 {
		for _, f := range specs {
			_ = os.Remove(f)
		}
	}
	for _, d := range []string{baseDir, runDir} {
		if err := os.RemoveAll(d); err != nil {
			c.t.Logf("cluster: remove %s: %v", d, err)
		}
	}
	if c.madeKubeletDir {
		if err := os.RemoveAll(kubeletDir); err != nil {
			c.t.Logf("cluster: remove %s: %v", kubeletDir, err)
		}
	} else {
		for _, d := range []string{"pods", "plugins", "plugins_registry", "pod-resources", "checkpoints", "pki", "cpu_manager_state", "memory_manager_state", "dra_manager_state"} {
			_ = os.RemoveAll(filepath.Join(kubeletDir, d))
		}
		// The device plugin directory: the kubelet's socket and checkpoint.
		_ = os.RemoveAll(filepath.Join(kubeletDir, "device-plugins"))
		_ = os.Remove(filepath.Join(kubeletDir, kubeletMark))
	}
}

// unmountUnder unmounts every mount point under the prefixes, deepest first.
func unmountUnder(prefixes ...string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		for _, p := range prefixes {
			if mp == p || strings.HasPrefix(mp, p+"/") {
				points = append(points, mp)
			}
		}
	}
	f.Close()
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, mp := range points {
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes the cgroup name, and every cgroup below it, from
// clearLeftovers clears what a run killed before its teardown left (its
// state, zram devices, kernel settings) and makes the suite's directories.
func (c *cluster) clearLeftovers() {
	c.clearState()
	removeStaleZram()
	if err := clearServiceDNAT(); err != nil {
		c.t.Fatal(err)
	}
	restoreSysctls()
	for _, d := range []string{baseDir, runDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			c.t.Fatal(err)
		}
	}
}

// each cgroup v1 hierarchy (and the unified one), children first.
func removeCgroups(name string) {
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hier {
		root := filepath.Join(h, name)
		if _, err := os.Stat(root); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
}

// zramState lists the zram devices the suite has added and not removed,
// outside baseDir (which teardown removes first): a run killed before its
// teardown leaves them to the next run's clearState.
const zramState = "/var/lib/sdm-cluster.zram"

func (c *cluster) saveZram() {
	var b strings.Builder
	for _, n := range c.zram {
		fmt.Fprintf(&b, "%d\n", n)
	}
	if err := os.WriteFile(zramState, []byte(b.String()), 0o644); err != nil {
		c.t.Logf("cluster: %v", err)
	}
}

// sysctlState holds the kernel settings as they were before the kubelet
// started, until teardown has put them back.
const sysctlState = "/var/lib/sdm-cluster.sysctl"

// restoreSysctls puts back what a killed run's kubelet changed.
func restoreSysctls() {
	b, err := os.ReadFile(sysctlState)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && !strings.Contains(k, "..") {
			_ = os.WriteFile("/proc/sys/"+k, []byte(v), 0o644)
		}
	}
	_ = os.Remove(sysctlState)
}

// removeStaleZram removes the zram devices a killed run added.
func removeStaleZram() {
	b, err := os.ReadFile(zramState)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			_ = hotRemove(n)
		}
	}
	_ = os.Remove(zramState)
}

// hotAdd adds a zram device and returns its number.
func hotAdd() (int, error) {
	b, err := os.ReadFile("/sys/class/zram-control/hot_add")
	if err != nil {
		return 0, fmt.Errorf("zram hot_add: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func hotRemove(n int) error {
	if err := os.WriteFile("/sys/class/zram-control/hot_remove", []byte(strconv.Itoa(n)), 0o200); err != nil {
		return fmt.Errorf("zram hot_remove %d: %w", n, err)
	}
	return nil
}
