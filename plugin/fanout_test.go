package plugin_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// sharedServers runs n servers on dir that share reg and re-check only
// when kicked (no periodic check), and returns them with their resource
// names.
func sharedServers(t *testing.T, dir string, reg *plugin.Registrar, n int) ([]*running, []string) {
	t.Helper()
	var srvs []*running
	var names []string
	for i := range n {
		opts := options(t, dir)
		opts.ResourceName = fmt.Sprintf("smarter-devices/ttyUSB%d", i)
		opts.Socket = fmt.Sprintf("smarter-ttyUSB%d.sock", i)
		opts.Registrar = reg
		srvs = append(srvs, run(t, plugin.NewServer(opts, ttySnapshot(plugin.Device{ID: "0", Healthy: true}))))
		names = append(names, opts.ResourceName)
	}
	return srvs, names
}

// watchShared runs reg.WatchDir on dir until the test ends.
func watchShared(t *testing.T, reg *plugin.Registrar, dir string, log zerolog.Logger) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.WatchDir(ctx, dir, log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Registrar.WatchDir: %v", err)
		}
	})
}

func waitRegistrations(t *testing.T, k *plugintest.FakeKubelet, names []string, n int) {
	t.Helper()
	err := k.Wait(waitCtx(t), func() bool {
		for _, name := range names {
			if k.Registrations(name) != n || !k.Streaming(name) {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("want %d registrations of each of %v with an open stream: %v", n, names, err)
	}
}

// The registrar's directory watch reaches every server that shares it,
// with no one else passing it on: a wipe of the plugin directory (the
// kubelet's start) makes each serve again and register again, though
// nothing else tells them (no periodic check, their streams stay open).
func TestRegistrarWatchReachesEveryServer(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	reg := plugin.NewRegistrar()
	t.Cleanup(reg.Close)
	_, names := sharedServers(t, dir, reg, 3)
	watchShared(t, reg, dir, testLogger(t))
	waitRegistrations(t, k, names, 1)

	if err := plugintest.WipeSockets(dir); err != nil {
		t.Fatal(err)
	}
	waitRegistrations(t, k, names, 2)
	for _, name := range names {
		if got := len(k.Devices(name)); got != 1 {
			t.Errorf("%s: %d devices listed after the wipe, want 1", name, got)
		}
	}
}

// Registrar.Kick, with no watch at all, is the safety net: servers that
// wait for a kubelet socket make no attempt however often they are kicked,
// and register once it is there and Kick is called.
func TestRegistrarKick(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	reg := plugin.NewRegistrar()
	t.Cleanup(reg.Close)
	srvs, names := sharedServers(t, dir, reg, 3)
	for _, s := range srvs {
		waitStatus(t, s.Server, "waiting for the kubelet", func(st plugin.Status) bool { return st.Serving && st.WaitingForKubelet })
	}
	for range 10 {
		reg.Kick()
	}
	for _, s := range srvs {
		if st, _ := s.Status(); st.Attempts != 0 {
			t.Fatalf("%s: %d registration attempts with no kubelet socket, want none", s.ResourceName(), st.Attempts)
		}
	}
	k := startKubelet(t, dir)
	reg.Kick()
	waitRegistrations(t, k, names, 1)
}

// While WatchDir runs, the kubelet socket's absence is said once at info
// (each server says it at debug only), however many changes and kicks
// come, and its appearance once.
func TestRegistrarSaysKubeletWaitOnce(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	reg := plugin.NewRegistrar()
	t.Cleanup(reg.Close)
	log := &testutil.SyncBuffer{}
	srvs, names := sharedServers(t, dir, reg, 2)
	watchShared(t, reg, dir, zerolog.New(log).Level(zerolog.InfoLevel))
	for _, s := range srvs {
		waitStatus(t, s.Server, "waiting for the kubelet", func(st plugin.Status) bool { return st.WaitingForKubelet })
	}
	// The watch says it at its first check, once in place: the kubelet must
	// not come before that (the servers' own checks do not wait for it).
	testutil.Eventually(t, waitTimeout, "the watch saying it waits for the kubelet", func() bool {
		return strings.Contains(log.String(), "waiting for the kubelet")
	})
	for range 10 {
		reg.Kick()
	}
	k := startKubelet(t, dir)
	waitRegistrations(t, k, names, 1)
	reg.Kick()
	waiting := strings.Count(log.String(), "waiting for the kubelet")
	appeared := strings.Count(log.String(), "kubelet socket appeared")
	if waiting != 1 || appeared != 1 {
		t.Errorf("said %d times that it waits and %d times that the socket appeared; want once each:\n%s", waiting, appeared, log.String())
	}
}
