package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// With no kubelet yet, the daemon serves every resource, says once (not
// per resource) that it waits for the kubelet socket, reports the wait in
// its probe, and makes no registration attempt however often the plugin
// directory changes. When the kubelet's socket appears, that directory
// change alone (no resync: it is an hour away) registers every resource.
func TestWaitsForKubelet(t *testing.T) {
	dir := filepath.Join(testutil.ShortTempDir(t), "plugins")
	probe := NewProbe()
	h := newHarness(t, "- devicematch: ^ttyUSB[0-9]+$\n  nummaxdevices: 1\n", func(o *Options) {
		o.PluginDir = dir
		o.Probe = probe
		// A server that retried while waiting would do so every millisecond.
		o.ServerMinBackoff, o.ServerMaxBackoff = time.Millisecond, time.Millisecond
	})
	h.kubelet.Stop() // newHarness's kubelet serves another directory
	h.dir = dir
	resources := []string{"smarter-devices/ttyUSB0", "smarter-devices/ttyUSB1", "smarter-devices/ttyUSB2"}
	for i := range resources {
		h.dev.Set(fmt.Sprintf("ttyUSB%d", i), charDev)
	}
	h.events.fire("add", "ttyUSB0")

	report := func() Report {
		t.Helper()
		rep, err := probe.Check(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	testutil.Eventually(t, 20*time.Second, "every resource served", func() bool {
		return len(report().Resources) == len(resources) && len(sockets(t, dir)) == len(resources)
	})
	// Directory changes that are not the kubelet's: each kicks every server.
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("other-%d", i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		rep := report()
		if !rep.WaitingForKubelet {
			t.Fatalf("report with no kubelet socket: WaitingForKubelet false")
		}
		for _, res := range resources {
			if st := rep.Resources[res]; st.Registered || st.Attempts != 0 {
				t.Fatalf("%s with no kubelet socket: %+v; want no registration attempt", res, st)
			}
		}
	}
	// What a user reads at the default level: one line, no warnings (the
	// log is the behaviour under test here; per server it is debug only).
	said := 0
	for _, line := range strings.Split(h.log.String(), "\n") {
		switch {
		case strings.Contains(line, `"level":"warn"`):
			t.Errorf("a warning while waiting for the kubelet: %s", line)
		case strings.Contains(line, `"level":"info"`) && strings.Contains(line, "waiting for the kubelet"):
			said++
		}
	}
	if said != 1 {
		t.Errorf("said %d times at info that it waits for the kubelet; want once for the daemon", said)
	}

	h.startKubelet()
	for _, res := range resources {
		h.waitFor(res, "registered once the kubelet socket appeared", health(1, pluginapi.Healthy))
	}
	testutil.Eventually(t, 20*time.Second, "a report with every resource registered", func() bool {
		rep := report()
		for _, res := range resources {
			if !rep.Resources[res].Registered {
				return false
			}
		}
		return !rep.WaitingForKubelet
	})
}
