package plugin

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

func (r *Registrar) joined() int {
	r.fan.mu.Lock()
	defer r.fan.mu.Unlock()
	return len(r.fan.servers)
}

func (r *Registrar) socketsJoined() int {
	r.fan.mu.Lock()
	defer r.fan.mu.Unlock()
	return len(r.fan.bySocket)
}

// A server is kicked by its registrar only while it runs: the daemon starts
// and stops servers for as long as it lives, and a registrar that kept the
// stopped ones would grow without bound.
func TestRegistrarForgetsStoppedServers(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	reg := NewRegistrar()
	defer reg.Close()
	srv := NewServer(Options{ResourceName: "smarter-devices/null", Socket: "null.sock", Dir: dir, Logger: zerolog.Nop(), Registrar: reg}, Snapshot{})
	if n := reg.joined(); n != 0 {
		t.Fatalf("%d servers joined before Run", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	testutil.Eventually(t, 20*time.Second, "serving", func() bool {
		st, _ := srv.Status()
		return st.Serving
	})
	if n := reg.joined(); n != 1 {
		t.Errorf("%d servers joined while one runs, want 1", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := reg.joined(); n != 0 {
		t.Errorf("%d servers still joined after Run returned, want 0", n)
	}
	if n := reg.socketsJoined(); n != 0 {
		t.Errorf("%d socket names still joined after Run returned, want 0", n)
	}
}

// A change of one server's socket in the plugin directory kicks that server
// only; a change of the kubelet socket, or an unknown change, kicks them
// all. With every server kicked at every socket created, n resources
// starting cost n² re-checks (each two stats).
func TestRegistrarKicksOnlyTheServersConcerned(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	reg := NewRegistrar()
	defer reg.Close()
	reg.fan.kubelet = dir + "/" + DefaultKubeletSocket
	var srvs []*Server
	for _, name := range []string{"a", "b", "c"} {
		s := NewServer(Options{ResourceName: "smarter-devices/" + name, Socket: name + ".sock", Dir: dir, Logger: zerolog.Nop(), Registrar: reg}, Snapshot{})
		defer reg.join(s)()
		srvs = append(srvs, s)
	}
	pending := func() (kicked []bool) {
		for _, s := range srvs {
			select {
			case <-s.kick:
				kicked = append(kicked, true)
			default:
				kicked = append(kicked, false)
			}
		}
		return kicked
	}
	for _, c := range []struct {
		name string
		want []bool
	}{
		{"b.sock", []bool{false, true, false}},
		{"other.sock", []bool{false, false, false}},
		{DefaultKubeletSocket, []bool{true, true, true}},
		{"", []bool{true, true, true}},
	} {
		reg.kickFor(c.name)
		if got := pending(); !slices.Equal(got, c.want) {
			t.Errorf("a change of %q kicked %v (servers a, b, c); want %v", c.name, got, c.want)
		}
	}
}
