package main

import (
	"context"
	enc "encoding/binary"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// The forged uevent flood: the test process, as a process with
// CAP_NET_ADMIN in the host network namespace can, sends tens of thousands
// of add and remove messages to the daemon's netlink group and to its port.
// The daemon must trust senders as libudev does (the kernel on group 1,
// root on group 2, nobody by unicast), treat what it believes as a hint
// (the state it reads is unchanged, so the kubelet sees nothing new) and
// keep answering its probes.

// floodPerKind is how many messages each kind of forgery sends.
const floodPerKind = 10000

// forgery is one kind of forged message: where it goes and who it claims
// to come from.
type forgery struct {
	name string
	to   unix.SockaddrNetlink
	cred *unix.Ucred // nil: the kernel attaches the sender's own (root)
	// believed: the daemon takes these as hints (coalesced rescans); the
	// others it must drop unread.
	believed bool
}

// floodCounters are the daemon's /metrics counters the flood is judged by.
type floodCounters struct {
	uevents, rescans, lost float64
	// dropped is -1 while the daemon does not publish it.
	dropped float64
}

func TestForgedUeventFloodKernel(t *testing.T) {
	testForgedUeventFlood(t, "kernel")
}

func TestForgedUeventFloodUdev(t *testing.T) {
	testkernel.RequireRoot(t)
	testkernel.Udevd(t)
	testForgedUeventFlood(t, "udev")
}

func testForgedUeventFlood(t *testing.T, source string) {
	testkernel.RequireRoot(t) // only CAP_NET_ADMIN may send to a uevent socket
	// Other tests' zram devices would be real uevents here: not meanwhile.
	testkernel.LockZram(t)
	group := uint32(1)
	if source == "udev" {
		group = 2
	}

	dir := testutil.ShortTempDir(t)
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte("- devicematch: ^null$\n  nummaxdevices: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := plugintest.StartFakeKubelet(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	// info, not debug: the daemon logs every uevent, and every dropped
	// one, at debug.
	d := startDaemon(t, "--config", rules, "--plugin-dir", dir, "--uevent-source", source,
		"--resync", "1h", "--remove-after", "0", "--metrics-addr", "127.0.0.1:0", "--log-level", "info")
	addr := d.listenAddr(t, "health endpoints")
	d.waitLog(t, "uevent monitor listening")
	const res = "smarter-devices/null"
	waitFor(t, k, res, "2 healthy IDs", allHealth(2, pluginapi.Healthy))
	before := k.Devices(res)
	messages := k.Messages(res)
	port := daemonUeventPort(t, d.cmd.Process.Pid, group)

	pid := int32(os.Getpid())
	forgeries := []forgery{{"unicast to the daemon's port", unix.SockaddrNetlink{Pid: port}, nil, false}}
	if source == "kernel" {
		forgeries = append(forgeries, forgery{"kernel group from a process (root)", unix.SockaddrNetlink{Groups: 1}, nil, false})
	} else {
		forgeries = append(forgeries,
			forgery{"udev group from uid 1000", unix.SockaddrNetlink{Groups: 2}, &unix.Ucred{Pid: pid, Uid: 1000, Gid: 1000}, false},
			forgery{"udev group from root", unix.SockaddrNetlink{Groups: 2}, &unix.Ucred{Pid: pid}, true})
	}

	for _, f := range forgeries {
		c0 := readFloodCounters(t, addr)
		healthz := probeDuring(t, addr)
		sendFlood(t, source, f.to, f.cred, floodPerKind)
		// A real change event of /dev/null, queued behind the flood:
		// once the daemon has counted it and the flood (or counted a loss,
		// if the flood overflowed its buffer), it has read through.
		if err := os.WriteFile("/sys/class/mem/null/uevent", []byte("change"), 0); err != nil {
			t.Fatal(err)
		}
		var c1 floodCounters
		// Where dropped is published, every forged message must count there.
		testutil.Eventually(t, 20*time.Second, "the daemon counting the change event (and, where published, each forged message as dropped)", func() bool {
			c1 = readFloodCounters(t, addr)
			if c1.lost > c0.lost {
				return true
			}
			if f.believed {
				return c1.uevents > c0.uevents+floodPerKind
			}
			return c1.uevents > c0.uevents && (c0.dropped < 0 || c1.dropped >= c0.dropped+floodPerKind)
		})
		answered, failures := healthz()
		uevents, rescans, lost := c1.uevents-c0.uevents, c1.rescans-c0.rescans, c1.lost-c0.lost
		t.Logf("%s: %d sent; uevents +%.0f, rescans +%.0f, lost +%.0f, dropped %.0f -> %.0f; /healthz answered %d times",
			f.name, floodPerKind, uevents, rescans, lost, c0.dropped, c1.dropped, answered)

		if len(failures) > 0 || answered == 0 {
			t.Errorf("%s: /healthz answered %d times during the flood; failures: %v", f.name, answered, failures)
		}
		// The host's own uevents (other test binaries' zram devices, run
		// in parallel by go test ./..., a USB device) count here too: an
		// allowance far below any share of the flood, which would add
		// its 10,000 if believed.
		const noise = floodPerKind / 10
		if f.believed {
			// Believed, but each only wakes the event loop: one read
			// of /dev serves the burst.
			if rescans > floodPerKind/20 {
				t.Errorf("%s: %.0f rescans for %d forged events: not coalesced", f.name, rescans, floodPerKind)
			}
		} else {
			if uevents > noise {
				t.Errorf("%s: uevents_total grew by %.0f: forged messages were believed", f.name, uevents)
			}
			// A rescan only for a loss notice (a flood that overflowed
			// the receive buffer costs one read per overflow) or a real
			// event; one more may be the previous flood's last.
			if rescans > lost+uevents+1 {
				t.Errorf("%s: %.0f rescans for %.0f uevents and %.0f losses", f.name, rescans, uevents, lost)
			}
		}
		// The state read is the state it was: nothing new for the kubelet.
		if got := k.Devices(res); !sameDevices(got, before) {
			t.Errorf("%s: the kubelet's list changed from %v to %v", f.name, before, got)
		}
	}
	if n := k.Messages(res); n != messages {
		t.Errorf("%d ListAndWatch messages after the floods, %d before: an unchanged device list was resent", n, messages)
	}
	if n := k.Registrations(res); n != 1 {
		t.Errorf("%s registered %d times", res, n)
	}
	if got := k.Resources(); !slices.Equal(got, []string{res}) {
		t.Errorf("resources %v, want only %s: a forged add made one", got, res)
	}
	if code := d.stop(t); code != 0 {
		t.Errorf("exit status after SIGTERM = %d", code)
	}
}

// sendFlood sends n forged uevents to to, alternating a remove of /dev/null
// and an add of a zram device that does not exist, in the framing of
// source; cred, when set, is the SCM_CREDENTIALS claimed. A unicast send
// blocks while the daemon's buffer is full (back-pressure); SO_SNDTIMEO
// turns a daemon that stopped reading into an error.
func sendFlood(t *testing.T, source string, to unix.SockaddrNetlink, cred *unix.Ucred, n int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{Sec: 10}); err != nil {
		t.Fatal(err)
	}
	var oob []byte
	if cred != nil {
		oob = unix.UnixCredentials(cred)
	}
	msgs := [][]byte{
		forgedUevent(source, "remove", "/devices/virtual/mem/null", "mem", "null"),
		forgedUevent(source, "add", "/devices/virtual/block/zram999", "block", "zram999"),
	}
	to.Family = unix.AF_NETLINK
	for i := range n {
		if err := unix.Sendmsg(fd, msgs[i%2], oob, &to, 0); err != nil {
			t.Fatalf("forged message %d to port %d group %d: %v", i, to.Pid, to.Groups, err)
		}
	}
}

// forgedUevent is a well-formed uevent in the kernel's framing or udevd's
// (a libudev header, as in systemd's sd-device/device-monitor.c).
func forgedUevent(source, action, devpath, subsystem, devname string) []byte {
	props := []string{"ACTION=" + action, "DEVPATH=" + devpath, "SUBSYSTEM=" + subsystem, "DEVNAME=" + devname, "SEQNUM=1"}
	if source == "kernel" {
		raw := []byte(action + "@" + devpath + "\x00")
		for _, p := range props {
			raw = append(append(raw, p...), 0)
		}
		return raw
	}
	props[3] = "DEVNAME=/dev/" + devname
	var body []byte
	for _, p := range props {
		body = append(append(body, p...), 0)
	}
	const headerLen = 40
	h := make([]byte, headerLen)
	copy(h, "libudev\x00")
	enc.BigEndian.PutUint32(h[8:], 0xfeedcafe)
	enc.NativeEndian.PutUint32(h[12:], headerLen)
	enc.NativeEndian.PutUint32(h[16:], headerLen)
	enc.NativeEndian.PutUint32(h[20:], uint32(len(body)))
	return append(h, body...)
}

// daemonUeventPort returns the netlink port of the daemon's uevent socket
// bound to group, once it has one.
func daemonUeventPort(t *testing.T, pid int, group uint32) uint32 {
	t.Helper()
	var ports []uint32
	testutil.Eventually(t, 10*time.Second, "the daemon's uevent socket", func() bool {
		var err error
		if ports, err = testkernel.UeventPorts(pid, group); err != nil {
			t.Fatal(err)
		}
		return len(ports) > 0
	})
	return ports[0]
}

// readFloodCounters scrapes /metrics.
func readFloodCounters(t *testing.T, addr string) floodCounters {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string) float64 {
		for line := range strings.SplitSeq(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "smarter_device_manager_"+name+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("/metrics: %q: %v", line, err)
				}
				return f
			}
		}
		return -1
	}
	c := floodCounters{uevents: value("uevents_total"), rescans: value("rescans_total"), lost: value("uevents_lost_total"),
		dropped: value("uevents_dropped_total")}
	if c.uevents < 0 || c.rescans < 0 || c.lost < 0 {
		t.Fatalf("/metrics lacks a uevent or rescan counter:\n%s", body)
	}
	return c
}

// probeDuring asks /healthz over and over, each within 5s, until the
// returned function is called; that returns how many times it answered
// 200 and what went wrong otherwise.
func probeDuring(t *testing.T, addr string) func() (int, []string) {
	ctx, cancel := context.WithCancel(context.Background())
	client := &http.Client{Timeout: 5 * time.Second}
	var (
		wg       sync.WaitGroup
		answered int
		failures []string
	)
	wg.Go(func() {
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
			resp, err := client.Do(req)
			switch {
			case ctx.Err() != nil:
				return // cut off by the end of the flood, not a failure
			case err != nil:
				failures = append(failures, err.Error())
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				failures = append(failures, resp.Status)
				continue
			}
			answered++
		}
	})
	stop := func() (int, []string) {
		cancel()
		wg.Wait()
		return answered, failures
	}
	t.Cleanup(func() { stop() }) // a test that fails early still ends the prober
	return stop
}

// sameDevices compares device lists by ID and health.
func sameDevices(a, b []*pluginapi.Device) bool {
	return slices.EqualFunc(a, b, func(x, y *pluginapi.Device) bool { return x.ID == y.ID && x.Health == y.Health })
}
