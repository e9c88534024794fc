package hotplug

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
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
	// Dropped, when set, counts the messages read and thrown away: from a
	// sender that is not trusted (see Run) or unparsable. The kernel and
	// udevd send neither, so a count that grows means someone on the host
	// sends forged uevents.
	Dropped *atomic.Uint64
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
// socket and reconnects with exponential backoff.
//
// Senders are checked as libudev's device monitor checks them (systemd's
// sd-device/device-monitor.c): a unicast message is dropped (the kernel and
// udevd only multicast), a kernel-group message must come from port id 0
// (the kernel), and a udev-group message must carry SCM_CREDENTIALS with
// uid 0 (udevd runs as root). Those dropped, and unparsable messages, are
// logged at debug and counted in MonitorOptions.Dropped; they never reach
// notify.
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
	// The kernel attaches the sender's credentials to each message only
	// when asked; the udev group is trusted on them (see checkSender).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("set SO_PASSCRED: %w", err)
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
	// Room for one SCM_CREDENTIALS message, the only one SO_PASSCRED adds.
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	drop := func() {
		if m.opts.Dropped != nil {
			m.opts.Dropped.Add(1)
		}
	}
	read := false
	for {
		var (
			n, oobn, flags int
			from           unix.Sockaddr
			rerr           error
		)
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, oobn, flags, from, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
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
		// Before anything else: an untrusted sender's message, truncated
		// or not, must cost nothing but this check.
		if serr := checkSender(src, from, oob[:oobn], flags); serr != nil {
			log.Debug().Err(serr).Stringer("source", src).Msg("uevent dropped: untrusted sender")
			drop()
			continue
		}
		if flags&unix.MSG_TRUNC != 0 {
			log.Debug().Int("bytes", n).Msg("uevent truncated, events lost")
			notify(Event{Lost: true, Source: src})
			continue
		}
		ev, perr := ParseEvent(buf[:n])
		if perr != nil {
			log.Debug().Err(perr).Msg("uevent dropped")
			drop()
			continue
		}
		ev.Source = src
		log.Debug().Str("action", ev.Action).Str("devpath", ev.DevPath).Str("subsystem", ev.Subsystem).
			Str("devname", ev.DevName).Str("seqnum", ev.Seqnum).Stringer("source", src).Msg("uevent")
		notify(ev)
	}
}

// checkSender returns why a message received on the src group from the
// address from, with control messages oob, must be dropped, or nil. It
// follows libudev (sd-device/device-monitor.c, device_monitor_receive_device)
// but trusts no unicast sender, as we have none to trust.
//
// Only a process with CAP_NET_ADMIN in the host network namespace can send to
// a uevent socket at all (the kernel refuses others with EPERM), but that
// includes a non-root container with hostNetwork and NET_ADMIN: the
// credentials the kernel attaches say which uid sent, and only a sender that
// may change its uid (root) can claim 0.
func checkSender(src Source, from unix.Sockaddr, oob []byte, flags int) error {
	sa, ok := from.(*unix.SockaddrNetlink)
	if !ok {
		return fmt.Errorf("sender address %T is not netlink", from)
	}
	// The kernel and udevd multicast to their group; the source address
	// says to which (group n is mask 1<<(n-1): 1 and 2 alike), 0 if unicast.
	if sa.Groups != uint32(src) {
		if sa.Groups == 0 {
			return fmt.Errorf("unicast message from port %d", sa.Pid)
		}
		return fmt.Errorf("message for group mask %#x from port %d", sa.Groups, sa.Pid)
	}
	if src == SourceKernel {
		// No userspace socket has port id 0 (binding to 0 autobinds),
		// so this is the kernel.
		if sa.Pid != 0 {
			return fmt.Errorf("kernel-group message from port %d, not the kernel", sa.Pid)
		}
		return nil
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return fmt.Errorf("control messages truncated, from port %d", sa.Pid)
	}
	cred, err := credentials(oob)
	if err != nil {
		return fmt.Errorf("from port %d: %w", sa.Pid, err)
	}
	if cred.Uid != 0 {
		return fmt.Errorf("sender uid=%d pid=%d port %d, not root", cred.Uid, cred.Pid, sa.Pid)
	}
	return nil
}

// credentials returns the SCM_CREDENTIALS in oob.
func credentials(oob []byte) (*unix.Ucred, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control messages: %w", err)
	}
	for _, msg := range msgs {
		if msg.Header.Level == unix.SOL_SOCKET && msg.Header.Type == unix.SCM_CREDENTIALS {
			cred, err := unix.ParseUnixCredentials(&msg)
			if err != nil {
				return nil, fmt.Errorf("sender credentials: %w", err)
			}
			return cred, nil
		}
	}
	return nil, errors.New("no sender credentials")
}
