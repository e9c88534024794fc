package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// configMap is a rule file mounted the way the kubelet mounts a ConfigMap:
// dir/rules.yaml → ..data/rules.yaml, ..data a symlink to a timestamped
// directory, swapped by renaming a new symlink over it (one atomic step).
type configMap struct {
	t   *testing.T
	dir string
	gen int
}

func newConfigMap(t *testing.T, dir, rules string) *configMap {
	c := &configMap{t: t, dir: dir}
	c.swap(rules)
	if err := os.Symlink(filepath.Join("..data", "rules.yaml"), c.path()); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *configMap) path() string { return filepath.Join(c.dir, "rules.yaml") }

// swap publishes rules as the kubelet does: a new ..<timestamp> directory,
// ..data_tmp pointing at it renamed over ..data, the old directory removed.
func (c *configMap) swap(rules string) {
	c.t.Helper()
	c.gen++
	ts := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", c.gen%60, c.gen)
	if err := os.Mkdir(filepath.Join(c.dir, ts), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, ts, "rules.yaml"), []byte(rules), 0o644); err != nil {
		c.t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(c.dir, "..data"))
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		c.t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(c.dir, old)); err != nil {
			c.t.Fatal(err)
		}
	}
}

// dangle points ..data at a directory that does not exist: the file
// vanishes for a moment, as in the middle of an unlucky swap.
func (c *configMap) dangle() {
	c.t.Helper()
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink("..gone", tmp); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		c.t.Fatal(err)
	}
}

// TestReloadUnderLoad reloads a ConfigMap-mounted rule file, broken and
// good versions in turn, while a real zram device is added and removed in a
// loop and change uevents keep coming: a broken file never drops or touches
// a working resource, a good one applies, and unchanged resources are never
// registered again.
func TestReloadUnderLoad(t *testing.T) {
	const (
		rules1 = "version: v1\nrules:\n  - match: ^zram[0-9]+$\n    count: 1\n  - match: ^null$\n    count: 2\n"
		rules2 = "version: v1\nrules:\n  - match: ^zram[0-9]+$\n    count: 3\n  - match: ^null$\n    count: 2\n  - match: ^zero$\n    count: 1\n"
	)
	broken := map[string]string{
		"a regexp that does not compile": "version: v1\nrules:\n  - match: ^zram[0-9+$\n",
		"an unknown key":                 "version: v1\nrules:\n  - match: ^zram[0-9]+$\n    colour: blue\n",
		"a file cut short":               "version: v1\nrules:\n  - match: ^zram[0-9]+$\n    count: [",
		"an empty file":                  "",
	}
	cm := newConfigMap(t, testutil.ShortTempDir(t), rules1)
	stats := new(Stats)
	d := startKernelDaemon(t, kernelOpts{rules: rules1, mutate: func(o *Options) { o.ConfigPath, o.Stats = cm.path(), stats }})

	stable := zramAdd(t)
	resStable := "smarter-devices/" + stable
	d.waitFor(resStable, "healthy", health(1, pluginapi.Healthy))
	d.waitFor("smarter-devices/null", "healthy", health(2, pluginapi.Healthy))

	// Load: a device coming and going, and change events, until the end.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	leftover := -1 // a zram device the churner could not remove, removed again at the end
	defer func() {
		cancel()
		wg.Wait()
		if leftover >= 0 {
			if err := testkernel.ZramRemove(leftover); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	}()
	var churned atomic.Int64
	var churnErr error // written before churnStopped is set
	var churnStopped atomic.Bool
	wg.Go(func() {
		for ctx.Err() == nil {
			b, err := os.ReadFile("/sys/class/zram-control/hot_add")
			if err != nil {
				churnErr = err
				churnStopped.Store(true)
				return
			}
			id := strings.TrimSpace(string(b))
			for range 5 {
				_ = changeEvent("block/zram" + id)
				_ = changeEvent("class/mem/null")
			}
			n, err := strconv.Atoi(id)
			if err != nil {
				churnErr = fmt.Errorf("zram hot_add gave %q: %w", id, err)
				churnStopped.Store(true)
				return
			}
			// ZramRemove waits out EBUSY: a udevd that another test binary
			// started probes each new zram device for a moment.
			if err := testkernel.ZramRemove(n); err != nil {
				leftover = n // read after wg.Wait
				churnErr = err
				churnStopped.Store(true)
				return
			}
			churned.Add(1)
		}
	})

	// Each reload waits for the device to have come and gone once more, so
	// reloads and hotplug interleave.
	churnOn := func() {
		t.Helper()
		n := churned.Load()
		testutil.Eventually(t, 20*time.Second, "zram churn", func() bool { return churned.Load() > n || churnStopped.Load() })
		if churnStopped.Load() {
			t.Fatalf("zram churn: %v", churnErr)
		}
	}
	failures := 0
	reloadBroken := func(what string, apply func()) {
		t.Helper()
		churnOn()
		apply()
		d.reload <- struct{}{}
		failures++
		testutil.Eventually(t, 20*time.Second, "reload of "+what+" fails", func() bool {
			return stats.ReloadFailures.Load() >= uint64(failures)
		})
		for res, n := range map[string]int{resStable: len(d.kubelet.Devices(resStable)), "smarter-devices/null": 2} {
			if devs := d.kubelet.Devices(res); n == 0 || !health(n, pluginapi.Healthy)(devs) || !d.kubelet.Streaming(res) {
				t.Errorf("after a reload of %s: %s advertises %v (streaming %v), want it untouched", what, res, devs, d.kubelet.Streaming(res))
			}
		}
	}
	reloadGood := func(rules string, stableCount int) {
		t.Helper()
		churnOn()
		cm.swap(rules)
		d.reload <- struct{}{}
		d.waitFor(resStable, fmt.Sprintf("%d healthy IDs after a good reload", stableCount), health(stableCount, pluginapi.Healthy))
	}

	for what, text := range broken {
		reloadBroken(what, func() { cm.swap(text) })
	}
	reloadBroken("a dangling ..data link", cm.dangle)
	reloadGood(rules2, 3)
	d.waitFor("smarter-devices/zero", "the new rule's resource", health(1, pluginapi.Healthy))
	reloadBroken("an unknown key", func() { cm.swap(broken["an unknown key"]) })
	reloadGood(rules1, 1)
	d.waitFor("smarter-devices/zero", "stream ended: its rule was dropped", func([]*pluginapi.Device) bool {
		return !d.kubelet.Streaming("smarter-devices/zero")
	})

	cancel()
	wg.Wait()
	if churnErr != nil {
		t.Fatalf("zram churn: %v", churnErr)
	}
	for _, res := range []string{resStable, "smarter-devices/null"} {
		if got := d.kubelet.Registrations(res); got != 1 {
			t.Errorf("%s registered %d times; reloads must leave a working resource's registration alone", res, got)
		}
	}
	waitAdvertisedExactly(t, d.kubelet)
	t.Logf("%d reloads (%d broken) while a zram device came and went %d times", failures+2, failures, churned.Load())
}

// TestPluginDirLifecycle: the plugin directory is missing when the daemon
// starts (its parent too) and the kubelet creates it later, wiping it as it
// starts; and a crashed run left a regular file and a dead socket at our
// socket paths. Either way every resource serves and registers.
func TestPluginDirLifecycle(t *testing.T) {
	t.Run("directory missing at start", func(t *testing.T) {
		root := testutil.ShortTempDir(t)
		dir := filepath.Join(root, "kubelet", "device-plugins")
		h := newHarnessIn(t, dir, "- devicematch: ^ttyUSB[0-9]+$\n  nummaxdevices: 1\n")
		h.dev.Set("ttyUSB0", charDev)
		h.dev.Set("ttyUSB1", charDev)
		h.events.fire("add", "ttyUSB0")
		// The daemon serves before any kubelet exists.
		testutil.Eventually(t, 20*time.Second, "both sockets served", func() bool { return len(sockets(t, dir)) == 2 })
		// The kubelet arrives: it creates its directory if missing (the
		// daemon already made it) and removes every plugin socket in it.
		// (Removing the whole tree here would race with the servers
		// re-creating their sockets: rmdir fails on a non-empty dir.)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := plugintest.WipeSockets(dir); err != nil {
			t.Fatal(err)
		}
		h.startKubelet()
		h.waitFor("smarter-devices/ttyUSB0", "registered", health(1, pluginapi.Healthy))
		h.waitFor("smarter-devices/ttyUSB1", "registered", health(1, pluginapi.Healthy))
	})
	t.Run("stale file and dead socket at our paths", func(t *testing.T) {
		dir := testutil.ShortTempDir(t)
		if err := os.WriteFile(filepath.Join(dir, "smarter-ttyUSB0.sock"), []byte("left by a crashed run"), 0o600); err != nil {
			t.Fatal(err)
		}
		// A socket whose listener died with its process: connections are refused.
		lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "smarter-ttyUSB1.sock"), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		lis.SetUnlinkOnClose(false)
		lis.Close()
		h := newHarnessIn(t, dir, "- devicematch: ^ttyUSB[0-9]+$\n  nummaxdevices: 1\n")
		h.startKubelet()
		h.dev.Set("ttyUSB0", charDev)
		h.dev.Set("ttyUSB1", charDev)
		h.events.fire("add", "ttyUSB0")
		for _, res := range []string{"smarter-devices/ttyUSB0", "smarter-devices/ttyUSB1"} {
			h.waitFor(res, "registered", health(1, pluginapi.Healthy))
			client, err := h.kubelet.Client(res)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0"}}}})
			cancel()
			if err != nil {
				t.Errorf("%s: Allocate over the replaced socket: %v", res, err)
			}
		}
	})
}

// newHarnessIn is newHarness with the plugin directory at dir and no
// kubelet until startKubelet.
func newHarnessIn(t *testing.T, dir, rules string) *harness {
	t.Helper()
	h := newHarness(t, rules, func(o *Options) {
		o.PluginDir = dir
	})
	// newHarness started its kubelet in its own directory: not ours.
	h.kubelet.Stop()
	h.dir = dir
	return h
}

func (h *harness) startKubelet() {
	h.t.Helper()
	k, err := plugintest.StartFakeKubelet(h.dir)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(k.Stop)
	h.kubelet = k
}

// The rule file is reloaded when it changes on disk, the way a ConfigMap
// update swaps its ..data symlink, with no SIGHUP.
func TestReloadOnFileChange(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	cm := newConfigMap(t, dir, "- devicematch: ^ttyACM[0-9]+$\n  nummaxdevices: 1\n")
	h := newHarness(t, "- devicematch: ^ttyACM[0-9]+$\n  nummaxdevices: 1\n", func(o *Options) {
		o.ConfigPath = cm.path()
		o.WatchConfig = true
	})
	h.dev.Set("ttyACM0", charDev)
	h.dev.Set("i2c-1", charDev)
	h.events.fire("add", "ttyACM0")
	h.waitFor("smarter-devices/ttyACM0", "served", health(1, pluginapi.Healthy))
	cm.swap("- devicematch: ^ttyACM[0-9]+$\n  nummaxdevices: 1\n- devicematch: ^i2c-[0-9]+$\n  nummaxdevices: 1\n")
	h.waitFor("smarter-devices/i2c-1", "the new rule applied with no SIGHUP", health(1, pluginapi.Healthy))
	cm.swap("- devicematch: ^i2c-[0-9+$\n")
	testutil.Eventually(t, 20*time.Second, "the broken file read", func() bool { return h.stats.ReloadFailures.Load() == 1 })
	h.settle()
	if !health(1, pluginapi.Healthy)(h.kubelet.Devices("smarter-devices/i2c-1")) {
		t.Errorf("a broken file changed what is served")
	}
}

// The watch reacts to the rule file's own name, to each symlink on the way
// to it (a ConfigMap's ..data) and to the file at the end, wherever that
// is; nothing else in those directories.
func TestRuleFilePaths(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	elsewhere := testutil.ShortTempDir(t)
	mustLink := func(target, link string) {
		t.Helper()
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "plain.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(elsewhere, "real.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mustLink(filepath.Join(elsewhere, "real.yaml"), filepath.Join(dir, "abs.yaml"))
	mustLink("abs.yaml", filepath.Join(dir, "chain.yaml"))
	cmDir := filepath.Join(dir, "cm")
	if err := os.Mkdir(cmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cm := newConfigMap(t, cmDir, "")
	cmTarget := func() string {
		t.Helper()
		ts, err := os.Readlink(filepath.Join(cmDir, "..data"))
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Join(cmDir, ts, "rules.yaml")
	}

	for _, c := range []struct {
		name, file string
		want       []string
	}{
		{"a plain file", filepath.Join(dir, "plain.yaml"), []string{filepath.Join(dir, "plain.yaml")}},
		{"a file not there yet", filepath.Join(dir, "missing.yaml"), []string{filepath.Join(dir, "missing.yaml")}},
		{"a link to another directory", filepath.Join(dir, "abs.yaml"), []string{filepath.Join(dir, "abs.yaml"), filepath.Join(elsewhere, "real.yaml")}},
		{"a link to a link", filepath.Join(dir, "chain.yaml"), []string{filepath.Join(dir, "chain.yaml"), filepath.Join(dir, "abs.yaml"), filepath.Join(elsewhere, "real.yaml")}},
		{"a ConfigMap mount", cm.path(), []string{cm.path(), filepath.Join(cmDir, "..data"), cmTarget()}},
	} {
		if got := ruleFilePaths(c.file); !slices.Equal(got, c.want) {
			t.Errorf("%s: ruleFilePaths(%s) = %q, want %q", c.name, c.file, got, c.want)
		}
	}
	cm.swap("")
	if got, want := ruleFilePaths(cm.path()), []string{cm.path(), filepath.Join(cmDir, "..data"), cmTarget()}; !slices.Equal(got, want) {
		t.Errorf("after a ConfigMap update: %q, want %q", got, want)
	}
	cm.dangle()
	if got, want := ruleFilePaths(cm.path()), []string{cm.path(), filepath.Join(cmDir, "..data"), filepath.Join(cmDir, "..gone", "rules.yaml")}; !slices.Equal(got, want) {
		t.Errorf("..data dangling: %q, want %q", got, want)
	}
}

// A rule file that is a symlink into another directory (a file kept in a
// git checkout, say) is reloaded when the file it points to is edited in
// place, and when the link is pointed at another file.
func TestReloadFollowsSymlinkTarget(t *testing.T) {
	const (
		one = "- devicematch: ^ttyACM[0-9]+$\n  nummaxdevices: 1\n"
		two = "- devicematch: ^ttyACM[0-9]+$\n  nummaxdevices: 2\n"
		six = "- devicematch: ^ttyACM[0-9]+$\n  nummaxdevices: 6\n"
	)
	dir := testutil.ShortTempDir(t)
	elsewhere := testutil.ShortTempDir(t)
	real := filepath.Join(elsewhere, "real.yaml")
	other := filepath.Join(elsewhere, "other.yaml")
	link := filepath.Join(dir, "rules.yaml")
	write := func(file, text string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(real, one)
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, one, func(o *Options) {
		o.ConfigPath = link
		o.WatchConfig = true
	})
	h.dev.Set("ttyACM0", charDev)
	h.events.fire("add", "ttyACM0")
	h.waitFor("smarter-devices/ttyACM0", "served", health(1, pluginapi.Healthy))

	write(real, two) // in place, in the other directory
	h.waitFor("smarter-devices/ttyACM0", "the edit of the link's target applied", health(2, pluginapi.Healthy))

	// Point the link at another file, as a deployment tool does: a new
	// link renamed over the old one.
	write(other, one)
	if err := os.Symlink(other, link+".new"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link+".new", link); err != nil {
		t.Fatal(err)
	}
	h.waitFor("smarter-devices/ttyACM0", "the new target applied", health(1, pluginapi.Healthy))
	write(other, six)
	h.waitFor("smarter-devices/ttyACM0", "an edit of the new target applied", health(6, pluginapi.Healthy))
}
