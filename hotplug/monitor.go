package hotplug

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pilebones/go-udev/netlink"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/smarter-project/smarter-device-manager/internal/backoff"
)

// Defaults for MonitorOptions.
const (
	DefaultRcvBuf     = 8 << 20
	DefaultRunDir     = "/run"
	DefaultMinBackoff = backoff.DefaultMin
	DefaultMaxBackoff = backoff.DefaultMax
)

// MonitorOptions configures a Monitor. Zero values select the defaults.
type MonitorOptions struct {
	// Source is the netlink group to listen on; SourceAuto calls
	// DetectSource(RunDir) on every (re)connect.
	Source Source
	// RunDir is where DetectSource looks for udev/control (default /run).
	RunDir string
	// RcvBuf is the socket receive buffer in bytes (default 8 MiB). It is
	// set with SO_RCVBUFFORCE, which needs CAP_NET_ADMIN, falling back to
	// SO_RCVBUF, which net.core.rmem_max caps. A burst larger than the
	// buffer costs a Lost event, not a device.
	RcvBuf int
	// Logger receives connection state changes; uevents at debug level.
	Logger zerolog.Logger
	// MinBackoff and MaxBackoff bound the exponential delay between
	// reconnect attempts after a socket error.
	MinBackoff, MaxBackoff time.Duration
}

// Monitor listens for uevents on a NETLINK_KOBJECT_UEVENT socket.
type Monitor struct {
	opts MonitorOptions
	// dial opens the socket; tests replace it to inject socket errors.
	dial func(Source) (*os.File, error)
}

// NewMonitor returns a Monitor with the defaults filled in.
func NewMonitor(opts MonitorOptions) *Monitor {
	if opts.RunDir == "" {
		opts.RunDir = DefaultRunDir
	}
	if opts.RcvBuf <= 0 {
		opts.RcvBuf = DefaultRcvBuf
	}
	opts.MinBackoff, opts.MaxBackoff = backoff.Bounds(opts.MinBackoff, opts.MaxBackoff)
	m := &Monitor{opts: opts}
	m.dial = m.connect
	return m
}

// Run reads uevents until ctx ends and passes each parsed one to notify,
// always from the goroutine that called Run; a slow notify delays reading
// and may cost a Lost event, so keep it non-blocking.
//
// notify receives Event{Lost: true, Connected: true} each time the socket
// is bound (events before that moment were not seen; the first one also
// tells a caller that listening has begun), and Event{Lost: true} on
// ENOBUFS (the receive buffer overflowed, reading goes on), on a truncated
// message, and on any other socket error, after which Run closes the
// socket and reconnects with exponential backoff. Unparsable messages are logged at debug and dropped,
// as are messages on the kernel group whose sender is not the kernel
// (port id 0), which only a userspace spoofer would send.
//
// Run returns nil once ctx is done, promptly even while blocked in a read;
// it returns an error only for invalid arguments.
func (m *Monitor) Run(ctx context.Context, notify func(Event)) error {
	if notify == nil {
		return errors.New("hotplug monitor: nil notify")
	}
	switch m.opts.Source {
	case SourceAuto, SourceKernel, SourceUdev:
	default:
		return fmt.Errorf("hotplug monitor: invalid source %v", m.opts.Source)
	}
	log := m.opts.Logger
	bo := backoff.New(m.opts.MinBackoff, m.opts.MaxBackoff)
	for {
		if ctx.Err() != nil {
			return nil
		}
		src := m.opts.Source
		if src == SourceAuto {
			src = DetectSource(m.opts.RunDir)
		}
		var retry time.Duration
		f, err := m.dial(src)
		if err != nil {
			retry = bo.Next()
			log.Error().Err(err).Stringer("source", src).Stringer("retry_in", retry).Msg("uevent monitor connect failed")
		} else {
			notify(Event{Lost: true, Connected: true, Source: src})
			var read bool
			read, err = m.read(ctx, f, src, notify)
			if ctx.Err() != nil {
				return nil
			}
			if read {
				bo.Reset()
			}
			retry = bo.Next()
			log.Warn().Err(err).Stringer("source", src).Stringer("retry_in", retry).Msg("uevent monitor socket failed, reconnecting")
			notify(Event{Lost: true, Source: src})
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// connect opens and binds the socket with go-udev, then hands the fd to the
// runtime poller so that closing the file unblocks a pending read.
func (m *Monitor) connect(src Source) (*os.File, error) {
	var c netlink.UEventConn
	if err := c.Connect(netlink.Mode(src)); err != nil {
		return nil, fmt.Errorf("netlink uevent socket: %w", err)
	}
	fd := c.Fd
	unix.CloseOnExec(fd) // go-udev does not pass SOCK_CLOEXEC
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, m.opts.RcvBuf); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, m.opts.RcvBuf); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("set receive buffer: %w", err)
		}
	}
	rcvbuf, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	// NewFile sees the non-blocking flag and registers fd with the poller.
	f := os.NewFile(uintptr(fd), "netlink-uevent")
	m.opts.Logger.Info().Stringer("source", src).Int("rcvbuf", rcvbuf).Msg("uevent monitor listening")
	return f, nil
}

// read runs the read loop on f until an unrecoverable socket error or ctx
// ends; it closes f. It reports whether any message was read, so that Run
// resets its backoff only after a connection that worked.
func (m *Monitor) read(ctx context.Context, f *os.File, src Source, notify func(Event)) (bool, error) {
	log := m.opts.Logger
	stop := context.AfterFunc(ctx, func() { _ = f.Close() })
	defer func() {
		stop()
		_ = f.Close()
	}()
	rc, err := f.SyscallConn()
	if err != nil {
		return false, fmt.Errorf("syscall conn: %w", err)
	}
	buf := make([]byte, MaxMessageSize)
	read := false
	for {
		var (
			n, flags int
			from     unix.Sockaddr
			rerr     error
		)
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, _, flags, from, rerr = unix.Recvmsg(int(fd), buf, nil, unix.MSG_DONTWAIT)
				if rerr != unix.EINTR {
					return rerr != unix.EAGAIN // false: wait for readiness
				}
			}
		})
		switch {
		case err != nil: // closed, by ctx or otherwise
			return read, fmt.Errorf("read: %w", err)
		case errors.Is(rerr, unix.ENOBUFS):
			log.Warn().Msg("uevent receive buffer overflowed: events lost, rescanning")
			notify(Event{Lost: true, Source: src})
			continue
		case rerr != nil:
			return read, fmt.Errorf("recvmsg: %w", rerr)
		}
		read = true
		var port uint32
		if sa, ok := from.(*unix.SockaddrNetlink); ok {
			port = sa.Pid
		}
		if src == SourceKernel && port != 0 {
			log.Debug().Uint32("port", port).Msg("uevent not from the kernel dropped")
			continue
		}
		if flags&unix.MSG_TRUNC != 0 {
			log.Debug().Int("bytes", n).Msg("uevent truncated, events lost")
			notify(Event{Lost: true, Source: src})
			continue
		}
		ev, perr := ParseEvent(buf[:n])
		if perr != nil {
			log.Debug().Err(perr).Uint32("port", port).Msg("uevent dropped")
			continue
		}
		ev.Source = src
		log.Debug().Str("action", ev.Action).Str("devpath", ev.DevPath).Str("subsystem", ev.Subsystem).
			Str("devname", ev.DevName).Str("seqnum", ev.Seqnum).Stringer("source", src).Msg("uevent")
		notify(ev)
	}
}
