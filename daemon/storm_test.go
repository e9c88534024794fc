package daemon

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/hotplug"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

const zramRules = "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 1\n"

// TestUeventStorm fires thousands of real uevents at the daemon while real
// zram devices come and go in the middle of the storm: the fake kubelet
// must end up seeing exactly the devices present, healthy, and the removed
// ones unhealthy. The storm is absorbed by coalescing (far fewer rescans
// than events).
func TestUeventStorm(t *testing.T) {
	const (
		storm  = 4000 // change events for /dev/null
		per    = 100  // change events for each of our zram devices
		adds   = 4
		remove = 2 // the first two added are removed again
	)
	d := startKernelDaemon(t, kernelOpts{rules: zramRules})
	// The zram devices present before the storm are someone else's (or the
	// machine's): they are served too.
	waitAdvertisedExactly(t, d.kubelet)
	events0, lost0 := d.tap.counts()
	scans0 := d.dev.scans.Load()

	ctx, cancel := context.WithCancel(context.Background())
	progress := make(chan int, storm)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	var stormErr error
	wg.Go(func() {
		defer close(progress)
		for i := range storm {
			if ctx.Err() != nil {
				return
			}
			if err := changeEvent("class/mem/null"); err != nil {
				stormErr = fmt.Errorf("change event %d: %w", i, err)
				return
			}
			progress <- i
		}
	})
	waitProgress := func(n int) {
		t.Helper()
		for i := range progress {
			if i >= n {
				return
			}
		}
	}

	// Devices come and go in the middle of the storm.
	waitProgress(storm / 4)
	var ours []string
	for range adds {
		ours = append(ours, zramAdd(t))
	}
	for _, name := range ours {
		for range per {
			if err := changeEvent("block/" + name); err != nil {
				t.Fatalf("change event for %s: %v", name, err)
			}
		}
	}
	// Served before they go: a device that lives a few milliseconds between
	// two coalesced reads is never seen, and rightly never advertised
	// (found in CI: zram1 added and removed inside one burst). What is
	// asserted is that a device the daemon served turns unhealthy.
	for _, name := range ours {
		d.waitFor("smarter-devices/"+name, "healthy before removal", health(1, pluginapi.Healthy))
	}
	waitProgress(storm / 2)
	for _, name := range ours[:remove] {
		zramRemove(t, name)
	}
	waitProgress(storm)
	wg.Wait()
	if stormErr != nil {
		t.Fatal(stormErr)
	}

	healthy, unhealthy := waitAdvertisedExactly(t, d.kubelet)
	for _, name := range ours[:remove] {
		if !slices.Contains(unhealthy, name) {
			t.Errorf("%s was removed but is not advertised unhealthy (unhealthy: %v)", name, unhealthy)
		}
	}
	for _, name := range ours[remove:] {
		if !slices.Contains(healthy, name) {
			t.Errorf("%s is present but not advertised healthy (healthy: %v)", name, healthy)
		}
		d.waitFor("smarter-devices/"+name, "healthy", health(1, pluginapi.Healthy))
	}
	// Let the monitor read the rest of the storm, for the figures below.
	testutil.Eventually(t, 20*time.Second, "the storm read", func() bool {
		events, lost := d.tap.counts()
		return events-events0 >= storm+adds*per || lost > lost0
	})
	events, lost := d.tap.counts()
	scans := d.dev.scans.Load() - scans0
	t.Logf("fired %d uevents (+%d zram add/remove); the monitor read %d (%d Lost); %d rescans",
		storm+adds*per, adds+remove, events-events0, lost-lost0, scans)
	if scans >= int64(events-events0) {
		t.Errorf("%d rescans for %d events: the burst was not coalesced", scans, events-events0)
	}
	// The storm's own events change nothing: nothing started twice.
	if got := d.kubelet.Registrations("smarter-devices/" + ours[len(ours)-1]); got != 1 {
		t.Errorf("%s registered %d times, want 1", ours[len(ours)-1], got)
	}
}

// TestENOBUFSRescan stalls the monitor behind a receive buffer of the kernel
// minimum while devices are added, so that their add events are dropped by
// the kernel (ENOBUFS). Only Lost events and events about our devices reach
// the daemon: the devices are then served only because the Lost event made
// the daemon read /dev again.
func TestENOBUFSRescan(t *testing.T) {
	const adds = 4
	var mu sync.Mutex
	ours := map[string]bool{}
	isOurs := func(name string) bool {
		mu.Lock()
		defer mu.Unlock()
		return ours[name]
	}
	d := startKernelDaemon(t, kernelOpts{
		rules:  zramRules,
		rcvBuf: 1, // the kernel raises it to its minimum, a few messages
		pass:   func(ev hotplug.Event) bool { return ev.Lost || isOurs(ev.DevName) },
	})
	// The first read at start, and the one the connect's Lost event asked
	// for: after these, nothing but our events and Lost wakes the daemon.
	testutil.Eventually(t, 20*time.Second, "the start-up reads", func() bool { return d.dev.scans.Load() >= 2 })
	_, lost0 := d.tap.counts()
	scans0 := d.dev.scans.Load()

	held, release := d.tap.hold()
	defer release()
	if err := changeEvent("class/mem/null"); err != nil {
		t.Fatal(err)
	}
	<-held // the monitor is stuck in notify: nobody reads the socket now
	for range 150 {
		if err := changeEvent("class/mem/null"); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for range adds {
		name := zramAdd(t)
		mu.Lock()
		ours[name] = true
		mu.Unlock()
		names = append(names, name)
	}
	for range 150 {
		if err := changeEvent("class/mem/null"); err != nil {
			t.Fatal(err)
		}
	}
	release()

	for _, name := range names {
		d.waitFor("smarter-devices/"+name, "healthy after the overflow", health(1, pluginapi.Healthy))
	}
	_, lost := d.tap.counts()
	delivered := 0
	for _, name := range names {
		delivered += d.tap.addsOf(name)
	}
	t.Logf("%d zram devices added behind a full buffer: %d add events delivered, %d Lost (ENOBUFS) events, %d rescans; all %d served healthy",
		adds, delivered, lost-lost0, d.dev.scans.Load()-scans0, adds)
	if lost-lost0 < 1 {
		t.Fatalf("no Lost event after the overflow")
	}
	if delivered >= adds {
		t.Fatalf("every add event was delivered (%d): the buffer did not overflow, so the test proves nothing", delivered)
	}
}
