package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apiserver/pkg/storage/etcd3/testserver"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/tools/record"
	pluginwatcherapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	kubeapiservertesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"
	"k8s.io/kubernetes/pkg/kubelet/cm/dra"
	draplugin "k8s.io/kubernetes/pkg/kubelet/cm/dra/plugin"
	"k8s.io/kubernetes/pkg/kubelet/pluginmanager"
)

// The DRA tests run the daemon in DRA mode against real parts in this
// process: an etcd (go.etcd.io/etcd/server/v3/embed, through
// k8s.io/apiserver's test server) under kube-apiserver (k8s.io/kubernetes'
// own test server: its validation, defaulting, admission and storage),
// and the kubelet's DRA manager (pkg/kubelet/cm/dra) behind the kubelet's
// plugin manager, which finds the daemon's registration socket as a
// kubelet does. The daemon is the device-plugin binary with --mode=dra,
// which hands over to the DRA binary beside it, built with -tags dra.

// draDriver is the daemon's default DRA driver name.
const draDriver = "device-manager.smarter-project.github.io"

// draNodeName is the node the daemon publishes for and the kubelet runs as.
const draNodeName = "sdm-e2e-node"

// draBin is the DRA binary, built once beside the daemon binary.
var draBin struct {
	once sync.Once
	err  error
}

// requireDRABinary builds smarter-device-manager-dra beside daemonBinary
// (with -race when the suite has it), where --mode=dra looks for it; a
// prebuilt daemon (SDM_E2E_DAEMON) must have it beside it already.
func requireDRABinary(t *testing.T) {
	t.Helper()
	requireSuite(t)
	draBin.once.Do(func() {
		bin := filepath.Join(filepath.Dir(daemonBinary), "smarter-device-manager-dra")
		if os.Getenv("SDM_E2E_DAEMON") != "" {
			if _, err := os.Stat(bin); err != nil {
				draBin.err = fmt.Errorf("SDM_E2E_DAEMON is set and the DRA binary is not beside it (make build makes both): %w", err)
			}
			return
		}
		args := []string{"build", "-tags", "dra", "-o", bin}
		if daemonRace() {
			args = append(args, "-race")
		}
		cmd := exec.Command(goTool(), append(args, "./cmd/smarter-device-manager")...)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			draBin.err = fmt.Errorf("building the DRA binary: %w\n%s", err, out)
		}
	})
	if draBin.err != nil {
		t.Fatal(draBin.err)
	}
}

// draNode is a node in DRA mode: the API server (with its etcd), the
// kubelet's DRA manager, and the daemon (node's process handling).
type draNode struct {
	*node
	client     kubernetes.Interface
	kubeconfig string
	kubeletDir string // --kubelet-dir: plugins_registry and plugins/<driver>
	kubelet    *dra.Manager
	stopPM     context.CancelFunc // stops the kubelet's plugin manager
	pmDone     chan struct{}
	node0      *v1.Node // the Node object
}

// startAPIServer starts etcd and kube-apiserver for the test; cleanup
// stops both (after everything registered later). It returns a client
// config with the API server's loopback (system:masters) credentials.
func startAPIServer(t *testing.T) *rest.Config {
	t.Helper()
	cfg, _ := startAPIServerEtcd(t)
	return cfg
}

// startAPIServerEtcd is startAPIServer that also returns etcd's client
// URL (the fleet benchmark reads its size).
func startAPIServerEtcd(t *testing.T, extraFlags ...string) (*rest.Config, string) {
	t.Helper()
	etcdCfg := testserver.NewTestConfig(t)
	testserver.RunEtcd(t, etcdCfg)
	storage := storagebackend.NewDefaultConfig("/"+strings.ToLower(t.Name())+"/registry", nil)
	storage.Transport.ServerList = []string{etcdCfg.ListenClientUrls[0].String()}
	flags := []string{
		// GA or beta and on by default in 1.37; named so that a release
		// that turns one off fails here, not later in a puzzling way.
		"--runtime-config=resource.k8s.io/v1=true",
		"--feature-gates=DRADeviceTaints=true,DRAConsumableCapacity=true,DRAExtendedResource=true",
	}
	flags = append(flags, extraFlags...)
	srv, err := kubeapiservertesting.StartTestServer(t, &kubeapiservertesting.TestServerInstanceOptions{DisableInvariantChecks: true}, flags, storage)
	if err != nil {
		t.Fatalf("starting kube-apiserver: %v", err)
	}
	t.Cleanup(srv.TearDownFn)
	return srv.ClientConfig, etcdCfg.ListenClientUrls[0].String()
}

// writeKubeconfig writes cfg as a kubeconfig the daemon can read.
func writeKubeconfig(t *testing.T, cfg *rest.Config, path string) {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData, TLSServerName: cfg.ServerName}
	kc.AuthInfos["e2e"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "e2e"}
	kc.CurrentContext = "e2e"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
}

// newDRANode starts the API server, creates the Node, and prepares the
// daemon's command line for DRA mode on rules; removeAfter is its
// --remove-after. Neither the kubelet nor the daemon runs yet.
func newDRANode(t *testing.T, rules, removeAfter string) *draNode {
	t.Helper()
	requireDRABinary(t)
	cfg := startAPIServer(t)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := &draNode{client: client}
	// After the API server: cleanup stops the daemon first.
	d.node = newNode(t, rules)
	d.kubeletDir = d.dir
	d.cdiDir = mkdirTemp(t)
	d.kubeconfig = filepath.Join(mkdirTemp(t), "kubeconfig")
	writeKubeconfig(t, cfg, d.kubeconfig)
	d.daemonArgs = []string{"--mode=dra", "--kubeconfig", d.kubeconfig, "--node-name", draNodeName,
		"--kubelet-dir", d.kubeletDir, "--cdi-dir", d.cdiDir, "--remove-after", removeAfter}
	d.node0, err = client.CoreV1().Nodes().Create(d.ctx(), &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: draNodeName}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the Node: %v", err)
	}
	return d
}

// startKubeletDRA starts the kubelet's DRA manager and its plugin
// manager watching plugins_registry, as the kubelet wires them: the
// manager's handler registers the daemon when its socket appears.
func (d *draNode) startKubeletDRA() {
	d.t.Helper()
	stateDir := mkdirTemp(d.t)
	m, err := dra.NewManager(d.logger, d.client, stateDir)
	if err != nil {
		d.t.Fatalf("new DRA manager: %v", err)
	}
	ctx, cancel := context.WithCancel(d.ctx())
	getNode := func(ctx context.Context) (*v1.Node, error) {
		return d.client.CoreV1().Nodes().Get(ctx, draNodeName, metav1.GetOptions{})
	}
	if err := m.Start(ctx, d.pods.active, getNode, sourcesReady{}); err != nil {
		cancel()
		d.t.Fatalf("starting the DRA manager: %v", err)
	}
	pm := pluginmanager.NewPluginManager(filepath.Join(d.kubeletDir, "plugins_registry"), &record.FakeRecorder{})
	pm.AddHandler(pluginwatcherapi.DRAPlugin, m.GetWatcherHandler())
	d.kubelet, d.stopPM, d.pmDone = m, cancel, make(chan struct{})
	go func() {
		defer close(d.pmDone)
		pm.Run(ctx, sourcesReady{}, ctx.Done())
	}()
	d.t.Cleanup(d.stopKubeletDRA)
}

func (d *draNode) stopKubeletDRA() {
	if d.kubelet == nil {
		return
	}
	d.stopPM()
	<-d.pmDone
	d.kubelet.Stop()
	d.kubelet = nil
}

// waitRegistered waits until the kubelet's DRA manager has the driver
// registered (its plugin store answers for it) by a registration other
// than before (nil: any), and returns it. A restarted daemon makes its
// sockets anew; the kubelet's plugin watcher sees the new registration
// socket and registers it again, with a new connection: until then the
// kubelet holds the old process's.
func (d *draNode) waitRegistered(what string, before *draplugin.DRAPlugin) *draplugin.DRAPlugin {
	d.t.Helper()
	var p *draplugin.DRAPlugin
	var err error
	d.poll(what, func() bool {
		p, err = d.plugin()
		return err == nil && p != before
	}, func() string {
		return fmt.Sprintf("the kubelet's plugin for %s: %p (before: %p), %v", draDriver, p, before, err)
	})
	return p
}

// plugin is the kubelet's registration of the driver.
func (d *draNode) plugin() (*draplugin.DRAPlugin, error) {
	return d.kubelet.GetWatcherHandler().(*draplugin.DRAPluginManager).GetPlugin(draDriver)
}

// slices returns the node's ResourceSlices of the driver in the API server.
func (d *draNode) slices() []resourceapi.ResourceSlice {
	d.t.Helper()
	sel := fields.Set{resourceapi.ResourceSliceSelectorNodeName: draNodeName, resourceapi.ResourceSliceSelectorDriver: draDriver}
	list, err := d.client.ResourceV1().ResourceSlices().List(d.ctx(), metav1.ListOptions{FieldSelector: sel.String()})
	if err != nil {
		d.t.Fatalf("listing ResourceSlices: %v", err)
	}
	return list.Items
}

// devices returns the devices of the node's slices by name.
func devicesOf(slices []resourceapi.ResourceSlice) map[string]resourceapi.Device {
	out := map[string]resourceapi.Device{}
	for _, s := range slices {
		for _, dev := range s.Spec.Devices {
			out[dev.Name] = dev
		}
	}
	return out
}

// waitSlices polls the API server until cond holds for the node's
// slices, and returns them.
func (d *draNode) waitSlices(what string, cond func(slices []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool) []resourceapi.ResourceSlice {
	d.t.Helper()
	var got []resourceapi.ResourceSlice
	d.poll(what, func() bool {
		got = d.slices()
		return cond(got, devicesOf(got))
	}, func() string { return fmt.Sprintf("last slices: %s", describeSlices(got)) })
	return got
}

// describeSlices is a short account of slices for a failure message.
func describeSlices(slices []resourceapi.ResourceSlice) string {
	var b strings.Builder
	for _, s := range slices {
		fmt.Fprintf(&b, "[%s pool %s gen %d:", s.Name, s.Spec.Pool.Name, s.Spec.Pool.Generation)
		for _, dev := range s.Spec.Devices {
			fmt.Fprintf(&b, " %s", dev.Name)
			for _, tn := range dev.Taints {
				fmt.Fprintf(&b, "(%s:%s)", tn.Key, tn.Effect)
			}
		}
		b.WriteString("]")
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// attr is a device's string attribute in the driver's domain.
func attr(dev resourceapi.Device, name string) string {
	if a, ok := dev.Attributes[resourceapi.QualifiedName(name)]; ok && a.StringValue != nil {
		return *a.StringValue
	}
	return ""
}
