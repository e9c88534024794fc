package hotplug

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smarter-project/smarter-device-manager/internal/testkernel"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// waitTimeout bounds every wait for an event; it is a failure deadline,
// not a timing assertion.
const waitTimeout = 10 * time.Second

// running is a Monitor.Run in a goroutine whose events arrive on a channel.
type running struct {
	events chan Event
	done   chan error
	cancel context.CancelFunc
}

// startMonitor runs m until the test ends. notify blocks until the test
// receives (buffer 0) or the buffer has room, so a test can stop the
// monitor from reading by not receiving.
func startMonitor(t *testing.T, m *Monitor, buffer int) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{events: make(chan Event, buffer), done: make(chan error, 1), cancel: cancel}
	go func() {
		r.done <- m.Run(ctx, func(e Event) {
			select {
			case r.events <- e:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("Run did not return after cancel")
		}
	})
	return r
}

// waitFor returns the first event matching ok, failing after waitTimeout.
func (r *running) waitFor(t *testing.T, what string, ok func(Event) bool) Event {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		select {
		case e := <-r.events:
			if ok(e) {
				return e
			}
		case err := <-r.done:
			t.Fatalf("Run returned %v while waiting for %s", err, what)
		case <-timer.C:
			t.Fatalf("no %s within %v", what, waitTimeout)
		}
	}
}

func isLost(e Event) bool { return e.Lost }

// isConnected is the notice of a bound socket, which is a Lost one too:
// nothing from before it was seen.
func isConnected(e Event) bool { return e.Connected && e.Lost }

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.SkipEnv(t, "needs root: binds the uevent netlink socket and creates devices")
	}
}

const zramControl = "/sys/class/zram-control"

// zramAdd creates a zram device through hot_add and removes it when the test
// ends unless the returned remove function already did.
func zramAdd(t *testing.T) (name string, remove func()) {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat(filepath.Join(zramControl, "hot_add")); err != nil {
		testutil.SkipEnv(t, "no %s (modprobe zram): %v", zramControl, err)
	}
	testkernel.LockZram(t) // no other test binary's zram changes meanwhile
	b, err := os.ReadFile(filepath.Join(zramControl, "hot_add"))
	if err != nil {
		t.Fatalf("zram hot_add: %v", err)
	}
	id := strings.TrimSpace(string(b))
	var removed atomic.Bool
	remove = func() {
		if removed.Swap(true) {
			return
		}
		n, _ := strconv.Atoi(id)
		if err := testkernel.ZramRemove(n); err != nil { // retries EBUSY (udevd's blkid)
			t.Error(err)
		}
	}
	t.Cleanup(remove)
	return "zram" + id, remove
}

// triggerChange makes the kernel re-send a change event for /dev/null.
func triggerChange(t *testing.T) {
	t.Helper()
	if err := os.WriteFile("/sys/class/mem/null/uevent", []byte("change"), 0); err != nil {
		t.Fatalf("trigger change: %v", err)
	}
}

func TestMonitorKernel(t *testing.T) {
	requireRoot(t)
	// Before the monitor starts: events of other test binaries' zram
	// devices must not be queued for this one.
	testkernel.LockZram(t)
	m := NewMonitor(MonitorOptions{Source: SourceKernel, Logger: testLogger(t)})
	r := startMonitor(t, m, 64)
	// The first event is always Connected: the socket is bound from here on.
	if e := r.waitFor(t, "connect event", func(Event) bool { return true }); !isConnected(e) || e.Source != SourceKernel {
		t.Fatalf("first event = %+v, want Connected (and Lost) from kernel", e)
	}
	name, remove := zramAdd(t)
	add := r.waitFor(t, "add "+name, func(e Event) bool { return e.DevName == name })
	want := Event{Action: "add", DevPath: "/devices/virtual/block/" + name, Subsystem: "block", DevName: name, Source: SourceKernel,
		Seqnum: add.Seqnum, Env: add.Env}
	if d := diffEvent(want, add); d != "" || add.Seqnum == "" {
		t.Errorf("add event mismatch (-want +got):\n%s", d)
	}
	if !add.Relevant() {
		t.Error("add event not Relevant")
	}
	remove()
	rm := r.waitFor(t, "remove "+name, func(e Event) bool { return e.DevName == name })
	if rm.Action != "remove" {
		t.Errorf("after hot_remove got %+v, want a remove event", rm)
	}
}

func TestMonitorENOBUFS(t *testing.T) {
	requireRoot(t)
	// RcvBuf 1 becomes the kernel minimum, a few messages' worth.
	m := NewMonitor(MonitorOptions{Source: SourceKernel, RcvBuf: 1, Logger: testLogger(t)})
	var dials atomic.Int32
	connect := m.dial
	m.dial = func(s Source) (*os.File, error) {
		dials.Add(1)
		return connect(s)
	}
	r := startMonitor(t, m, 0)
	r.waitFor(t, "connect event", isConnected)
	// Nobody receives now, so Run blocks in notify after the first event
	// and the burst overflows the socket buffer.
	for range 200 {
		triggerChange(t)
	}
	e := r.waitFor(t, "Lost event after a burst", isLost)
	if e.Source != SourceKernel || e.Action != "" || e.Connected {
		t.Errorf("Lost event = %+v; want an overflow notice, not a connect", e)
	}
	// Reading goes on after ENOBUFS.
	triggerChange(t)
	r.waitFor(t, "event after overflow", func(e Event) bool { return e.DevName == "null" })
	if n := dials.Load(); n != 1 {
		t.Errorf("connected %d times; ENOBUFS must not reconnect", n)
	}
}

// TestMonitorCancel needs no root: anyone may listen to uevents. As a user
// it also covers the SO_RCVBUF fallback.
func TestMonitorCancel(t *testing.T) {
	m := NewMonitor(MonitorOptions{Source: SourceKernel, Logger: testLogger(t)})
	r := startMonitor(t, m, 64)
	r.waitFor(t, "connect event", isConnected)
	r.cancel() // Run is in (or about to be in) a read with nothing to read
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		r.done <- err // for the cleanup
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after cancel")
	}
}

// sendUevent sends raw to a uevent multicast group from a userspace socket,
// as a spoofer (or udevd) would. Sending to a group needs CAP_NET_ADMIN.
func sendUevent(t *testing.T, group Source, raw []byte) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, raw, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: uint32(group)}); err != nil {
		t.Fatalf("send to group %d: %v", group, err)
	}
}

func kernelMsg(action, devpath, devname string) []byte {
	return fmt.Appendf(nil, "%s@%s\x00ACTION=%s\x00DEVPATH=%s\x00SUBSYSTEM=misc\x00DEVNAME=%s\x00", action, devpath, action, devpath, devname)
}

func udevMsg(props ...string) []byte {
	var body []byte
	for _, p := range props {
		body = append(append(body, p...), 0)
	}
	h := make([]byte, libudevHeaderLen)
	copy(h, libudevPrefix)
	binary.BigEndian.PutUint32(h[8:], libudevMagic)
	binary.NativeEndian.PutUint32(h[12:], libudevHeaderLen)
	binary.NativeEndian.PutUint32(h[16:], libudevHeaderLen)
	binary.NativeEndian.PutUint32(h[20:], uint32(len(body)))
	return append(h, body...)
}

func TestMonitorDropsSpoofedKernelEvents(t *testing.T) {
	requireRoot(t)
	m := NewMonitor(MonitorOptions{Source: SourceKernel, Logger: testLogger(t)})
	r := startMonitor(t, m, 64)
	r.waitFor(t, "connect event", isConnected)
	sendUevent(t, SourceKernel, kernelMsg("add", "/devices/virtual/misc/hotplug-spoof", "hotplug-spoof"))
	// The spoofed message is queued first; the real one must come alone.
	triggerChange(t)
	r.waitFor(t, "real change event", func(e Event) bool {
		if e.DevName == "hotplug-spoof" {
			t.Fatalf("spoofed event delivered: %+v", e)
		}
		return e.DevName == "null"
	})
}

func TestMonitorUdevGroupFraming(t *testing.T) {
	requireRoot(t)
	m := NewMonitor(MonitorOptions{Source: SourceUdev, Logger: testLogger(t)})
	r := startMonitor(t, m, 64)
	r.waitFor(t, "connect event", isConnected)
	sendUevent(t, SourceUdev, []byte("garbage\x00"))
	sendUevent(t, SourceUdev, append(udevMsg("ACTION=add", "DEVPATH=/devices/virtual/misc/x", "SUBSYSTEM=misc", "DEVNAME=/dev/x"),
		bytes.Repeat([]byte{'a'}, MaxMessageSize)...)) // too long: truncated
	sendUevent(t, SourceUdev, udevMsg("ACTION=add", "DEVPATH=/devices/virtual/misc/hotplug-test", "SUBSYSTEM=misc",
		"DEVNAME=/dev/hotplug/test", "X=a=b"))
	// The garbage is dropped; the truncated message is a Lost event. (The
	// host's own udev events, other test binaries' among them, come too:
	// they are not this test's.)
	ours := func(e Event) bool {
		return e.Lost || e.Connected || strings.HasPrefix(e.DevPath, "/devices/virtual/misc/")
	}
	if e := r.waitFor(t, "event", ours); !e.Lost || e.Connected {
		t.Fatalf("after garbage and a truncated message got %+v, want Lost (not Connected)", e)
	}
	e := r.waitFor(t, "udev event", ours)
	want := Event{Action: "add", DevPath: "/devices/virtual/misc/hotplug-test", Subsystem: "misc", DevName: "hotplug/test",
		Source: SourceUdev, Env: map[string]string{
			"ACTION": "add", "DEVPATH": "/devices/virtual/misc/hotplug-test", "SUBSYSTEM": "misc",
			"DEVNAME": "/dev/hotplug/test", "X": "a=b",
		}}
	if d := diffEvent(want, e); d != "" {
		t.Errorf("udev event mismatch (-want +got):\n%s", d)
	}
}

// TestMonitorReconnect injects a socket error (a pipe is not a socket) and a
// failed connect, and checks that Run reports Lost and reconnects to a real
// socket that reads (as root: only root can make a uevent to read).
func TestMonitorReconnect(t *testing.T) {
	m := NewMonitor(MonitorOptions{Source: SourceKernel, Logger: testLogger(t), MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	var dials atomic.Int32
	connect := m.dial
	m.dial = func(src Source) (*os.File, error) {
		switch dials.Add(1) {
		case 1:
			pr, pw, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { _ = pw.Close() })
			return pr, nil
		case 2:
			return nil, errors.New("injected connect failure")
		}
		return connect(src)
	}
	r := startMonitor(t, m, 64)
	// Every notice is Lost; only the two connects are Connected.
	for _, want := range []struct {
		what      string
		connected bool
	}{{"connect event", true}, {"socket error event", false}, {"reconnect event", true}} {
		if e := r.waitFor(t, want.what, func(Event) bool { return true }); !e.Lost || e.Connected != want.connected {
			t.Fatalf("want %s (Lost, Connected %v), got %+v", want.what, want.connected, e)
		}
	}
	if os.Geteuid() == 0 {
		triggerChange(t)
		r.waitFor(t, "event after reconnect", func(e Event) bool { return e.DevName == "null" })
	}
	if n := dials.Load(); n != 3 {
		t.Errorf("dialled %d times, want 3", n)
	}
}

func TestMonitorCancelDuringBackoff(t *testing.T) {
	m := NewMonitor(MonitorOptions{Source: SourceKernel, Logger: testLogger(t), MinBackoff: time.Hour})
	dialled := make(chan struct{}, 1)
	m.dial = func(Source) (*os.File, error) {
		dialled <- struct{}{}
		return nil, errors.New("injected connect failure")
	}
	r := startMonitor(t, m, 64)
	select {
	case <-dialled:
	case <-time.After(waitTimeout):
		t.Fatal("never dialled")
	}
	r.cancel() // the cleanup checks that Run returns nil
}

func TestMonitorInvalidArguments(t *testing.T) {
	if err := NewMonitor(MonitorOptions{}).Run(context.Background(), nil); err == nil {
		t.Error("nil notify accepted")
	}
	if err := NewMonitor(MonitorOptions{Source: 7}).Run(context.Background(), func(Event) {}); err == nil {
		t.Error("invalid source accepted")
	}
}

// startUdevd makes sure systemd-udevd runs for the test (see testkernel:
// started as the test's child unless one is alive, and stopped by its PID).
func startUdevd(t *testing.T) {
	t.Helper()
	testkernel.Udevd(t)
	if DetectSource("/run") != SourceUdev {
		t.Fatal("udevd is alive but DetectSource does not choose udev")
	}
}

func TestMonitorUdevd(t *testing.T) {
	requireRoot(t)
	// Before the monitor starts: events of other test binaries' zram
	// devices must not be queued for this one.
	testkernel.LockZram(t)
	if _, err := os.Stat(filepath.Join(zramControl, "hot_add")); err != nil {
		testutil.SkipEnv(t, "no %s: %v", zramControl, err)
	}
	startUdevd(t)
	m := NewMonitor(MonitorOptions{Source: SourceAuto, Logger: testLogger(t)})
	r := startMonitor(t, m, 64)
	if e := r.waitFor(t, "connect event", isConnected); e.Source != SourceUdev {
		t.Fatalf("auto chose %v with udevd alive, want udev", e.Source)
	}
	name, remove := zramAdd(t)
	add := r.waitFor(t, "udev add "+name, func(e Event) bool { return e.DevName == name })
	if add.Action != "add" || add.Source != SourceUdev || add.Env["DEVNAME"] != "/dev/"+name {
		t.Errorf("udev add = %+v", add)
	}
	remove()
	if rm := r.waitFor(t, "udev remove "+name, func(e Event) bool { return e.DevName == name }); rm.Action != "remove" {
		t.Errorf("udev remove = %+v", rm)
	}
}

// As root the monitor's receive buffer is what it asked for even above
// net.core.rmem_max (SO_RCVBUFFORCE): a uevent storm needs it, and
// SO_RCVBUF alone would be capped at twice rmem_max. (make mutate: falling
// back to SO_RCVBUF after FORCE had worked left every test green.)
func TestMonitorReceiveBufferAboveRmemMax(t *testing.T) {
	requireRoot(t)
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		testutil.SkipEnv(t, "no /proc/sys/net/core/rmem_max: %v", err)
	}
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	want := 4 * rmemMax
	m := NewMonitor(MonitorOptions{Source: SourceKernel, RcvBuf: want, Logger: testLogger(t)})
	got := make(chan int, 1)
	connect := m.dial
	m.dial = func(s Source) (*os.File, error) {
		f, err := connect(s)
		if err != nil {
			return f, err
		}
		// Not f.Fd(), which would make the socket blocking.
		n := -1
		if rc, cerr := f.SyscallConn(); cerr == nil {
			_ = rc.Control(func(fd uintptr) {
				if v, gerr := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF); gerr == nil {
					n = v
				}
			})
		}
		select {
		case got <- n:
		default:
		}
		return f, nil
	}
	r := startMonitor(t, m, 0)
	r.waitFor(t, "connect event", isConnected)
	// The kernel reports twice what was set (its bookkeeping overhead).
	if n := <-got; n < want {
		t.Errorf("receive buffer %d bytes, want at least the %d asked for (rmem_max %d)", n, want, rmemMax)
	}
}
