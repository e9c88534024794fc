package hotplug

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Source selects the netlink multicast group a Monitor listens on.
type Source int

const (
	// SourceAuto resolves to SourceUdev or SourceKernel with DetectSource
	// each time the Monitor connects.
	SourceAuto Source = 0
	// SourceKernel is netlink group 1: events straight from the kernel,
	// sent before udev has created symlinks or set permissions.
	SourceKernel Source = 1
	// SourceUdev is netlink group 2: events re-broadcast by udevd after
	// its rules ran, with udev properties and a libudev header.
	SourceUdev Source = 2
)

// String returns "auto", "kernel" or "udev".
func (s Source) String() string {
	switch s {
	case SourceAuto:
		return "auto"
	case SourceKernel:
		return "kernel"
	case SourceUdev:
		return "udev"
	}
	return fmt.Sprintf("Source(%d)", int(s))
}

// ParseSource turns "auto", "kernel" or "udev" (for example a flag value)
// into a Source.
func ParseSource(s string) (Source, error) {
	switch s {
	case "auto", "":
		return SourceAuto, nil
	case "kernel":
		return SourceKernel, nil
	case "udev":
		return SourceUdev, nil
	}
	return 0, fmt.Errorf("unknown uevent source %q (want auto, kernel or udev)", s)
}

// DetectSource chooses the source for SourceAuto: SourceUdev if
// <runDir>/udev/control exists and accepts a connection, so udevd is alive
// and will re-broadcast events; otherwise SourceKernel. udevd leaves its
// control socket behind when it exits, and listening to group 2 with no udevd
// would hear nothing, so existence alone is not enough.
func DetectSource(runDir string) Source {
	if udevAlive(filepath.Join(runDir, "udev", "control")) {
		return SourceUdev
	}
	return SourceKernel
}

// udevAlive connects to udevd's control socket and hangs up at once; udevd
// treats a connection without a message as a no-op.
func udevAlive(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket {
		return false
	}
	// udevd's control socket is SOCK_SEQPACKET; try stream too in case an
	// implementation differs (the kernel answers EPROTOTYPE on a mismatch).
	for _, network := range []string{"unixpacket", "unix"} {
		c, err := net.DialTimeout(network, path, time.Second)
		switch {
		case err == nil:
			_ = c.Close()
			return true
		case errors.Is(err, syscall.EAGAIN):
			// A full backlog: a listener exists but has not accepted
			// yet (udevd's is short). Seen when two checks race.
			return true
		case !errors.Is(err, syscall.EPROTOTYPE):
			return false // ECONNREFUSED: no listener, a stale socket
		}
	}
	return false
}
