package dra

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/daemon"
	"github.com/smarter-project/smarter-device-manager/hotplug"
	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

const (
	testNode   = "node-a"
	testDriver = "sdm.example.com" // short: socket paths stay under 108 bytes
)

// fakeAPI is a fake API server holding the node, that does what the
// ResourceSlice controller counts on the real one for: names from
// generateName, and integer resource versions.
func fakeAPI() *fake.Clientset {
	c := fake.NewClientset(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode, UID: "node-a-uid"}})
	var mu sync.Mutex
	n := 0
	c.PrependReactor("create", "resourceslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		s := a.(k8stesting.CreateAction).GetObject().(*resourceapi.ResourceSlice)
		if s.Name == "" {
			s.Name = s.GenerateName + strconv.Itoa(n)
		}
		n++
		s.ResourceVersion = "1"
		return false, nil, nil
	})
	c.PrependReactor("update", "resourceslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s := a.(k8stesting.UpdateAction).GetObject().(*resourceapi.ResourceSlice)
		rv, _ := strconv.Atoi(s.ResourceVersion)
		s.ResourceVersion = strconv.Itoa(rv + 1)
		return false, nil, nil
	})
	return c
}

// fakeEvents is a daemon.EventSource the test fires by hand.
type fakeEvents struct{ ch chan hotplug.Event }

func (f *fakeEvents) Run(ctx context.Context, notify func(hotplug.Event)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-f.ch:
			notify(ev)
		}
	}
}

// harness runs the daemon with a Driver as its output over a fake
// machine and a fake API server.
type harness struct {
	t      *testing.T
	m      *hwfixture.Machine
	client *fake.Clientset
	dir    string // the plugin, registry and CDI directories are below it
	events *fakeEvents
	probe  *daemon.Probe
	stats  *daemon.Stats // the driver's
	loop   *daemon.Stats // the daemon's
	drv    *Driver
	log    *testutil.SyncBuffer
	cancel context.CancelFunc
	done   chan error
}

type harnessOpts struct {
	removeAfter time.Duration
	client      *fake.Clientset // a previous run's API server; nil: a new one
	dir         string          // a previous run's directories; "": new ones
	flap        daemon.FlapDamping
}

func newHarness(t *testing.T, m *hwfixture.Machine, rules string, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, m: m, client: o.client, dir: o.dir, events: &fakeEvents{ch: make(chan hotplug.Event)},
		probe: daemon.NewProbe(), stats: new(daemon.Stats), loop: new(daemon.Stats), log: &testutil.SyncBuffer{}, done: make(chan error, 1)}
	if h.client == nil {
		h.client = fakeAPI()
	}
	if h.dir == "" {
		h.dir = testutil.ShortTempDir(t)
	}
	log := zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), h.log)).Level(zerolog.DebugLevel)
	var err error
	h.drv, err = New(Options{DriverName: testDriver, NodeName: testNode, Client: h.client, Logger: log, Stats: h.stats,
		RegistryDir: filepath.Join(h.dir, "reg"), PluginDir: filepath.Join(h.dir, "plugin"), CDIDir: filepath.Join(h.dir, "cdi"),
		RemoveAfter: o.removeAfter})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := conf.Parse("rules.yaml", []byte(rules))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		h.done <- daemon.Run(ctx, daemon.Options{Config: cfg, DevRoot: "/dev", DevFS: m.Dev, SysFS: m.Sys, RunFS: m.Run,
			Resync: time.Hour, RemoveAfter: o.removeAfter, FlapDamping: o.flap, Events: h.events, Output: h.drv, Logger: log, Probe: h.probe, Stats: h.loop})
	}()
	t.Cleanup(h.stop)
	h.settle() // the first read is done: each event below makes one
	return h
}

// stop stops the daemon and its driver, and waits for them.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("daemon.Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		h.t.Fatal("daemon.Run did not return within 20s of cancel")
	}
}

// settle returns once the daemon's event loop is between iterations.
func (h *harness) settle() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := h.probe.Check(ctx); err != nil {
		h.t.Fatal(err)
	}
}

// fire sends a uevent for a node, as the kernel does when it comes or goes.
func (h *harness) fire(action, devname string) {
	h.events.ch <- hotplug.Event{Action: action, DevName: devname, DevPath: "/devices/test/" + devname}
}

// slices are the driver's ResourceSlices in the API server now.
func (h *harness) slices() []resourceapi.ResourceSlice {
	h.t.Helper()
	list, err := h.client.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []resourceapi.ResourceSlice
	for _, s := range list.Items {
		if s.Spec.Driver == testDriver {
			out = append(out, s)
		}
	}
	return out
}

// devices are the devices of the driver's slices, by name.
func devicesOf(slices []resourceapi.ResourceSlice) map[string]resourceapi.Device {
	out := map[string]resourceapi.Device{}
	for _, s := range slices {
		for _, d := range s.Spec.Devices {
			out[d.Name] = d
		}
	}
	return out
}

// waitSlices waits until the driver's slices in the API server satisfy
// cond, watching them, and returns them.
func (h *harness) waitSlices(what string, cond func([]resourceapi.ResourceSlice) bool) []resourceapi.ResourceSlice {
	h.t.Helper()
	w, err := h.client.ResourceV1().ResourceSlices().Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	defer w.Stop()
	deadline := time.After(20 * time.Second)
	for {
		s := h.slices()
		if cond(s) {
			return s
		}
		select {
		case <-w.ResultChan():
		case <-deadline:
			h.t.Fatalf("%s: not within 20s; slices now:\n%s", what, describe(s))
		}
	}
}

// waitDevices waits until the published devices satisfy cond.
func (h *harness) waitDevices(what string, cond func(map[string]resourceapi.Device) bool) map[string]resourceapi.Device {
	h.t.Helper()
	return devicesOf(h.waitSlices(what, func(s []resourceapi.ResourceSlice) bool { return cond(devicesOf(s)) }))
}

func describe(slices []resourceapi.ResourceSlice) string {
	out := ""
	for _, s := range slices {
		out += fmt.Sprintf("  %s pool %s/%d node %v:\n", s.Name, s.Spec.Pool.Name, s.Spec.Pool.Generation, s.Spec.NodeName)
		for _, d := range s.Spec.Devices {
			out += fmt.Sprintf("    %s taints %v attrs %d\n", d.Name, d.Taints, len(d.Attributes))
		}
	}
	return out
}

// str is a string attribute's value, "" when absent.
func str(d resourceapi.Device, name string) string {
	if a, ok := d.Attributes[resourceapi.QualifiedName(name)]; ok && a.StringValue != nil {
		return *a.StringValue
	}
	return ""
}

// sliceWrites is how many ResourceSlice writes (create, update, delete)
// client has been asked for.
func sliceWrites(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "resourceslices" && (a.GetVerb() == "create" || a.GetVerb() == "update" || a.GetVerb() == "delete") {
			n++
		}
	}
	return n
}
