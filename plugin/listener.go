package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"
	"syscall"
)

// socketMode is the mode of every device-plugin socket: the kubelet, which
// dials it, runs as root, and nobody else has any business on it.
const socketMode = 0o600

// maxConnsPerSocket caps the connections one socket serves at once. The
// kubelet holds one per resource, two for a moment across a
// re-registration (its new endpoint dials before the old one is closed);
// the rest is room for a debugging client. A connection beyond the cap is closed as soon as it
// is accepted: the connections already served, the kubelet's among them,
// keep working, and a flooder's connections leave within ConnectionTimeout
// (no handshake) or MaxConnectionIdle (no call) unless each holds a call
// open. Refusing the newest rather than evicting the oldest is the point:
// eviction would let a flooder cut the kubelet's ListAndWatch stream, which
// marks every device unhealthy.
const maxConnsPerSocket = 8

// listenUnix listens on a new unix socket at path whose file has mode 0600
// from the moment it exists, whatever the umask: the mode is set on the
// socket before bind(2), which creates the file with the socket's mode
// less the umask (Linux, af_unix.c). syscall.Umask would do it too, but it
// is process-wide. The listener leaves the file in place when closed: the
// caller removes it, and only if it is still ours.
func listenUnix(path string) (*net.UnixListener, error) {
	lc := net.ListenConfig{Control: setSocketMode}
	l, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, fmt.Errorf("plugin socket: %w", err)
	}
	lis := l.(*net.UnixListener)
	lis.SetUnlinkOnClose(false)
	// A umask that masks owner bits (0277, say) took some of 0600 too; put
	// them back. Only a socket is chmod'ed (Lstat: a link at our path is
	// not followed; only root can swap one in between, and root owns the
	// node anyway).
	fi, err := os.Lstat(path)
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("plugin socket: %w", err)
	}
	if fi.Mode().Type() == fs.ModeSocket && fi.Mode().Perm() != socketMode {
		if err := os.Chmod(path, socketMode); err != nil {
			lis.Close()
			return nil, fmt.Errorf("plugin socket: %w", err)
		}
	}
	return lis, nil
}

// setSocketMode is a net.ListenConfig.Control: it sets socketMode on the
// socket, which Go calls before bind(2).
func setSocketMode(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) { err = syscall.Fchmod(int(fd), socketMode) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("fchmod: %w", err)
	}
	return nil
}

// acceptor is what a socket accepts connections on: a *net.UnixListener
// (a test's stand-in fails).
type acceptor interface {
	AcceptUnix() (*net.UnixConn, error)
	Close() error
	Addr() net.Addr
}

// sockListener is what grpc.Server.Serve accepts one socket's connections
// from: it caps them (maxConnsPerSocket), takes none once the socket
// stops, and wraps each so that its local address names the socket.
type sockListener struct {
	sock *socket
	lis  acceptor
	once sync.Once
}

// Accept returns the next connection within the cap. Its errors are the
// UnixListener's, so that gRPC retries a temporary one (EMFILE) and
// returns from Serve on any other.
func (l *sockListener) Accept() (net.Conn, error) {
	for {
		c, err := l.lis.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if sc := l.sock.track(c); sc != nil {
			return sc, nil
		}
	}
}

// Close closes the listening socket (not its file); Serve closes it when
// it returns, and socket.close to stop accepting.
func (l *sockListener) Close() error {
	var err error
	l.once.Do(func() { err = l.lis.Close() })
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Addr names the socket; gRPC keys its connections by it.
func (l *sockListener) Addr() net.Addr { return l.lis.Addr() }

// sockConn is a connection accepted on a socket; its local address names
// the socket, which is how a call finds its resource.
type sockConn struct {
	*net.UnixConn
	sock *socket
	once sync.Once
}

func (c *sockConn) LocalAddr() net.Addr { return sockAddr{c.sock} }

// Close forgets the connection once gRPC is done with it, so that a
// kubelet reconnecting many times leaves nothing behind.
func (c *sockConn) Close() error {
	c.once.Do(func() { c.sock.untrack(c) })
	return c.UnixConn.Close()
}

// sockAddr is the local address of a connection accepted on a socket.
type sockAddr struct{ sock *socket }

func (a sockAddr) Network() string { return "unix" }
func (a sockAddr) String() string  { return a.sock.path }
