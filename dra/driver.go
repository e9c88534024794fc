package dra

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/smarter-project/smarter-device-manager/daemon"
	"github.com/smarter-project/smarter-device-manager/dra/internal/claimdata"
)

// DefaultDriverName is the driver's name unless Options says otherwise:
// the domain of its attributes and taints, and what a ResourceSlice, a
// DeviceClass selector and a claim's opaque config name it by.
const DefaultDriverName = "device-manager.smarter-project.github.io"

// Options configures a Driver. Zero values take the defaults noted.
type Options struct {
	// DriverName is a DNS subdomain of at most 63 characters; default
	// DefaultDriverName.
	DriverName string
	// NodeName is the node the driver runs on (required): its pool's
	// name, and the node its ResourceSlices belong to.
	NodeName string
	// Client reaches the API server (required): it reads ResourceClaims
	// and the Node, and writes the node's ResourceSlices.
	Client kubernetes.Interface
	// RegistryDir is where the kubelet's plugin watcher looks for
	// registration sockets; default /var/lib/kubelet/plugins_registry.
	RegistryDir string
	// PluginDir holds the driver's own socket (dra.sock), which the
	// kubelet connects to, and the prepared claims' checkpoint; default
	// /var/lib/kubelet/plugins/<DriverName>. Both paths must be the same
	// inside the driver's container and on the host.
	PluginDir string
	// CDIDir is where the CDI spec of each prepared claim is written;
	// default /var/run/cdi.
	CDIDir string
	Logger zerolog.Logger
	// Stats, when set, counts in Errors each failure the driver logs as
	// an error and goes on after (a claim not prepared, a checkpoint
	// moved aside), as the daemon counts its own; nil: not counted.
	Stats *daemon.Stats
	// RemoveAfter is the daemon's --remove-after: how long a device a
	// previous process published as unplugged is still published by this
	// one (from when it went); 0 keeps it until it comes back.
	RemoveAfter time.Duration
	// PluginOptions are passed to kubeletplugin.Start after the driver's
	// own, so they win: tests and the e2e suite set listeners there, or
	// turn services off.
	PluginOptions []kubeletplugin.Option
}

// Driver is the DRA output of the daemon: a daemon.Output that publishes
// every unit the rules make as one device of the node's pool, and a
// kubeletplugin.DRAPlugin that prepares claims for them. Create it with
// New, hand it to daemon.Options.Output; daemon.Run runs it.
type Driver struct {
	opts    Options
	log     zerolog.Logger
	cdiKind string // <driver>/claim: one CDI device per device of a claim

	mu      sync.Mutex
	view    []daemon.Resource     // as the last Update gave it
	carry   []carried             // a previous process's unplugged devices, still published
	pool    []resourceslice.Slice // as last rendered
	devices map[string]published  // the units of the same, by device name
	changed chan struct{}         // closed at every Update, then replaced
	viewed  chan struct{}         // closed at the first Update

	registered atomic.Bool
	fatal      chan error // a fatal error from HandleError, for Run

	claims *claimdata.Store // the prepared claims, persisted in PluginDir
}

// New returns a Driver for opts, defaults applied. It does no I/O; Run
// starts it.
func New(opts Options) (*Driver, error) {
	if opts.DriverName == "" {
		opts.DriverName = DefaultDriverName
	}
	if errs := validation.IsDNS1123Subdomain(opts.DriverName); len(errs) > 0 || len(opts.DriverName) > 63 {
		return nil, fmt.Errorf("DRA driver name %q: not a DNS subdomain of at most 63 characters", opts.DriverName)
	}
	if opts.NodeName == "" {
		return nil, errors.New("DRA: no node name")
	}
	if opts.Client == nil {
		return nil, errors.New("DRA: no Kubernetes client")
	}
	for _, def := range []struct {
		field *string
		value string
	}{
		{&opts.RegistryDir, kubeletplugin.KubeletRegistryDir},
		{&opts.PluginDir, filepath.Join(kubeletplugin.KubeletPluginsDir, opts.DriverName)},
		{&opts.CDIDir, kubeletplugin.DefaultCDIDir},
	} {
		if *def.field == "" {
			*def.field = def.value
		}
	}
	if opts.Stats == nil {
		opts.Stats = new(daemon.Stats)
	}
	d := &Driver{
		opts:    opts,
		log:     opts.Logger.With().Str("driver", opts.DriverName).Logger(),
		cdiKind: opts.DriverName + "/claim",
		changed: make(chan struct{}),
		viewed:  make(chan struct{}),
		fatal:   make(chan error, 1),
		claims:  claimdata.NewStore(filepath.Join(opts.PluginDir, claimdata.File)),
	}
	d.pool, d.devices, _ = renderPool(opts.DriverName, nil, nil, time.Now())
	return d, nil
}

// Run registers the driver with the kubelet and publishes the node's
// pool, again at every Update, until ctx ends; then it unregisters (the
// kubelet plugin helper removes its sockets) and returns nil. The slices
// stay in the API server: a restarted driver takes them over, and the
// devices keep their names. It returns an error when it cannot start, or
// for a fatal error HandleError was given.
func (d *Driver) Run(ctx context.Context) error {
	for _, dir := range []string{d.opts.PluginDir, d.opts.RegistryDir} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("DRA: %w", err)
		}
	}
	var corrupt *claimdata.CorruptError
	switch err := d.claims.Load(); {
	case errors.As(err, &corrupt):
		// Not fatal: a driver that stopped here would only restart into
		// the same file; the kubelet's calls rebuild what was in it.
		d.opts.Stats.Errors.Add(1)
		d.log.Error().Err(err).Str("file", corrupt.File).Str("moved_to", corrupt.Moved).Msg("prepared claims unreadable; starting with none")
	case err != nil:
		return fmt.Errorf("DRA: %w", err)
	}
	ctx = klog.NewContext(ctx, NewLogr(d.log))
	helper, err := kubeletplugin.Start(ctx, d, append([]kubeletplugin.Option{
		kubeletplugin.DriverName(d.opts.DriverName),
		kubeletplugin.NodeName(d.opts.NodeName),
		kubeletplugin.KubeClient(d.opts.Client),
		kubeletplugin.RegistrarDirectoryPath(d.opts.RegistryDir),
		kubeletplugin.PluginDataDirectoryPath(d.opts.PluginDir),
		kubeletplugin.GRPCInterceptor(d.watchRegistration),
	}, d.opts.PluginOptions...)...)
	if err != nil {
		return fmt.Errorf("DRA: start the kubelet plugin: %w", err)
	}
	defer helper.Stop()
	d.log.Info().Str("node", d.opts.NodeName).Str("socket_dir", d.opts.PluginDir).Msg("DRA driver serving; waiting for the kubelet to register it")
	d.takeOver(ctx)
	// The first pool published is the daemon's first state read (the
	// daemon always gives one, devices or none): published before it, a
	// restart's pool of carried devices alone was written, then rewritten
	// with the devices present.
	select {
	case <-d.viewed:
	case <-ctx.Done():
		return nil
	case err := <-d.fatal:
		return err
	}
	for {
		d.mu.Lock()
		pool, changed := d.pool, d.changed
		var expiry <-chan time.Time
		if next := nextExpiry(d.carry); !next.IsZero() {
			expiry = time.After(time.Until(next))
		}
		d.mu.Unlock()
		// The first call waits for the slice informer to sync; later ones
		// only hand the controller the new pool.
		err := helper.PublishResources(ctx, resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{d.opts.NodeName: {Slices: pool}}})
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("DRA: publish: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-d.fatal:
			return err
		case <-changed:
		case <-expiry:
			d.mu.Lock()
			d.renderLocked(time.Now())
			d.mu.Unlock()
		}
	}
}

// takeOver reads the pool a previous process of this node published and
// carries over the devices it showed unplugged (taintedAt known, not yet
// past RemoveAfter): this process cannot read them, and without them its
// first publish would drop them early and rewrite the slice. Only the
// newest generation of the pool counts. An API error carries nothing.
func (d *Driver) takeOver(ctx context.Context) {
	sel := fields.Set{resourceapi.ResourceSliceSelectorNodeName: d.opts.NodeName, resourceapi.ResourceSliceSelectorDriver: d.opts.DriverName}
	list, err := d.opts.Client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{FieldSelector: sel.String()})
	if err != nil {
		d.log.Warn().Err(err).Msg("cannot read the pool a previous process published: its unplugged devices are not carried over")
		return
	}
	var gen int64
	for _, sl := range list.Items {
		if sl.Spec.Pool.Name == d.opts.NodeName {
			gen = max(gen, sl.Spec.Pool.Generation)
		}
	}
	now := time.Now()
	var carry []carried
	for _, sl := range list.Items {
		if sl.Spec.Pool.Name != d.opts.NodeName || sl.Spec.Pool.Generation != gen {
			continue
		}
		for _, dev := range sl.Spec.Devices {
			i := slices.IndexFunc(dev.Taints, func(t resourceapi.DeviceTaint) bool {
				return t.Key == d.opts.DriverName+"/"+TaintUnplugged && t.TimeAdded != nil
			})
			if i < 0 {
				continue
			}
			c := carried{res: stringAttr(dev, AttrResource), key: stringAttr(dev, AttrKey), dev: dev}
			if d.opts.RemoveAfter > 0 {
				if c.until = dev.Taints[i].TimeAdded.Add(d.opts.RemoveAfter); !now.Before(c.until) {
					continue
				}
			}
			carry = append(carry, c)
		}
	}
	if len(carry) == 0 {
		return
	}
	d.log.Info().Int("devices", len(carry)).Msg("carrying over the devices a previous process published as unplugged, until they come back or --remove-after ends")
	d.mu.Lock()
	defer d.mu.Unlock()
	d.carry = carry
	d.renderLocked(now)
}

// nextExpiry is when the first carried device leaves; zero if none will.
func nextExpiry(carry []carried) time.Time {
	var next time.Time
	for _, c := range carry {
		if !c.until.IsZero() && (next.IsZero() || c.until.Before(next)) {
			next = c.until
		}
	}
	return next
}

func stringAttr(dev resourceapi.Device, name string) string {
	if a, ok := dev.Attributes[resourceapi.QualifiedName(name)]; ok && a.StringValue != nil {
		return *a.StringValue
	}
	return ""
}

// Update renders the running resources as the node's pool and wakes the
// publisher and every health stream; it does not block (daemon.Output).
func (d *Driver) Update(resources []daemon.Resource, _ []daemon.Change) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.view = resources
	d.renderLocked(time.Now())
	select {
	case <-d.viewed:
	default:
		close(d.viewed)
	}
}

// renderLocked renders the pool from the last view and the carried
// devices, and wakes the publisher and every health stream.
func (d *Driver) renderLocked(now time.Time) {
	d.pool, d.devices, d.carry = renderPool(d.opts.DriverName, d.view, d.carry, now)
	close(d.changed)
	d.changed = make(chan struct{})
}

// Registered reports whether the kubelet has registered the driver
// (daemon.Output): it said so in its last NotifyRegistrationStatus.
func (d *Driver) Registered() bool { return d.registered.Load() }

// watchRegistration notes the kubelet's verdict on each registration.
func (d *Driver) watchRegistration(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if st, ok := req.(*registerapi.RegistrationStatus); ok {
		if d.registered.Swap(st.PluginRegistered) != st.PluginRegistered || !st.PluginRegistered {
			ev := d.log.Info()
			if !st.PluginRegistered {
				d.opts.Stats.Errors.Add(1)
				ev = d.log.Error().Str("error", st.Error)
			}
			ev.Bool("registered", st.PluginRegistered).Msg("kubelet registration")
		}
	}
	return next(ctx, req)
}

// HandleError logs an error met in the background (publishing slices, a
// gRPC server); a fatal one stops Run (kubeletplugin.DRAPlugin).
func (d *Driver) HandleError(_ context.Context, err error, msg string) {
	if errors.Is(err, kubeletplugin.ErrRecoverable) {
		d.opts.Stats.Errors.Add(1)
		d.log.Error().Err(err).Msg(msg)
		return
	}
	select {
	case d.fatal <- fmt.Errorf("DRA: %s: %w", msg, err):
	default: // one is enough to stop
	}
}

// PrepareResourceClaims prepares each claim's devices of this driver:
// one CDI spec per claim, named by its UID (kubeletplugin.DRAPlugin).
func (d *Driver) PrepareResourceClaims(_ context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	out := make(map[types.UID]kubeletplugin.PrepareResult, len(claims))
	for _, c := range claims {
		out[c.UID] = d.prepare(c)
	}
	return out, nil
}

// UnprepareResourceClaims undoes PrepareResourceClaims, for claims
// prepared by this process or an earlier one (kubeletplugin.DRAPlugin).
func (d *Driver) UnprepareResourceClaims(_ context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	out := make(map[types.UID]error, len(claims))
	for _, c := range claims {
		out[c.UID] = d.unprepare(c)
	}
	return out, nil
}

// claimLabel names a claim in logs and errors.
func claimLabel(namespace, name string, uid types.UID) string {
	return namespace + "/" + name + " (" + string(uid) + ")"
}
