package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// registerTimeout bounds one Register call; the kubelet dials our socket
// while handling it, so it is not instant, but it never takes long.
const registerTimeout = 5 * time.Second

// runOnce serves one socket until ctx ends, the socket is removed, or
// serving fails, registering (again) whenever needed. What to do next, and
// what a wake-up means, is regState's to say; this loop does the I/O.
func (s *Server) runOnce(ctx context.Context) error {
	inst, err := s.listen()
	if err != nil {
		return err
	}
	defer inst.stop(s)
	s.change(s.rs.startServing)
	s.log.Info().Str("socket", inst.path).Msg("serving")

	var tick <-chan time.Time
	if s.opts.CheckInterval > 0 {
		t := time.NewTicker(s.opts.CheckInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		var retry *time.Timer
		var st step
		var d time.Duration
		s.change(func() { st, d = s.rs.next(s.kubeletPresent) })
		switch st {
		case stepHoldoff:
			retry = time.NewTimer(d)
		case stepStartWaiting:
			// The daemon says once that it waits; per resource, debug.
			s.log.Debug().Str("kubelet", s.kubeletPath()).Msg("waiting for the kubelet socket")
		case stepRegister:
			id, err := s.register(ctx, inst)
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.Is(err, errRestart):
				return err
			case err != nil:
				s.change(func() { d = s.rs.failed() })
				s.log.Warn().Err(err).Str("backoff", d.String()).Msg("registration failed; retrying")
				retry = time.NewTimer(d)
			default:
				s.change(func() { s.rs.succeeded(id) })
				s.log.Info().Str("kubelet", s.kubeletPath()).Str("endpoint", s.opts.Socket).Msg("registered")
			}
		}
		var retryC <-chan time.Time
		if retry != nil {
			retryC = retry.C
		}
		select {
		case <-ctx.Done():
		case err := <-inst.serveErr:
			if retry != nil {
				retry.Stop()
			}
			return fmt.Errorf("serve %s: %w", inst.path, err)
		case <-s.kick:
		case <-tick:
		case <-retryC:
		}
		if retry != nil {
			retry.Stop()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Level-triggered re-check of the plugin directory.
		if !inst.ownsSocket() {
			return errRestart
		}
		var reason string
		var holdoff time.Duration
		s.change(func() { reason, holdoff = s.rs.recheck(s.kubeletStat) })
		switch {
		case reason == "":
		case holdoff > 0:
			s.log.Warn().Str("backoff", holdoff.String()).Msg(reason + "; re-registering after backoff")
		default:
			s.log.Info().Str("reason", reason).Msg("re-registering")
		}
	}
}

// kubeletPresent reports whether something is at the kubelet socket path.
// Any error but its absence (a permission, say) counts as present: the
// registration attempt then says what is wrong, and backs off.
func (s *Server) kubeletPresent() bool {
	_, err := os.Stat(s.kubeletPath())
	return !errors.Is(err, fs.ErrNotExist)
}

// kubeletStat returns the file at the kubelet socket path, or nil.
func (s *Server) kubeletStat() os.FileInfo {
	fi, err := os.Stat(s.kubeletPath())
	if err != nil {
		return nil
	}
	return fi
}

// register sends one Register request to the kubelet and returns the
// identity of the kubelet socket it was sent to.
func (s *Server) register(ctx context.Context, inst *instance) (fileID, error) {
	// kubelet removes every plugin socket before it creates kubelet.sock.
	// With kubelet.sock seen, that wipe has happened if it is going to, so
	// our socket is checked now: registering an endpoint that is gone would
	// leave kubelet dialling it until our register timeout (a 5 s stall
	// after a kubelet restart, found by the real-kubelet e2e suite).
	if _, err := os.Stat(s.kubeletPath()); err != nil {
		return fileID{}, fmt.Errorf("kubelet socket: %w", err)
	}
	if !inst.ownsSocket() {
		return fileID{}, errRestart
	}
	s.change(s.rs.sending)

	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	return s.reg.Register(rctx, s.kubeletPath(), &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     s.opts.Socket,
		ResourceName: s.opts.ResourceName,
		Options:      s.pluginOptions(),
	})
}

// pluginOptions are sent with Register and answered by
// GetDevicePluginOptions: both must agree.
func (s *Server) pluginOptions() *pluginapi.DevicePluginOptions {
	return &pluginapi.DevicePluginOptions{
		PreStartRequired:                false,
		GetPreferredAllocationAvailable: s.opts.PreferredAllocation,
	}
}

// openStream records a new ListAndWatch stream and returns its id and the
// registration epoch it belongs to.
func (s *Server) openStream() (id, epoch uint64) {
	s.change(func() { id, epoch = s.rs.openStream() })
	return id, epoch
}

// closeStream records the end of a stream. When that means the kubelet has
// most likely gone (see regState.closeStream), Run is kicked to register
// again once a kubelet socket is there.
func (s *Server) closeStream(id, epoch uint64, byKubelet bool) {
	var lost bool
	s.change(func() { lost = s.rs.closeStream(id, epoch, byKubelet) })
	if lost {
		s.log.Info().Msg("kubelet closed the ListAndWatch stream")
		s.Kick()
	}
}
