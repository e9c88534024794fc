// Command smarter-device-manager exposes host devices (serial adapters,
// cameras, sound cards, I2C/SPI, GPIO, GPUs) to Kubernetes pods through the
// kubelet device-plugin API, following hotplug through netlink uevents.
// With --mode=dra it publishes them as DRA devices instead: built with
// -tags dra (smarter-device-manager-dra) it runs the DRA driver itself,
// built without it hands over to that binary (mode_exec.go).
//
// This is the only package that exits: it parses flags, builds the logger,
// wires signals and calls daemon.Run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/daemon"
	"github.com/smarter-project/smarter-device-manager/hotplug"
)

// Exit statuses: 0 after a clean stop, 1 when the daemon cannot start
// (a broken rule file, say), 2 for a command-line mistake.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	// Milliseconds in log timestamps: hotplug is a matter of milliseconds.
	// This is zerolog's process-wide setting, so only main sets it.
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
	os.Exit(run(os.Args[1:], os.Stderr))
}

type flags struct {
	config       string
	devRoot      string
	sysRoot      string
	runDir       string
	pluginDir    string
	kubeletDir   string
	prefix       string
	removeAfter  time.Duration
	flap         daemon.FlapDamping
	resync       time.Duration
	ueventSource string
	logFormat    string
	logLevel     string
	debugAddr    string
	cdiDir       string
	watchConfig  bool
	metricsAddr  string
	require      []string
	modeFlags
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("smarter-device-manager", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "config", "", "rule file (legacy YAML list, versioned YAML or TOML); empty: the first of "+strings.Join(defaultRuleFiles(), ", ")+" that exists, else the embedded default rules")
	fs.StringVar(&f.devRoot, "dev-root", "/dev", "device root to scan for device nodes")
	fs.StringVar(&f.sysRoot, "sys-root", "/sys", "sysfs root (Jetson GPUs under devices/gpu.N)")
	fs.StringVar(&f.runDir, "run-dir", "/run", "udev's run directory: its control socket (udev/control, for --uevent-source=auto) and database (udev/data, for property rules)")
	fs.StringVar(&f.kubeletDir, "kubelet-dir", "/var/lib/kubelet", "kubelet's root directory: k3s before v1.17.3 /var/lib/rancher/k3s/agent/kubelet; microk8s in DRA mode /var/snap/microk8s/common/var/lib/kubelet (its device-plugin directory stays below /var/lib/kubelet)")
	fs.StringVar(&f.pluginDir, "plugin-dir", "", "kubelet device-plugin directory (holds kubelet.sock); empty: KUBELET_DIR/device-plugins")
	fs.StringVar(&f.prefix, "resource-prefix", "smarter-devices", "extended-resource domain: resources are named PREFIX/DEVICE")
	fs.DurationVar(&f.removeAfter, "remove-after", 5*time.Minute, "stop a resource whose device has been gone this long (0: keep it forever, unhealthy)")
	fs.DurationVar(&f.flap.HalfLife, "flap-half-life", daemon.DefaultFlapDamping.HalfLife, "a device that keeps coming and going is held unhealthy until quiet: each change adds 1 to its penalty, which halves this often (0: no damping)")
	fs.Float64Var(&f.flap.Suppress, "flap-suppress", daemon.DefaultFlapDamping.Suppress, "the penalty at which a flapping device is held (6: about the 7th change within a few seconds); released below 1")
	fs.DurationVar(&f.flap.MaxHold, "flap-max-hold", daemon.DefaultFlapDamping.MaxHold, "release a held device at most this long after its last change")
	fs.DurationVar(&f.resync, "resync", time.Minute, "full re-read of the device state even with no uevent (a safety net)")
	fs.StringVar(&f.ueventSource, "uevent-source", "auto", "auto|kernel|udev: netlink group to listen on; auto uses udev's when systemd-udevd runs")
	fs.StringVar(&f.logFormat, "log-format", "json", "json|console")
	fs.StringVar(&f.logLevel, "log-level", "info", "trace|debug|info|warn|error")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve /metrics (Prometheus), /healthz and /readyz on this address, e.g. :9898; off when empty")
	fs.Func("require", "resource that must have a healthy device for /readyz (repeatable, or comma-separated)", func(v string) error {
		for _, r := range strings.Split(v, ",") {
			if r = strings.TrimSpace(r); r != "" {
				f.require = append(f.require, r)
			}
		}
		return nil
	})
	fs.BoolVar(&f.watchConfig, "watch-config", true, "reload the rule file when it changes on disk (a ConfigMap update), not only on SIGHUP")
	fs.StringVar(&f.cdiDir, "cdi-dir", "/var/run/cdi", "where CDI spec files are written for rules with cdi: true")
	f.modeFlags.register(fs)
	fs.StringVar(&f.debugAddr, "debug-addr", "", "serve pprof and counters (/debug/pprof/, /debug/vars) on this address, e.g. 127.0.0.1:6060; off when empty")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: smarter-device-manager [flags]\n"+
			"       smarter-device-manager check [--config FILE]   validate a rule file\n"+
			"       smarter-device-manager list [--config FILE]    dry run: which device gets which resource\n"+
			"       smarter-device-manager version\n\n"+
			"Advertises every device node under --dev-root that a rule matches as a kubelet\n"+
			"extended resource (PREFIX/ttyUSB0, PREFIX/snd, PREFIX/net_tun) and follows hotplug;\n"+
			"with --mode=dra, as DRA devices in ResourceSlices ("+draBinary+").\n"+
			"SIGHUP reloads the rule file; SIGTERM/SIGINT stop cleanly.\n\n"+
			"Every flag can also be set from the environment: --plugin-dir as\n"+
			"SMARTER_DEVICE_MANAGER_PLUGIN_DIR, and so on; the command line wins.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	// Every flag can come from the environment (a DaemonSet sets env more
	// easily than args): SMARTER_DEVICE_MANAGER_PLUGIN_DIR for
	// --plugin-dir. The command line wins.
	if err := flagsFromEnv(fs); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch f.logFormat {
	case "json", "console":
	default:
		return nil, fmt.Errorf("--log-format: %q is not json or console", f.logFormat)
	}
	if _, err := hotplug.ParseSource(f.ueventSource); err != nil {
		return nil, fmt.Errorf("--uevent-source: %w", err)
	}
	if f.pluginDir == "" {
		f.pluginDir = filepath.Join(f.kubeletDir, "device-plugins")
	}
	if f.flap.HalfLife < 0 || f.flap.MaxHold < 0 {
		return nil, fmt.Errorf("--flap-half-life %v, --flap-max-hold %v: neither may be negative", f.flap.HalfLife, f.flap.MaxHold)
	}
	if f.flap.HalfLife > 0 && !(f.flap.Suppress > 1) {
		return nil, fmt.Errorf("--flap-suppress: %v must be above 1 (the penalty at which a held device is released)", f.flap.Suppress)
	}
	if f.removeAfter < 0 {
		return nil, fmt.Errorf("--remove-after: %v is negative", f.removeAfter)
	}
	if err := f.modeFlags.check(); err != nil {
		return nil, err
	}
	return f, nil
}

// envPrefix starts the environment variable of every flag.
const envPrefix = "SMARTER_DEVICE_MANAGER_"

// envName is the environment variable that sets a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func flagsFromEnv(fs *flag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(fl *flag.Flag) {
		name := envName(fl.Name)
		if v, ok := os.LookupEnv(name); ok {
			if err := fl.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

func newLogger(f *flags, w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(f.logLevel)
	if err != nil || f.logLevel == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level: %q is not a level", f.logLevel)
	}
	if f.logFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

func run(args []string, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return check(args[1:], os.Stdout, stderr)
		case "list":
			return list(args[1:], os.Stdout, stderr)
		case "version":
			fmt.Fprintln(os.Stdout, version())
			return exitOK
		}
	}
	f, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "smarter-device-manager: %v\n", err)
		return exitUsage
	}
	log, err := newLogger(f, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "smarter-device-manager: %v\n", err)
		return exitUsage
	}
	stats := new(daemon.Stats)
	var output daemon.Output // nil: the device plugin
	if f.mode == modeDRA {
		if output, err = draOutput(f, args, stats, log); err != nil {
			fmt.Fprintf(stderr, "smarter-device-manager: %v\n", err)
			return exitError
		}
	}

	cfg, rules, err := loadRules(f.config, defaultRuleFiles())
	if err != nil {
		// Every problem at once, one per line, file:line: field: problem.
		fmt.Fprintf(stderr, "smarter-device-manager: invalid rule file:\n%v\n", err)
		log.Error().Err(err).Str("file", rules.file).Msg("invalid rule file; not starting")
		return exitError
	}
	if err := conf.ValidPrefix(f.prefix); err != nil {
		fmt.Fprintf(stderr, "smarter-device-manager: --resource-prefix: %v\n", err)
		return exitUsage
	}

	source, err := hotplug.ParseSource(f.ueventSource)
	if err != nil {
		fmt.Fprintf(stderr, "smarter-device-manager: --uevent-source: %v\n", err)
		return exitUsage
	}
	// auto is decided again on every reconnect of the monitor; this is the
	// choice it starts with.
	effective := source
	if source == hotplug.SourceAuto {
		effective = hotplug.DetectSource(f.runDir)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	reload := make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		// Ends with ctx; forwards SIGHUPs, coalesced.
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case reload <- struct{}{}:
				default:
				}
			}
		}
	}()

	if len(rules.ignored) > 0 {
		log.Warn().Str("rules", rules.file).Strs("ignored", rules.ignored).Msg("more than one default rule file exists; using the first (set --config to choose)")
	}
	log.Info().Str("rules", rules.String()).Str("rules_from", rules.why).Int("count", len(cfg.Rules)).Str("dev_root", f.devRoot).
		Str("plugin_dir", f.pluginDir).Str("uevent_source", effective.String()).Str("mode", f.mode).Msg("starting smarter-device-manager")

	probe := daemon.NewProbe()
	for _, srv := range []struct {
		addr, what   string
		h            func() http.Handler // built only when served
		loopbackOnly bool
	}{
		{f.metricsAddr, "health endpoints (/metrics, /healthz, /readyz)", func() http.Handler { return healthHandler(stats, probe, f.require) }, false},
		{f.debugAddr, "debug endpoints (pprof, /debug/vars)", func() http.Handler { return debugHandler(stats) }, true},
	} {
		if srv.addr == "" {
			continue
		}
		stop, err := serveHTTP(srv.addr, srv.h(), srv.what, srv.loopbackOnly, log)
		if err != nil {
			fmt.Fprintf(stderr, "smarter-device-manager: %s: %v\n", srv.what, err)
			return exitUsage
		}
		defer stop()
	}

	err = daemon.Run(ctx, daemon.Options{
		Config:      cfg,
		ConfigPath:  rules.file,
		WatchConfig: f.watchConfig,
		Reload:      reload,
		DevRoot:     f.devRoot,
		SysRoot:     f.sysRoot,
		RunDir:      f.runDir,
		CDIDir:      f.cdiDir,
		PluginDir:   f.pluginDir,
		Prefix:      f.prefix,
		RemoveAfter: f.removeAfter,
		FlapDamping: f.flap,
		Resync:      f.resync,
		Events:      hotplug.NewMonitor(hotplug.MonitorOptions{Source: source, RunDir: f.runDir, Logger: log, Dropped: &stats.Dropped}),
		Logger:      log,
		Stats:       stats,
		Probe:       probe,
		Output:      output,
	})
	if err != nil {
		log.Error().Err(err).Msg("daemon failed")
		return exitError
	}
	log.Info().Msg("stopped")
	return exitOK
}
