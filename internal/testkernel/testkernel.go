// Package testkernel holds the helpers that tests (and the benchmark tool)
// touching the real kernel share: zram devices (real add/remove uevents)
// and a systemd-udevd that several test binaries, run in parallel by
// `go test ./...`, must not each start. Every helper cleans up what it created and skips the test with a
// message where it cannot run.
package testkernel

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

const (
	// ZramControl is the zram hot_add/hot_remove interface.
	ZramControl = "/sys/class/zram-control"
	// UdevdPath is where Debian's udev package installs the daemon.
	UdevdPath = "/lib/systemd/systemd-udevd"
	// UdevControl is udevd's control socket.
	UdevControl = "/run/udev/control"
	// udevdLock serialises the tests that need udevd across test binaries.
	udevdLock = "/run/smarter-device-manager-test-udevd.lock"
	// zramLock serialises the tests that create zram devices: zram hands
	// out the lowest free number, so a device one test removed could come
	// back as another test's, under the same name.
	zramLock  = "/run/smarter-device-manager-test-zram.lock"
	waitLimit = 20 * time.Second
)

// flock takes an exclusive lock on file, shared by every test binary, and
// returns the open file that holds it.
func flock(t testing.TB, file, what string) *os.File {
	t.Helper()
	lock, err := os.OpenFile(file, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("%s lock: %v", what, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		t.Fatalf("%s lock: %v", what, err)
	}
	return lock
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.SkipEnv(t, "skipping: needs root (real kernel devices and netlink)")
	}
}

// RequireZram skips the test unless it can create zram devices, and
// holds the zram lock for the rest of the test (see LockZram).
func RequireZram(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat(ZramControl + "/hot_add"); err != nil {
		testutil.SkipEnv(t, "skipping: %s missing (scripts/test-deps.sh loads the zram module): %v", ZramControl, err)
	}
	LockZram(t)
}

// zramHolders are the tests holding the zram lock: a test takes it once.
var zramHolders sync.Map

// LockZram holds, for the rest of the test, a lock that every test
// creating zram devices takes, in every test binary: go test runs packages
// in parallel, and a number one test freed could otherwise be reused by
// another while the first still asserts on it.
func LockZram(t testing.TB) {
	t.Helper()
	if _, held := zramHolders.LoadOrStore(t, true); held {
		return
	}
	lock := flock(t, zramLock, "zram")
	t.Cleanup(func() {
		lock.Close()
		zramHolders.Delete(t)
	})
}

// ZramAdd creates /dev/zramN with a real add uevent and returns N; the
// test's cleanup removes it if the test did not.
func ZramAdd(t testing.TB) int {
	t.Helper()
	LockZram(t)
	b, err := os.ReadFile(ZramControl + "/hot_add")
	if err != nil {
		t.Fatalf("zram hot_add: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("zram hot_add printed %q", b)
	}
	t.Cleanup(func() {
		if err := ZramRemove(n); err != nil {
			t.Errorf("cleanup: removing zram%d: %v", n, err)
		}
	})
	return n
}

// ZramRemove removes /dev/zramN (a real remove uevent); removing one that
// is already gone is not an error. Right after an add, udevd's rules
// (blkid) may hold the device open: EBUSY is retried for a while.
func ZramRemove(n int) error {
	deadline := time.Now().Add(waitLimit)
	for {
		if _, err := os.Stat(fmt.Sprintf("/sys/block/zram%d", n)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		err := os.WriteFile(ZramControl+"/hot_remove", []byte(strconv.Itoa(n)), 0)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("zram hot_remove %d: %w", n, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// UdevdAlive reports whether a udevd accepts connections on its control
// socket. A dead udevd leaves the socket file behind, refusing connections;
// a busy one may answer EAGAIN (its backlog is short) and is alive.
func UdevdAlive() bool {
	c, err := net.DialTimeout("unixpacket", UdevControl, time.Second)
	if err == nil {
		c.Close()
		return true
	}
	return errors.Is(err, syscall.EAGAIN)
}

// Udevd makes sure systemd-udevd runs for the rest of the test: one already
// running is used as it is; otherwise one is started as the test's child
// and stopped by its PID at cleanup, and /run/udev removed if it was not
// there before. A lock file keeps test binaries running in parallel from
// starting two (the second could not bind the control socket).
func Udevd(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	lock := flock(t, udevdLock, "udevd")
	// Cleanups run last-in first-out: udevd stops before the lock is freed.
	t.Cleanup(func() { lock.Close() })
	if UdevdAlive() {
		t.Log("using the systemd-udevd already running")
		return
	}
	if _, err := os.Stat(UdevdPath); err != nil {
		testutil.SkipEnv(t, "skipping: %s missing (scripts/test-deps.sh installs Debian's udev package): %v", UdevdPath, err)
	}
	stop, err := StartUdevd()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
}

// StartUdevd starts systemd-udevd as a child of this process and waits
// until its control socket accepts connections. stop ends it by its PID and
// removes /run/udev if it was not there before.
func StartUdevd() (stop func(), err error) {
	_, statErr := os.Stat("/run/udev")
	cmd := exec.Command(UdevdPath)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", UdevdPath, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() {
		if cmd.Process.Pid > 1 {
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-exited:
		case <-time.After(waitLimit):
			_ = cmd.Process.Kill()
			<-exited
		}
		if errors.Is(statErr, os.ErrNotExist) {
			_ = os.RemoveAll("/run/udev") // it was not there before us
		}
	}
	// Outside systemd udevd has no readiness signal: wait for its control
	// socket to accept connections.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitLimit)
	for !UdevdAlive() {
		select {
		case err := <-exited:
			exited <- err
			stop()
			return nil, fmt.Errorf("systemd-udevd exited: %v\n%s", err, out.String())
		case <-deadline:
			stop()
			return nil, fmt.Errorf("systemd-udevd not ready after %v", waitLimit)
		case <-tick.C:
		}
	}
	return stop, nil
}

// UdevadmControl runs `udevadm control ARGS...`, retrying within waitLimit
// while udevd cannot take the request: its control socket answers EAGAIN
// ("Failed to send reload request: Resource temporarily unavailable")
// while it is busy with a burst of events. A udevadm that cannot run at
// all, or a request still refused at the deadline, is an error.
func UdevadmControl(args ...string) error { return udevadmControl(waitLimit, args...) }

func udevadmControl(limit time.Duration, args ...string) error {
	deadline := time.Now().Add(limit)
	delay := 50 * time.Millisecond
	for {
		out, err := exec.Command("udevadm", append([]string{"control"}, args...)...).CombinedOutput()
		if err == nil {
			return nil
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) || time.Now().After(deadline) {
			return fmt.Errorf("udevadm control %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
}

// UeventPorts returns the netlink ports of process pid's
// NETLINK_KOBJECT_UEVENT sockets bound to the group mask groups:
// /proc/net/netlink lists every netlink socket with its port, groups and
// inode, and /proc/PID/fd says which are the process's own.
func UeventPorts(pid int, groups uint32) ([]uint32, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fdDir + "/" + fd.Name())
		if ino, ok := strings.CutPrefix(link, "socket:["); ok && err == nil {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	b, err := os.ReadFile("/proc/net/netlink")
	if err != nil {
		return nil, err
	}
	var ports []uint32
	// sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
	for _, line := range strings.Split(string(b), "\n")[1:] {
		col := strings.Fields(line)
		if len(col) < 10 || col[1] != strconv.Itoa(unix.NETLINK_KOBJECT_UEVENT) || !inodes[col[9]] {
			continue
		}
		if g, err := strconv.ParseUint(col[3], 16, 32); err != nil || uint32(g) != groups {
			continue
		}
		port, err := strconv.ParseUint(col[2], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("/proc/net/netlink: %q: %w", line, err)
		}
		ports = append(ports, uint32(port))
	}
	return ports, nil
}
