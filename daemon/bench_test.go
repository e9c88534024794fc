package daemon

import (
	"context"
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin"
)

// BenchmarkReconcile is one reconcile (read, desire, plan, apply) with
// every resource running and nothing changed: what each coalesced read of
// a uevent storm costs, at 100 and 1,000 resources.
func BenchmarkReconcile(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("resources=%d", n), func(b *testing.B) {
			dev := hwfixture.NewFS()
			for i := range n {
				dev.Set(fmt.Sprintf("ttyS%d", i), charDev)
			}
			cfg, err := conf.Parse("rules.yaml", []byte("- devicematch: ^ttyS[0-9]+$\n  nummaxdevices: 1\n"))
			if err != nil {
				b.Fatal(err)
			}
			opts := Options{Config: cfg, DevFS: dev, SysFS: fstest.MapFS{}, PluginDir: testutil.ShortTempDir(b), Logger: zerolog.Nop(), Resync: time.Hour}
			if err := opts.setDefaults(); err != nil {
				b.Fatal(err)
			}
			d := newDaemon(opts)
			d.reg = plugin.NewRegistrar()
			defer d.reg.Close()
			ctx, cancel := context.WithCancel(b.Context())
			defer func() {
				cancel()
				d.serveWG.Wait()
			}()
			removal := time.NewTimer(time.Hour)
			defer removal.Stop()
			d.reconcile(ctx, removal) // starts every server (no kubelet: they wait)
			if len(d.servers) != n {
				b.Fatalf("%d servers running, want %d", len(d.servers), n)
			}
			for b.Loop() {
				d.reconcile(ctx, removal)
			}
		})
	}
}
