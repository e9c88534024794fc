package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/hotplug"
	"github.com/smarter-project/smarter-device-manager/plugin"
)

// EventSource delivers uevents; the daemon treats each as a wake-up hint.
// hotplug.Monitor is the production implementation. notify must not block.
type EventSource interface {
	Run(ctx context.Context, notify func(hotplug.Event)) error
}

// Options configures Run. Zero values take the defaults noted.
type Options struct {
	// Config is the rule set to start with (required).
	Config *conf.Config
	// ConfigPath is reloaded on every Reload signal; "" means the embedded
	// default is in use and a reload keeps it.
	ConfigPath string
	// Reload asks for the rule file to be read again (SIGHUP).
	Reload <-chan struct{}
	// WatchConfig also reloads ConfigPath when it changes on disk: its own
	// name (an editor renames a file in), a symlink on the way to it (a
	// ConfigMap update swaps ..data) or the file a symlink points to.
	// Nothing else in those directories triggers a reload.
	WatchConfig bool

	DevRoot   string // default /dev
	SysRoot   string // default /sys
	RunDir    string // default /run: udev's database is RunDir/udev/data
	CDIDir    string // default /var/run/cdi: spec files for rules with cdi: true
	PluginDir string // default /var/lib/kubelet/device-plugins
	Prefix    string // resource-name prefix, default "smarter-devices"

	// RemoveAfter is how long a resource whose device has gone stays
	// registered (unhealthy) before it is stopped; 0 keeps it forever.
	RemoveAfter time.Duration
	// FlapDamping holds down a device that keeps coming and going; the
	// zero value turns it off (the command line's default is
	// DefaultFlapDamping).
	FlapDamping FlapDamping
	// Resync is the period of a full re-read with no event at all: a safety
	// net for a dead udevd or a netlink socket that lost its group. Default 1m.
	Resync time.Duration
	// ScanDepth is how many directory levels below DevRoot are read
	// (default 10, as the old daemon did).
	ScanDepth int

	// Events feeds wake-ups; nil runs with no hotplug (resyncs only).
	Events EventSource
	Logger zerolog.Logger
	// Stats, when set, is kept up to date (for --debug-addr and benchmarks).
	Stats *Stats
	// Probe, when set, is answered by the event loop (health endpoints).
	Probe *Probe

	// DevFS and SysFS replace os.DirFS(DevRoot) and os.DirFS(SysRoot) in
	// tests; host paths in Allocate are still built from DevRoot.
	DevFS fs.FS
	SysFS fs.FS
	RunFS fs.FS
	// ProcFS replaces os.DirFS("/proc"), where the daemon reads its own
	// mount table (self/mountinfo) to refuse mounted block devices.
	ProcFS fs.FS
	// Output, when set, replaces the device plugin: no plugin server
	// starts, the plugin directory is not watched, and the plan goes to
	// the Output (the DRA driver). Run runs it and stops with it.
	Output Output
	// ServerMinBackoff and ServerMaxBackoff bound the plugin servers'
	// retry backoff (plugin.Options.MinBackoff, MaxBackoff); zero takes
	// plugin's defaults, tests shorten them.
	ServerMinBackoff, ServerMaxBackoff time.Duration
}

func (o *Options) setDefaults() error {
	if o.Config == nil {
		return errors.New("daemon: no rule set")
	}
	for _, def := range []struct {
		field *string
		value string
	}{
		{&o.DevRoot, "/dev"},
		{&o.SysRoot, "/sys"},
		{&o.RunDir, "/run"},
		{&o.CDIDir, "/var/run/cdi"},
		{&o.PluginDir, "/var/lib/kubelet/device-plugins"},
		{&o.Prefix, "smarter-devices"},
	} {
		if *def.field == "" {
			*def.field = def.value
		}
	}
	if err := conf.ValidPrefix(o.Prefix); err != nil {
		return fmt.Errorf("resource prefix %q: %w", o.Prefix, err)
	}
	if o.Resync <= 0 {
		o.Resync = time.Minute
	}
	if o.ScanDepth <= 0 {
		o.ScanDepth = 10
	}
	if o.DevFS == nil {
		o.DevFS = os.DirFS(o.DevRoot)
	}
	if o.SysFS == nil {
		o.SysFS = os.DirFS(o.SysRoot)
	}
	if o.RunFS == nil {
		o.RunFS = os.DirFS(o.RunDir)
	}
	if o.ProcFS == nil {
		o.ProcFS = os.DirFS("/proc")
	}
	if o.Stats == nil {
		o.Stats = new(Stats)
	}
	if o.Probe == nil {
		o.Probe = NewProbe()
	}
	return nil
}

// Run serves until ctx ends, then stops every plugin server (each removes
// its socket) and returns nil. It returns an error only for unusable
// options, or the error that stopped Options.Output.
func Run(ctx context.Context, opts Options) error {
	if err := opts.setDefaults(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	d := newDaemon(opts)
	var wg sync.WaitGroup
	var outErr error
	if opts.Output != nil {
		wg.Go(func() {
			if outErr = opts.Output.Run(ctx); outErr != nil {
				cancel() // an output that cannot serve leaves nothing to do
			}
		})
	} else {
		d.reg = plugin.NewRegistrar()
		defer d.reg.Close() // after every server has stopped (loop returns first)
	}
	if opts.Events != nil {
		d.opts.Probe.monitor.Store(true)
		wg.Go(func() {
			defer d.opts.Probe.monitor.Store(false)
			if err := opts.Events.Run(ctx, d.onEvent); err != nil {
				d.log.Error().Err(err).Msg("uevent monitor stopped; relying on periodic resync")
			}
		})
	}
	if d.reg != nil {
		wg.Go(func() {
			// kubelet removes every plugin socket when it starts and then
			// creates kubelet.sock: the registrar passes both on to every
			// server, which checks whether it must serve or register again.
			err := d.reg.WatchDir(ctx, opts.PluginDir, d.log)
			if err != nil {
				d.log.Error().Err(err).Str("dir", opts.PluginDir).Msg("cannot watch the plugin directory; the kubelet's start and restarts are noticed only at the periodic resync")
			}
		})
	}

	if opts.WatchConfig && opts.ConfigPath != "" {
		if w, relevant := d.startConfigWatch(); w != nil {
			wg.Go(func() { d.watchConfig(ctx, w, relevant) })
		}
	}

	d.loop(ctx)
	wg.Wait()
	return outErr
}

// newDaemon returns the daemon's state for opts, defaults applied; Run
// adds the registrar.
func newDaemon(opts Options) *daemon {
	return &daemon{
		opts:          opts,
		log:           opts.Logger,
		cfg:           opts.Config,
		servers:       make(map[string]*running),
		stopping:      make(map[string]*running),
		reaped:        make(chan struct{}, 1),
		resources:     make(map[string]resource),
		lastSeen:      make(map[string]seen),
		wake:          make(chan struct{}, 1),
		configChanged: make(chan struct{}, 1),
		blockVerdicts: map[string]verdict{},
		warned:        make(map[string]bool),
		flap:          newFlapGuard(opts.FlapDamping),
	}
}

// signal is a non-blocking send on a capacity-1 channel: a burst of calls
// coalesces into one pending wake-up.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

type daemon struct {
	opts Options
	log  zerolog.Logger
	cfg  *conf.Config

	servers map[string]*running // by resource name; owned by loop, as is all below
	// stopping are the servers of resources that went, until their Run
	// returns and reaped says so.
	stopping map[string]*running
	reaped   chan struct{} // signalled by each server whose Run returned
	deferred bool          // a start waits for its name's previous server to stop
	// outputSent is set once Options.Output has had its first Update.
	outputSent bool
	wake       chan struct{}
	// configChanged is signalled by the rule file's directory watch.
	configChanged chan struct{}
	reg           *plugin.Registrar // one kubelet connection for every registration
	warned        map[string]bool   // warnings already logged, so a rescan does not repeat them
	// lastRead is what the last reload read (content or error), so one
	// that reads the same again does nothing and logs nothing.
	lastRead   *readResult
	lastFailed bool // and it failed
	// resources is what runs, as the plan sees it: settings and units.
	resources map[string]resource
	// lastSeen is each plain resource as last read, its device's
	// identity included: the rules are asked of it while it is absent.
	lastSeen map[string]seen
	// collect, when set (Plan), also receives every warning.
	collect func(conf.Warning)
	// blockVerdicts caches the dangerous-block-device check (see safety).
	blockVerdicts map[string]verdict
	// gpus caches the Jetson GPUs for a resync period (readGPUs).
	gpus struct {
		ids  []string
		at   time.Time
		read bool
	}
	serveWG sync.WaitGroup
	// flap damps units that keep coming and going.
	flap *flapGuard
}

func (d *daemon) onEvent(ev hotplug.Event) {
	st := d.opts.Stats
	if !ev.Lost {
		st.Events.Add(1)
	}
	if !ev.Relevant() {
		st.Ignored.Add(1)
		return
	}
	st.Relevant.Add(1)
	// The monitor logs each uevent at debug. A Lost notice is routine on
	// every (re)connect (Connected); the monitor warns about real losses.
	if ev.Lost {
		st.Lost.Add(1)
		msg := "uevents may have been missed; rescanning"
		if ev.Connected {
			msg = "uevent socket connected; rescanning"
		}
		d.log.Debug().Str("source", ev.Source.String()).Msg(msg)
	}
	signal(d.wake)
}

func (d *daemon) loop(ctx context.Context) {
	resync := time.NewTicker(d.opts.Resync)
	defer resync.Stop()
	removal := time.NewTimer(time.Hour)
	removal.Stop()
	defer removal.Stop()

	d.reconcile(ctx, removal)
	for {
		select {
		case <-ctx.Done():
			d.stopAll()
			return
		case <-d.wake:
		case <-resync.C:
			// The servers' own safety net, too: one timer here instead of
			// a ticker in every server.
			if d.reg != nil {
				d.reg.Kick()
			}
		case <-removal.C:
		case <-d.opts.Reload:
			d.reload()
		case <-d.configChanged:
			d.reload()
		case <-d.reaped:
			// A server stopped: finish its stop, and start what waited
			// for it.
			if !d.reap() {
				continue
			}
		case reply := <-d.opts.Probe.reqs:
			reply <- d.report()
			continue
		}
		d.reconcile(ctx, removal)
	}
}

// kubeletSocket is where the kubelet serves its registration socket.
func (d *daemon) kubeletSocket() string {
	return filepath.Join(d.opts.PluginDir, plugin.DefaultKubeletSocket)
}

// kubeletAbsent reports whether the plugin directory has no kubelet socket.
func (d *daemon) kubeletAbsent() bool {
	_, err := os.Stat(d.kubeletSocket())
	return errors.Is(err, fs.ErrNotExist)
}

// reconcile reads the device state, resolves it against the rules and moves
// the running servers towards it.
func (d *daemon) reconcile(ctx context.Context, removal *time.Timer) {
	began := time.Now()
	defer func() {
		d.opts.Stats.Rescans.Add(1)
		d.opts.Stats.RescanNanos.Add(uint64(time.Since(began)))
		n := len(d.servers)
		if d.opts.Output != nil {
			n = len(d.resources)
		}
		d.opts.Stats.Resources.Store(int64(n))
	}()
	st, err := d.read()
	if err != nil {
		// Keep serving what we served: a failed read is not a removal.
		d.opts.Stats.Errors.Add(1)
		d.log.Error().Err(err).Str("dir", d.opts.DevRoot).Msg("cannot read the device root")
		return
	}
	now := time.Now()
	desired, flaps, release := d.flap.filter(d.desire(&st), now)
	d.logFlaps(flaps)
	acts, next := plan(desired, d.resources, now, d.opts.RemoveAfter)
	if !release.IsZero() && (next.IsZero() || release.Before(next)) {
		next = release
	}
	d.apply(ctx, acts)
	removal.Stop()
	if !next.IsZero() {
		removal.Reset(time.Until(next))
	}
}
