package plugin

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/internal/backoff"
)

// Defaults applied by [NewServer] to zero [Options] fields.
const (
	// DefaultKubeletSocket is the base name of the kubelet's registration
	// socket inside the plugin directory.
	DefaultKubeletSocket = "kubelet.sock"
	// DefaultMinBackoff is the first delay after a failed listen or
	// registration.
	DefaultMinBackoff = backoff.DefaultMin
	// DefaultMaxBackoff caps the exponential backoff.
	DefaultMaxBackoff = backoff.DefaultMax
	// DefaultCheckInterval is how often Run re-checks the plugin directory
	// without being kicked, in case a directory event was lost.
	DefaultCheckInterval = 10 * time.Second
)

// maxSocketPath is the size of sun_path on Linux.
const maxSocketPath = 108

// Options configure a [Server].
type Options struct {
	// ResourceName is the extended resource, e.g. "smarter-devices/ttyUSB0".
	ResourceName string
	// Socket is the base name of our socket inside Dir, e.g.
	// "smarter-ttyUSB0.sock". It is sent to the kubelet as the endpoint,
	// which the kubelet resolves inside its own plugin directory.
	Socket string
	// Dir is the kubelet's plugin directory, e.g.
	// /var/lib/kubelet/device-plugins; the kubelet socket lives here too.
	Dir string
	// KubeletSocket is the base name of the kubelet's registration socket
	// in Dir; empty means DefaultKubeletSocket.
	KubeletSocket string
	// Logger receives state transitions at info and retried errors at warn.
	Logger zerolog.Logger
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// failed listens or registrations; zero means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// Registrar, when set, is shared with other servers: one connection to
	// the kubelet for every registration, and its WatchDir and Kick reach
	// this server while it runs. Nil: the server keeps its own.
	Registrar *Registrar
	// CheckInterval is how often Run re-checks the plugin directory as if
	// Kick had been called; zero means DefaultCheckInterval, negative
	// disables the periodic check (only Kick then triggers it).
	CheckInterval time.Duration
	// PreferredAllocation offers GetPreferredAllocation to the kubelet. Set
	// it only where the choice of IDs matters (IDs that stand for different
	// devices, or NUMA placement): the kubelet then calls it before every
	// Allocate that has more free IDs than it needs, a round trip that is
	// pure cost when every ID hands out the same nodes.
	PreferredAllocation bool
}

func (o *Options) setDefaults() {
	if o.KubeletSocket == "" {
		o.KubeletSocket = DefaultKubeletSocket
	}
	o.MinBackoff, o.MaxBackoff = backoff.Bounds(o.MinBackoff, o.MaxBackoff)
	if o.CheckInterval == 0 {
		o.CheckInterval = DefaultCheckInterval
	}
}

func (o *Options) validate() error {
	var errs []error
	if o.ResourceName == "" {
		errs = append(errs, errors.New("resource name is empty"))
	}
	if o.Dir == "" {
		errs = append(errs, errors.New("plugin directory is empty"))
	}
	// The kubelet joins the endpoint with its own directory, so a path
	// would not name the same file on both sides.
	if o.Socket == "" || o.Socket != filepath.Base(o.Socket) || o.Socket == "." || o.Socket == ".." {
		errs = append(errs, fmt.Errorf("socket %q is not a base name", o.Socket))
	} else if o.Socket == o.KubeletSocket {
		errs = append(errs, fmt.Errorf("socket %q is the kubelet's socket", o.Socket))
	} else if p := filepath.Join(o.Dir, o.Socket); len(p) >= maxSocketPath {
		errs = append(errs, fmt.Errorf("socket path %q is longer than %d bytes", p, maxSocketPath-1))
	}
	if o.KubeletSocket != filepath.Base(o.KubeletSocket) {
		errs = append(errs, fmt.Errorf("kubelet socket %q is not a base name", o.KubeletSocket))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("plugin options for %q: %w", o.ResourceName, err)
	}
	return nil
}
