package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/rs/zerolog"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/hotplug"
	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

const charDev = fs.ModeDevice | fs.ModeCharDevice | 0o660

// fakeEvents is an EventSource the test fires by hand.
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

func (f *fakeEvents) fire(action, devname string) {
	f.ch <- hotplug.Event{Action: action, DevName: devname, DevPath: "/devices/virtual/test/" + devname}
}

type harness struct {
	t       *testing.T
	dir     string
	dev     *hwfixture.FS
	sys     fstest.MapFS
	events  *fakeEvents
	kubelet *plugintest.FakeKubelet
	reload  chan struct{}
	log     *testutil.SyncBuffer
	stats   *Stats // the daemon's counters
	probe   *Probe // asks the daemon's event loop
	cancel  context.CancelFunc
	done    chan error
}

func parseRules(t *testing.T, name, text string) *conf.Config {
	t.Helper()
	cfg, err := conf.Parse(name, []byte(text))
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	return cfg
}

func newHarness(t *testing.T, rules string, mutate func(*Options)) *harness {
	t.Helper()
	return newHarnessFile(t, "rules.yaml", rules, mutate)
}

// newHarnessFile is newHarness with the rule file's name, whose extension
// chooses the format (rules.toml).
func newHarnessFile(t *testing.T, file, rules string, mutate func(*Options)) *harness {
	t.Helper()
	dir := testutil.ShortTempDir(t)
	h := &harness{
		t:      t,
		dir:    dir,
		dev:    hwfixture.NewFS(),
		sys:    fstest.MapFS{},
		events: &fakeEvents{ch: make(chan hotplug.Event)},
		reload: make(chan struct{}, 1),
		done:   make(chan error, 1),
		log:    &testutil.SyncBuffer{},
		stats:  new(Stats),
		probe:  NewProbe(),
	}
	var err error
	h.kubelet, err = plugintest.StartFakeKubelet(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.kubelet.Stop)
	rulesFile := filepath.Join(dir, file)
	if err := os.WriteFile(rulesFile, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Config:           parseRules(t, rulesFile, rules),
		ConfigPath:       rulesFile,
		Reload:           h.reload,
		DevRoot:          "/dev",
		PluginDir:        dir,
		Resync:           time.Hour, // changes must come from events
		Events:           h.events,
		Logger:           zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), h.log)),
		DevFS:            h.dev,
		SysFS:            h.sys,
		ServerMinBackoff: 10 * time.Millisecond,
		ServerMaxBackoff: 100 * time.Millisecond,
		Stats:            h.stats,
		Probe:            h.probe,
	}
	if mutate != nil {
		mutate(&opts)
	}
	h.stats, h.probe = opts.Stats, opts.Probe
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- Run(ctx, opts) }()
	t.Cleanup(func() { h.stop() })
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		h.t.Fatalf("Run did not return within 20s of cancel")
	}
}

func (h *harness) waitFor(res, what string, cond func([]*pluginapi.Device) bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.kubelet.WaitFor(ctx, res, cond); err != nil {
		h.t.Fatalf("%s: waiting for %s: %v (last: %v)", res, what, err, h.kubelet.Devices(res))
	}
}

func (h *harness) waitStreamEnd(res string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.kubelet.Wait(ctx, func() bool { return !h.kubelet.Streaming(res) }); err != nil {
		h.t.Fatalf("%s: stream still open: %v", res, err)
	}
}

// waitNoSockets waits for every plugin socket to be removed.
func (h *harness) waitNoSockets() {
	h.t.Helper()
	testutil.Eventually(h.t, 20*time.Second, "plugin sockets removed", func() bool { return len(sockets(h.t, h.dir)) == 0 })
}

// rewrite replaces the rule file's content and asks for a reload, as a
// user does with an editor and SIGHUP.
func (h *harness) rewrite(file, rules string) {
	h.t.Helper()
	if err := os.WriteFile(file, []byte(rules), 0o644); err != nil {
		h.t.Fatal(err)
	}
	h.reload <- struct{}{}
}

// settle returns once the event loop is between iterations: it answers a
// probe only there, so whatever it was doing (a reload and the
// reconcile after it) is done.
func (h *harness) settle() {
	h.t.Helper()
	h.report()
}

// report asks the event loop how it is, between two of its iterations.
func (h *harness) report() Report {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := h.probe.Check(ctx)
	if err != nil {
		h.t.Fatalf("the event loop: %v", err)
	}
	return rep
}

// waitReloads waits until the daemon has read the rule file n times in
// all, then for the loop to finish acting on it.
func (h *harness) waitReloads(n uint64) {
	h.t.Helper()
	testutil.Eventually(h.t, 20*time.Second, fmt.Sprintf("%d reloads", n), func() bool { return h.stats.Reloads.Load() >= n })
	h.settle()
}

// allocate asks the resource's server for ids, as kubelet does for a
// container, and fails the test on an error.
func (h *harness) allocate(res string, ids ...string) *pluginapi.AllocateResponse {
	h.t.Helper()
	client, err := h.kubelet.Client(res)
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := client.Allocate(h.t.Context(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}})
	if err != nil {
		h.t.Fatalf("Allocate %s %v: %v", res, ids, err)
	}
	return resp
}

func health(n int, want string) func([]*pluginapi.Device) bool {
	return func(devs []*pluginapi.Device) bool {
		if len(devs) != n {
			return false
		}
		for _, d := range devs {
			if d.Health != want {
				return false
			}
		}
		return true
	}
}

func sockets(t *testing.T, dir string) []string {
	t.Helper()
	socks, err := filepath.Glob(filepath.Join(dir, "smarter-*.sock"))
	if err != nil {
		t.Fatal(err)
	}
	return socks
}

func TestDeviceLifecycle(t *testing.T) {
	h := newHarness(t, "- devicematch: ^ttyUSB[0-9]+$\n  nummaxdevices: 2\n", nil)
	const res = "smarter-devices/ttyUSB0"

	h.dev.Set("ttyUSB0", charDev)
	h.events.fire("add", "ttyUSB0")
	h.waitFor(res, "healthy after add", health(2, pluginapi.Healthy))

	h.dev.Remove("ttyUSB0")
	h.events.fire("remove", "ttyUSB0")
	h.waitFor(res, "unhealthy after remove", health(2, pluginapi.Unhealthy))

	client, err := h.kubelet.Client(res)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0"}}}}); err == nil {
		t.Errorf("Allocate of a device that is gone succeeded")
	}

	h.dev.Set("ttyUSB0", charDev)
	h.events.fire("add", "ttyUSB0")
	h.waitFor(res, "healthy after re-add", health(2, pluginapi.Healthy))
	if got := h.kubelet.Registrations(res); got != 1 {
		t.Errorf("registered %d times; a device coming back must reuse the registration", got)
	}

	resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"1"}}}})
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	specs := resp.ContainerResponses[0].Devices
	if len(specs) != 1 || specs[0].HostPath != "/dev/ttyUSB0" || specs[0].ContainerPath != "/dev/ttyUSB0" || specs[0].Permissions != "rw" {
		t.Errorf("Allocate specs = %v, want /dev/ttyUSB0 rw", specs)
	}

	h.stop()
	if socks := sockets(t, h.dir); len(socks) != 0 {
		t.Errorf("sockets left after stop: %v", socks)
	}
}

// A block device's bdi comes and goes just before the block device does,
// and has no node: its uevents wake nothing (a rescan for them would be
// one for nothing, which the block device's own rescan waits behind).
func TestBackingDevEventsIgnored(t *testing.T) {
	h := newHarness(t, "- devicematch: ^ttyUSB[0-9]+$\n  nummaxdevices: 1\n", nil)
	ignored, relevant := h.stats.Ignored.Load(), h.stats.Relevant.Load()
	for _, action := range []string{"add", "remove"} {
		h.events.ch <- hotplug.Event{Action: action, Subsystem: "bdi", DevPath: "/devices/virtual/bdi/253:1"}
	}
	h.dev.Set("ttyUSB0", charDev)
	h.events.fire("add", "ttyUSB0") // events are handled in order: after both bdi ones
	h.waitFor("smarter-devices/ttyUSB0", "healthy after add", health(1, pluginapi.Healthy))
	if got := h.stats.Ignored.Load() - ignored; got != 2 {
		t.Errorf("%d uevents ignored, want the bdi's 2", got)
	}
	if got := h.stats.Relevant.Load() - relevant; got != 1 {
		t.Errorf("%d relevant uevents, want only ttyUSB0's", got)
	}
}

func TestRemoveAfter(t *testing.T) {
	h := newHarness(t, "- devicematch: ^video[0-9]+$\n  nummaxdevices: 1\n", func(o *Options) {
		o.RemoveAfter = 300 * time.Millisecond
	})
	h.dev.Set("video0", charDev)
	h.events.fire("add", "video0")
	h.waitFor("smarter-devices/video0", "healthy", health(1, pluginapi.Healthy))
	if socks := sockets(t, h.dir); len(socks) != 1 {
		t.Fatalf("sockets = %v, want one", socks)
	}
	h.dev.Remove("video0")
	h.events.fire("remove", "video0")
	h.waitFor("smarter-devices/video0", "unhealthy", health(1, pluginapi.Unhealthy))
	// The server stops: its stream ends, as kubelet would see it.
	h.waitStreamEnd("smarter-devices/video0")
	h.waitNoSockets()
}

func TestKubeletRestartReregisters(t *testing.T) {
	h := newHarness(t, "- devicematch: ^snd$\n  nummaxdevices: 4\n- devicematch: ^net/tun$\n  nummaxdevices: 1\n", nil)
	h.dev.Set("snd", fs.ModeDir|0o755)
	h.dev.Set("snd/controlC0", charDev)
	h.dev.Set("snd/pcmC0D0p", charDev)
	h.dev.Set("net", fs.ModeDir|0o755)
	h.dev.Set("net/tun", charDev)
	h.events.fire("add", "snd/controlC0")
	h.waitFor("smarter-devices/snd", "healthy", health(4, pluginapi.Healthy))
	h.waitFor("smarter-devices/net_tun", "healthy", health(1, pluginapi.Healthy))

	// A directory resource expands to every node inside it.
	client, err := h.kubelet.Client("smarter-devices/snd")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"3"}}}})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, s := range resp.ContainerResponses[0].Devices {
		paths = append(paths, s.HostPath)
	}
	if len(paths) != 2 || paths[0] != "/dev/snd/controlC0" || paths[1] != "/dev/snd/pcmC0D0p" {
		t.Errorf("snd allocates %v, want both nodes inside /dev/snd", paths)
	}

	// kubelet restart: it wipes plugin sockets and serves a new kubelet.sock.
	h.kubelet.Stop()
	if err := plugintest.WipeSockets(h.dir); err != nil {
		t.Fatal(err)
	}
	k2, err := plugintest.StartFakeKubelet(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k2.Stop)
	h.kubelet = k2
	h.waitFor("smarter-devices/snd", "re-registered after kubelet restart", health(4, pluginapi.Healthy))
	h.waitFor("smarter-devices/net_tun", "re-registered after kubelet restart", health(1, pluginapi.Healthy))
}

func TestReloadKeepsServingOnBrokenFile(t *testing.T) {
	h := newHarness(t, "- devicematch: ^ttyACM[0-9]+$\n  nummaxdevices: 1\n", nil)
	h.dev.Set("ttyACM0", charDev)
	h.dev.Set("i2c-1", charDev)
	h.events.fire("add", "ttyACM0")
	h.waitFor("smarter-devices/ttyACM0", "healthy", health(1, pluginapi.Healthy))

	rules := filepath.Join(h.dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte("- devicematch: ^i2c-[0-9+$\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.reload <- struct{}{}
	h.waitReloads(1)
	if n := h.stats.ReloadFailures.Load(); n != 1 {
		t.Fatalf("%d reload failures after reading a broken file, want 1", n)
	}
	if got := h.kubelet.Devices("smarter-devices/i2c-1"); got != nil {
		t.Fatalf("i2c-1 advertised after a broken reload: %v", got)
	}
	if got := h.kubelet.Devices("smarter-devices/ttyACM0"); !health(1, pluginapi.Healthy)(got) {
		t.Fatalf("ttyACM0 changed after a broken reload: %v", got)
	}
	// A good reload drops ttyACM and adds i2c.
	if err := os.WriteFile(rules, []byte("- devicematch: ^i2c-[0-9]+$\n  nummaxdevices: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.reload <- struct{}{}
	h.waitFor("smarter-devices/i2c-1", "new rule's resource", health(1, pluginapi.Healthy))
	h.waitStreamEnd("smarter-devices/ttyACM0")
}

func TestJetsonGPU(t *testing.T) {
	for _, board := range []string{"jetson-xavier", "jetson-orin"} {
		t.Run(board, func(t *testing.T) { testJetsonGPU(t, hwfixture.Machines[board](true)) })
	}
}

func testJetsonGPU(t *testing.T, m *hwfixture.Machine) {
	h := newHarness(t, "- devicematch: nvidia-gpu\n  nummaxdevices: 3\n", onMachine(m))
	const res = "smarter-devices/nvidia-gpu0"
	h.waitFor(res, "three IDs", health(3, pluginapi.Healthy))
	client, err := h.kubelet.Client(res)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"2"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.ContainerResponses[0].Envs["NVIDIA_VISIBLE_DEVICES"]; got != "0" {
		t.Errorf("NVIDIA_VISIBLE_DEVICES = %q, want 0", got)
	}
}

// A flood of events neither stalls nor crashes the loop: it is coalesced,
// and the device that arrives at the end of it is served.
func TestEventFloodIsCoalesced(t *testing.T) {
	h := newHarness(t, "- devicematch: ^ttyS[0-9]+$\n  nummaxdevices: 1\n", nil)
	for i := range 5000 {
		h.events.fire("change", "ttyS"+string(rune('0'+i%10)))
	}
	h.events.ch <- hotplug.Event{Lost: true}
	h.dev.Set("ttyS3", charDev)
	h.events.fire("add", "ttyS3")
	h.waitFor("smarter-devices/ttyS3", "served after the flood", health(1, pluginapi.Healthy))
	if got := h.kubelet.Registrations("smarter-devices/ttyS3"); got != 1 {
		t.Errorf("resource registered %d times, want 1", got)
	}
}

// A device whose name cannot be a resource name is skipped with a warning
// naming it, once however often the state is read; the rest is served.
func TestUnnameableDeviceIsSkippedOnce(t *testing.T) {
	h := newHarness(t, "- devicematch: weird$\n  nummaxdevices: 1\n", nil)
	h.dev.Set("-weird", charDev)
	h.dev.Set("ok-weird", charDev)
	for range 5 {
		h.events.fire("add", "-weird")
	}
	h.waitFor("smarter-devices/ok-weird", "the valid one served", health(1, pluginapi.Healthy))
	h.events.fire("add", "ok-weird")
	h.waitFor("smarter-devices/ok-weird", "still served", health(1, pluginapi.Healthy))
	// Every event above has been read: the reads that saw -weird are done.
	if rep := h.report(); len(rep.Resources) != 1 {
		t.Errorf("resources %v; want only smarter-devices/ok-weird (an invalid name must not reach a server)", rep.Resources)
	}
	h.stop()
	// The warning is the behaviour under test: what the user reads.
	if got := strings.Count(h.log.String(), `"device":"-weird"`); got != 1 {
		t.Errorf("warning about -weird logged %d times, want once", got)
	}
}

// A probe of a daemon whose loop does not answer says so within its
// deadline instead of hanging the health endpoint.
func TestProbeNotAnswering(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := NewProbe().Check(ctx); !errors.Is(err, ErrNotAnswering) {
		t.Errorf("Check with no loop = %v, want ErrNotAnswering", err)
	}
}

// The loop answers probes: resources, registration and health.
func TestProbeReport(t *testing.T) {
	probe := NewProbe()
	h := newHarness(t, "- devicematch: ^ttyUSB[0-9]+$\n  nummaxdevices: 2\n", func(o *Options) { o.Probe = probe })
	h.dev.Set("ttyUSB0", charDev)
	h.events.fire("add", "ttyUSB0")
	h.waitFor("smarter-devices/ttyUSB0", "healthy", health(2, pluginapi.Healthy))
	testutil.Eventually(t, 20*time.Second, "a report with the registered resource", func() bool {
		rep, err := probe.Check(t.Context())
		st := rep.Resources["smarter-devices/ttyUSB0"]
		return err == nil && rep.Monitor && st.Registered && st.Healthy == 2 && st.Devices == 2
	})
}

// sysDirReads wraps a sys FS and counts ReadDir of devices/ and
// devices/platform, what listing the Jetson GPUs reads.
type sysDirReads struct {
	*hwfixture.FS
	n atomic.Int64
}

func (s *sysDirReads) ReadDir(name string) ([]fs.DirEntry, error) {
	if name == "devices" || name == "devices/platform" {
		s.n.Add(1)
	}
	return s.FS.ReadDir(name)
}

// The Jetson GPUs are listed only when a rule asks for them, and then once
// per resync period, not on every wake-up: listing sysfs's devices and
// devices/platform cost more than the rest of a read but the device root.
func TestGPUsReadOnlyWhenAsked(t *testing.T) {
	for _, c := range []struct {
		rules string
		want  int64 // directory listings over several wake-ups
	}{
		{"- devicematch: ^ttyS[0-9]+$\n  nummaxdevices: 1\n", 0},
		{"- devicematch: nvidia-gpu\n  nummaxdevices: 1\n- devicematch: ^ttyS[0-9]+$\n  nummaxdevices: 1\n", 2}, // devices and devices/platform, once
	} {
		m := hwfixture.Machines["jetson-orin"](false)
		sys := &sysDirReads{FS: m.Sys}
		stats := new(Stats)
		h := newHarness(t, c.rules, func(o *Options) {
			onMachine(m)(o)
			o.SysFS, o.Stats = sys, stats
		})
		for i := range 5 {
			m.Dev.Set("ttyS"+string(rune('0'+i)), charDev)
			h.events.fire("add", "ttyS"+string(rune('0'+i)))
		}
		h.waitFor("smarter-devices/ttyS4", "served", health(1, pluginapi.Healthy))
		if c.want > 0 {
			h.waitFor("smarter-devices/nvidia-gpu0", "the Orin's GPU", health(1, pluginapi.Healthy))
		}
		if stats.Rescans.Load() < 2 {
			t.Fatalf("%d rescans; the test needs several", stats.Rescans.Load())
		}
		if got := sys.n.Load(); got != c.want {
			t.Errorf("rules %q: sysfs listed %d times over %d reads, want %d", c.rules, got, stats.Rescans.Load(), c.want)
		}
		h.stop()
	}
}
