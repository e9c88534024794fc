package daemon

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/hotplug"
	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// Helpers for the tests that run the daemon in-process against the real
// kernel: real netlink uevents through hotplug.Monitor, the real /dev, real
// zram devices, and a fake kubelet on real unix sockets.

// countingFS is the real device root, counting full reads of it: one
// ReadDir of "." is one rescan by the reconciler.
type countingFS struct {
	fs.FS
	scans atomic.Int64
}

func newCountingFS(root string) *countingFS { return &countingFS{FS: os.DirFS(root)} }

func (c *countingFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if name == "." {
		c.scans.Add(1)
	}
	return fs.ReadDir(c.FS, name)
}

func (c *countingFS) Stat(name string) (fs.FileInfo, error) { return fs.Stat(c.FS, name) }

// tapSource wraps a real hotplug.Monitor: it counts what the monitor reads,
// can hold the monitor inside notify (so the socket buffer fills, as behind
// a stalled reader), and can keep events from the daemon.
type tapSource struct {
	mon *hotplug.Monitor
	// pass, if set, decides which events reach the daemon.
	pass func(hotplug.Event) bool

	mu       sync.Mutex
	events   int            // every event the monitor read
	lost     int            // Lost events (connects, ENOBUFS, truncation)
	adds     map[string]int // add events by device name
	gate     chan struct{}  // while non-nil, notify waits for it to close
	held     chan struct{}  // closed when notify is held at the gate
	lostSeen chan struct{}  // closed and replaced on every Lost event
}

func newTap(mon *hotplug.Monitor) *tapSource {
	return &tapSource{mon: mon, adds: make(map[string]int), lostSeen: make(chan struct{})}
}

func (s *tapSource) Run(ctx context.Context, notify func(hotplug.Event)) error {
	return s.mon.Run(ctx, func(ev hotplug.Event) {
		s.mu.Lock()
		s.events++
		if ev.Lost {
			s.lost++
			close(s.lostSeen)
			s.lostSeen = make(chan struct{})
		}
		if ev.Action == "add" && ev.DevName != "" {
			s.adds[ev.DevName]++
		}
		gate, held := s.gate, s.held
		if gate != nil {
			s.gate, s.held = nil, nil // hold only once per close()
		}
		s.mu.Unlock()
		if gate != nil {
			close(held)
			select {
			case <-gate:
			case <-ctx.Done():
				return
			}
		}
		if s.pass == nil || s.pass(ev) {
			notify(ev)
		}
	})
}

// hold makes the next event's notify wait until the returned release is
// called; held is closed once the monitor is stuck there.
func (s *tapSource) hold() (held <-chan struct{}, release func()) {
	gate, h := make(chan struct{}), make(chan struct{})
	s.mu.Lock()
	s.gate, s.held = gate, h
	s.mu.Unlock()
	var once sync.Once
	return h, func() { once.Do(func() { close(gate) }) }
}

func (s *tapSource) counts() (events, lost int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.events, s.lost
}

func (s *tapSource) addsOf(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adds[name]
}

// waitLost waits until the monitor has delivered n Lost events in all.
func (s *tapSource) waitLost(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		s.mu.Lock()
		lost, seen := s.lost, s.lostSeen
		s.mu.Unlock()
		if lost >= n {
			return
		}
		select {
		case <-seen:
		case <-timeout:
			t.Fatalf("%d Lost events from the monitor, want %d", lost, n)
		}
	}
}

// kernelDaemon is daemon.Run in-process on the real /dev with a real
// uevent monitor behind a tap.
type kernelDaemon struct {
	t       *testing.T
	dir     string
	rules   string // ConfigPath
	dev     *countingFS
	tap     *tapSource
	kubelet *plugintest.FakeKubelet
	reload  chan struct{}
	log     *testutil.SyncBuffer
	cancel  context.CancelFunc
	done    chan error
}

type kernelOpts struct {
	rules  string // rule file text (legacy or v1 YAML)
	rcvBuf int    // monitor receive buffer; 0: the default
	pass   func(hotplug.Event) bool
	mutate func(*Options)
	logTo  io.Writer // where the daemon logs; nil: a buffer kept for failures
}

func startKernelDaemon(t *testing.T, ko kernelOpts) *kernelDaemon {
	t.Helper()
	testkernel.RequireZram(t)
	dir := testutil.ShortTempDir(t)
	d := &kernelDaemon{
		t:      t,
		dir:    dir,
		rules:  filepath.Join(dir, "rules.yaml"),
		dev:    newCountingFS("/dev"),
		reload: make(chan struct{}, 1),
		log:    &testutil.SyncBuffer{},
		done:   make(chan error, 1),
	}
	if err := os.WriteFile(d.rules, []byte(ko.rules), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	if d.kubelet, err = plugintest.StartFakeKubelet(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.kubelet.Stop)
	var w io.Writer = d.log
	if ko.logTo != nil {
		w = ko.logTo
	}
	log := zerolog.New(w).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	d.tap = newTap(hotplug.NewMonitor(hotplug.MonitorOptions{Source: hotplug.SourceKernel, RcvBuf: ko.rcvBuf, Logger: log}))
	d.tap.pass = ko.pass
	opts := Options{
		Config:           parseRules(t, d.rules, ko.rules),
		ConfigPath:       d.rules,
		Reload:           d.reload,
		DevRoot:          "/dev",
		PluginDir:        dir,
		Resync:           time.Hour, // changes must come from events
		Events:           d.tap,
		Logger:           log,
		DevFS:            d.dev,
		SysFS:            fstestEmpty{},
		ServerMinBackoff: 10 * time.Millisecond,
		ServerMaxBackoff: 100 * time.Millisecond,
	}
	if ko.mutate != nil {
		ko.mutate(&opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- Run(ctx, opts) }()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() && ko.logTo == nil {
			t.Logf("daemon log:\n%s", tail(d.log.String(), 200))
		}
	})
	// The first Lost event says the uevent socket is bound: from here on
	// no device event is missed.
	d.tap.waitLost(t, 1)
	return d
}

// fstestEmpty is an empty /sys: no Jetson GPUs.
type fstestEmpty struct{}

func (fstestEmpty) Open(name string) (fs.File, error) {
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

func (d *kernelDaemon) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil {
			d.t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		d.t.Fatalf("Run did not return within 20s of cancel")
	}
}

func (d *kernelDaemon) waitFor(res, what string, cond func([]*pluginapi.Device) bool) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.kubelet.WaitFor(ctx, res, cond); err != nil {
		d.t.Fatalf("%s: waiting for %s: %v", res, what, err)
	}
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = append([]string{fmt.Sprintf("[%d lines before]", len(all)-lines)}, all[len(all)-lines:]...)
	}
	return strings.Join(all, "\n")
}

// zramAdd creates a zram device (a real add uevent) and returns its name;
// the test's cleanup removes it if the test did not.
func zramAdd(t *testing.T) string {
	t.Helper()
	return "zram" + strconv.Itoa(testkernel.ZramAdd(t))
}

func zramRemove(t *testing.T, name string) {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(name, "zram"))
	if err != nil {
		t.Fatalf("not a zram device: %q", name)
	}
	if err := testkernel.ZramRemove(n); err != nil {
		t.Fatal(err)
	}
}

// changeEvent makes the kernel send a real change uevent for a device
// (sysfs path below /sys), e.g. "class/mem/null".
func changeEvent(sysPath string) error {
	return os.WriteFile(filepath.Join("/sys", sysPath, "uevent"), []byte("change"), 0)
}

var zramName = regexp.MustCompile(`^zram[0-9]+$`)

// presentZram lists the zram device nodes in /dev now: ours, and any that
// other tests or the machine hold.
func presentZram(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/dev")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if zramName.MatchString(e.Name()) && e.Type()&fs.ModeDevice != 0 {
			names = append(names, e.Name())
		}
	}
	return names
}

// advertised splits the fake kubelet's view of the zram resources into the
// healthy and the unhealthy ones (by device name), and reports any resource
// that mixes the two or has no list yet.
func advertised(k *plugintest.FakeKubelet) (healthy, unhealthy, odd []string) {
	for _, res := range k.Resources() {
		name, ok := strings.CutPrefix(res, "smarter-devices/")
		if !ok || !zramName.MatchString(name) {
			continue
		}
		devs := k.Devices(res)
		switch {
		case health(len(devs), pluginapi.Healthy)(devs) && len(devs) > 0:
			healthy = append(healthy, name)
		case health(len(devs), pluginapi.Unhealthy)(devs) && len(devs) > 0:
			unhealthy = append(unhealthy, name)
		default:
			odd = append(odd, name)
		}
	}
	return healthy, unhealthy, odd
}

// waitAdvertisedExactly waits until the fake kubelet advertises as healthy
// exactly the zram devices present in /dev, and every other zram resource
// it knows as unhealthy (or gone). The device set is read again at every
// check, since other tests may add or remove their own zram devices.
func waitAdvertisedExactly(t *testing.T, k *plugintest.FakeKubelet) (healthy, unhealthy []string) {
	t.Helper()
	var present, odd []string
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		present = presentZram(t)
		healthy, unhealthy, odd = advertised(k)
		if slices.Equal(present, healthy) && len(odd) == 0 {
			return healthy, unhealthy
		}
		select {
		case <-deadline:
			t.Fatalf("advertised healthy %v, unhealthy %v, mixed %v; present in /dev: %v", healthy, unhealthy, odd, present)
		case <-tick.C:
		}
	}
}
