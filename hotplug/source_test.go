package hotplug

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseSource(t *testing.T) {
	for in, want := range map[string]Source{"auto": SourceAuto, "": SourceAuto, "kernel": SourceKernel, "udev": SourceUdev} {
		got, err := ParseSource(in)
		if err != nil || got != want {
			t.Errorf("ParseSource(%q) = %v, %v; want %v", in, got, err, want)
		}
		if in != "" && got.String() != in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), in)
		}
	}
	if _, err := ParseSource("netlink"); err == nil {
		t.Error(`ParseSource("netlink") succeeded`)
	}
}

// controlPath makes <tmp>/udev and returns <tmp> and <tmp>/udev/control.
func controlPath(t *testing.T) (runDir, path string) {
	t.Helper()
	runDir = t.TempDir()
	if err := os.Mkdir(filepath.Join(runDir, "udev"), 0o755); err != nil {
		t.Fatal(err)
	}
	return runDir, filepath.Join(runDir, "udev", "control")
}

func listen(t *testing.T, network, path string) *net.UnixListener {
	t.Helper()
	l, err := net.ListenUnix(network, &net.UnixAddr{Name: path, Net: network})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestDetectSource(t *testing.T) {
	t.Run("no udev dir", func(t *testing.T) {
		if got := DetectSource(t.TempDir()); got != SourceKernel {
			t.Errorf("got %v, want kernel", got)
		}
	})
	t.Run("regular file", func(t *testing.T) {
		runDir, path := controlPath(t)
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if got := DetectSource(runDir); got != SourceKernel {
			t.Errorf("got %v, want kernel", got)
		}
	})
	t.Run("stale socket", func(t *testing.T) {
		// What a dead udevd leaves behind: the socket file, no listener.
		runDir, path := controlPath(t)
		l := listen(t, "unixpacket", path)
		l.SetUnlinkOnClose(false)
		_ = l.Close()
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("socket file gone: %v", err)
		}
		if got := DetectSource(runDir); got != SourceKernel {
			t.Errorf("got %v, want kernel", got)
		}
	})
	t.Run("live seqpacket", func(t *testing.T) {
		runDir, path := controlPath(t)
		listen(t, "unixpacket", path)
		if got := DetectSource(runDir); got != SourceUdev {
			t.Errorf("got %v, want udev", got)
		}
	})
	t.Run("live stream", func(t *testing.T) {
		runDir, path := controlPath(t)
		listen(t, "unix", path)
		if got := DetectSource(runDir); got != SourceUdev {
			t.Errorf("got %v, want udev", got)
		}
	})
	t.Run("busy listener", func(t *testing.T) {
		// udevd listens with a short backlog; a connect while it is full
		// fails with EAGAIN, yet udevd is alive.
		runDir, path := controlPath(t)
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Close(fd) })
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(fd, 0); err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("unixpacket", path) // fills the backlog
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if got := DetectSource(runDir); got != SourceUdev {
			t.Errorf("got %v, want udev", got)
		}
	})
}
