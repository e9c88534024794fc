package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	_ "unsafe" // go:linkname

	cadvisorapi "github.com/google/cadvisor/lib/model"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"
	"k8s.io/kubernetes/pkg/kubelet/checkpointmanager"
	cperrors "k8s.io/kubernetes/pkg/kubelet/checkpointmanager/errors"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager/checkpoint"
	"k8s.io/kubernetes/pkg/kubelet/cm/topologymanager"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"
)

// newManagerImpl is the constructor kubernetes' own manager_test.go uses.
// The exported NewManagerImpl always serves /var/lib/kubelet/device-plugins;
// this one takes the kubelet socket path, so each test gets a private plugin
// directory. Its signature is that of kubernetesVersion (TestMain checks).
//
//go:linkname newManagerImpl k8s.io/kubernetes/pkg/kubelet/cm/devicemanager.newManagerImpl
func newManagerImpl(logger klog.Logger, socketPath string, topology []cadvisorapi.Node, topologyAffinityStore topologymanager.Store) (*devicemanager.ManagerImpl, error)

const (
	// kubeletSocket is the base name of the kubelet's registration socket.
	kubeletSocket = "kubelet.sock"
	// checkpointName is the file the device manager checkpoints to.
	checkpointName = "kubelet_internal_checkpoint"
	// waitLimit bounds every wait: registration after a kubelet restart
	// takes milliseconds, but a loaded CI machine with -race is slow.
	waitLimit = 30 * time.Second
	pollEvery = 10 * time.Millisecond
)

// syncBuffer is a buffer safe for a process or logger writing while a test
// reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
	tap func([]byte) // sees every write (a log line) as it is made
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if b.tap != nil {
		b.tap(p)
	}
	return len(p), nil
}

func (b *syncBuffer) setTap(tap func([]byte)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tap = tap
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// switchWriter forwards to the running test's kubelet log; klog's global
// logger is process-wide and the tests run one at a time.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return len(p), nil
	}
	return s.w.Write(p)
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w = w
}

var kubeletLog switchWriter

// sourcesReady says the kubelet's config sources are all synced, as on a
// node that has been up a while: the manager then garbage-collects
// allocations of pods that are not active.
type sourcesReady struct{}

func (sourcesReady) AddSource(string) {}
func (sourcesReady) AllReady() bool   { return true }

// podList is the kubelet's set of active pods.
type podList struct {
	mu   sync.Mutex
	pods []*v1.Pod
}

func (p *podList) add(pod *v1.Pod) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pods = append(p.pods, pod)
}

// reset makes every pod inactive: the manager frees their devices at its
// next Allocate.
func (p *podList) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pods = nil
}

func (p *podList) active() []*v1.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*v1.Pod(nil), p.pods...)
}

// node is one machine: a kubelet device manager and the daemon sharing a
// plugin directory, restartable independently.
type node struct {
	t       *testing.T
	dir     string // the kubelet's device-plugin directory
	rules   string // the daemon's rule file
	klog    *syncBuffer
	logger  klog.Logger
	pods    podList
	kubelet *devicemanager.ManagerImpl // nil while stopped
	daemon  *daemonProc                // nil until started
	// daemonBin is the daemon binary to run; empty: daemonBinary.
	daemonBin string
	// daemonArgs are added to the daemon's command line (a later flag
	// overrides an earlier one).
	daemonArgs []string
	// cdiDir is the daemon's --cdi-dir where a test sets one: containers
	// look their CDI devices up there.
	cdiDir string
}

// newNode makes the plugin directory and the rule file; cleanup stops the
// daemon and the kubelet, removes the directories, and prints both logs if
// the test failed.
func newNode(t *testing.T, rules string) *node {
	t.Helper()
	requireSuite(t)
	n := &node{t: t, klog: &syncBuffer{}}
	n.logger = textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(4), textlogger.Output(n.klog)))
	kubeletLog.set(n.klog)
	// Short paths: a unix socket path is limited to 108 bytes.
	n.dir = mkdirTemp(t)
	rulesDir := mkdirTemp(t)
	n.rules = filepath.Join(rulesDir, "rules.yaml")
	if err := os.WriteFile(n.rules, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n.daemon != nil {
			// A clean stop, so that a -race daemon reports its races in
			// its exit status (66) as well as in its log.
			if err := n.daemon.signal(syscall.SIGTERM); err != nil {
				t.Errorf("stopping the daemon: %v", err)
			} else if code := n.daemon.cmd.ProcessState.ExitCode(); code != 0 && !n.daemon.killed {
				t.Errorf("daemon exited with status %d at the end of the test; want 0", code)
			}
			if strings.Contains(n.daemon.log.String(), "WARNING: DATA RACE") {
				t.Errorf("the daemon reported a data race")
			}
		}
		if n.kubelet != nil {
			n.stopKubelet()
		}
		kubeletLog.set(nil)
		if t.Failed() {
			if n.daemon != nil {
				t.Logf("daemon log:\n%s", n.daemon.log.String())
			}
			t.Logf("kubelet device manager log:\n%s", n.klog.String())
		}
	})
	return n
}

func mkdirTemp(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdm-e2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return dir
}

// ctx carries the kubelet logger, as the kubelet's own calls do.
func (n *node) ctx() context.Context {
	return klog.NewContext(context.Background(), n.logger)
}

// startKubelet starts a device manager on the plugin directory as kubelet
// does at start-up: Start reads the checkpoint, removes every socket in
// the directory but its own, and serves kubelet.sock.
func (n *node) startKubelet() {
	n.t.Helper()
	if n.kubelet != nil {
		n.t.Fatal("startKubelet: already running")
	}
	m, err := newManagerImpl(n.logger, filepath.Join(n.dir, kubeletSocket), nil, topologymanager.NewFakeManager(n.logger))
	if err != nil {
		n.t.Fatalf("new device manager: %v", err)
	}
	if err := m.Start(n.logger, n.pods.active, sourcesReady{}, containermap.NewContainerMap(), sets.New[string]()); err != nil {
		n.t.Fatalf("starting the device manager: %v", err)
	}
	n.kubelet = m
}

// stopKubelet stops the manager as a kubelet shutdown does: plugin streams
// closed, kubelet.sock gone; the checkpoint stays.
func (n *node) stopKubelet() {
	n.t.Helper()
	if err := n.kubelet.Stop(n.logger); err != nil {
		n.t.Errorf("stopping the device manager: %v", err)
	}
	n.kubelet = nil
}

func (n *node) restartKubelet() {
	n.t.Helper()
	n.stopKubelet()
	n.startKubelet()
}

// counts is what the node status would show for one resource.
type counts struct{ capacity, allocatable int64 }

// capacity returns GetCapacity's view of the smarter-devices resources (the
// one the kubelet puts in the node status).
func (n *node) capacity() map[string]counts {
	c, a, _ := n.kubelet.GetCapacity(n.logger)
	out := map[string]counts{}
	for name, q := range c {
		out[string(name)] = counts{capacity: q.Value()}
	}
	for name, q := range a {
		got := out[string(name)]
		got.allocatable = q.Value()
		out[string(name)] = got
	}
	return out
}

// waitCapacity polls GetCapacity until every resource in want has exactly
// those counts (others are ignored), and returns the last view.
func (n *node) waitCapacity(what string, want map[string]counts) map[string]counts {
	n.t.Helper()
	return n.waitFor(what, func(got map[string]counts) bool {
		for name, w := range want {
			if got[name] != w {
				return false
			}
		}
		return true
	})
}

// waitFor polls GetCapacity until cond holds; the manager has no change
// channel to wait on.
func (n *node) waitFor(what string, cond func(map[string]counts) bool) map[string]counts {
	n.t.Helper()
	var got map[string]counts
	n.poll(what, func() bool {
		got = n.capacity()
		return cond(got)
	}, func() string { return fmt.Sprintf("last capacity/allocatable %v", got) })
	return got
}

// poll checks cond every pollEvery until it holds, failing the test after
// waitLimit or when the daemon exits; last describes the state for the
// failure message.
func (n *node) poll(what string, cond func() bool, last func() string) {
	n.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for !cond() {
		var exited <-chan struct{}
		if n.daemon != nil && !n.daemon.stopping.Load() {
			exited = n.daemon.done
		}
		select {
		case <-exited:
			n.t.Fatalf("%s: the daemon exited (%v); %s", what, n.daemon.err, last())
		case <-deadline.C:
			n.t.Fatalf("%s: not within %v; %s", what, waitLimit, last())
		case <-tick.C:
		}
	}
}

// deviceIDs returns the manager's device IDs per resource, healthy or not.
func (n *node) deviceIDs() map[string][]string {
	out := map[string][]string{}
	for res, devs := range n.kubelet.GetAllocatableDevices(n.logger) {
		for id := range devs {
			out[res] = append(out[res], id)
		}
		slices.Sort(out[res])
	}
	return out
}

// checkpoint reads the manager's checkpoint file as the next kubelet start
// will: pod allocations and registered (healthy) device IDs. A checkpoint
// not written yet reads as empty.
func (n *node) checkpoint() ([]checkpoint.PodDevicesEntry, map[string][]string) {
	n.t.Helper()
	cm, err := checkpointmanager.NewCheckpointManager(n.dir)
	if err != nil {
		n.t.Fatalf("checkpoint manager: %v", err)
	}
	cp := checkpoint.New(nil, nil)
	if err := cm.GetCheckpoint(checkpointName, cp); errors.Is(err, cperrors.ErrCheckpointNotFound) {
		return nil, nil
	} else if err != nil {
		n.t.Fatalf("reading %s: %v", checkpointName, err)
	}
	entries, registered := cp.GetData()
	for _, ids := range registered {
		slices.Sort(ids)
	}
	return entries, registered
}

// newPod returns an active pod whose one container "c" has limits.
func (n *node) newPod(name string, limits map[string]int64) *v1.Pod {
	l := v1.ResourceList{}
	for res, q := range limits {
		l[v1.ResourceName(res)] = *resource.NewQuantity(q, resource.DecimalSI)
	}
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec: v1.PodSpec{Containers: []v1.Container{{
			Name:      "c",
			Resources: v1.ResourceRequirements{Limits: l, Requests: l},
		}}},
	}
	n.pods.add(pod)
	return pod
}

// allocate admits the pod's container as the kubelet does: the manager
// picks device IDs (asking the plugin's GetPreferredAllocation), calls the
// plugin's Allocate and checkpoints the answer.
func (n *node) allocate(pod *v1.Pod) error {
	return n.kubelet.Allocate(n.ctx(), pod, &pod.Spec.Containers[0], lifecycle.AddOperation)
}

// runOptions is what the kubelet hands the container runtime when it
// starts the pod's container.
func (n *node) runOptions(pod *v1.Pod) *devicemanager.DeviceRunContainerOptions {
	n.t.Helper()
	opts, err := n.kubelet.GetDeviceRunContainerOptions(n.ctx(), pod, &pod.Spec.Containers[0])
	if err != nil {
		n.t.Fatalf("GetDeviceRunContainerOptions(%s): %v", pod.Name, err)
	}
	if opts == nil {
		n.t.Fatalf("GetDeviceRunContainerOptions(%s): no options", pod.Name)
	}
	return opts
}

// podDeviceIDs returns the device IDs the checkpoint holds for the pod's
// container and resource.
func podDeviceIDs(entries []checkpoint.PodDevicesEntry, pod *v1.Pod, res string) []string {
	var ids []string
	for _, e := range entries {
		if e.PodUID == string(pod.UID) && e.ContainerName == pod.Spec.Containers[0].Name && e.ResourceName == res {
			ids = append(ids, sets.List(e.DeviceIDs.Devices())...)
		}
	}
	return ids
}

// socketIDs returns the identity of every socket in the plugin directory
// but the kubelet's, by base name.
func (n *node) socketIDs() map[string]os.FileInfo {
	n.t.Helper()
	ents, err := os.ReadDir(n.dir)
	if err != nil {
		n.t.Fatal(err)
	}
	out := map[string]os.FileInfo{}
	for _, e := range ents {
		if e.Name() == kubeletSocket || e.Type()&os.ModeSocket == 0 {
			continue
		}
		fi, err := os.Stat(filepath.Join(n.dir, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // removed since ReadDir
		}
		if err != nil {
			n.t.Fatal(err)
		}
		out[e.Name()] = fi
	}
	return out
}
