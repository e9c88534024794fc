package plugin

import (
	"context"
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
}
