package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// A device-plugin socket is 0600 in a directory only root writes: whoever
// floods one is root already. That must still not stop hotplug reaching
// the kubelet, unregister a resource, or cost the daemon memory,
// descriptors or goroutines it does not give back. The test floods a
// resource's socket against the real daemon and the real kubelet device
// manager: hundreds of connections a round (the socket serves 8, closes
// the rest at once), garbage instead of HTTP/2, headers that do not
// decode, requests over the 1 MiB bound, ListAndWatch streams that are
// never read and others opened and ended; the zram resource's socket is
// flooded the same way while its device is removed and added again.

// sockFloodHWMBound is the most the flood may raise the peak memory
// (VmHWM) of a daemon built as a release is (no race detector). Measured:
// +4.4 MiB after 20 rounds, +5.0 MiB after 60: a plateau, the heap the GC
// lets grow over a live heap of a few MiB with the flood's garbage; what
// the flood can make the daemon hold at once is bounded by the sockets'
// caps (8 connections, 4 calls each, 64 KiB windows, 1 MiB requests).
const sockFloodHWMBound = 16 << 20

// floodRounds is how many rounds each flood runs (about 100 ms each).
const floodRounds = 20

func TestAttackPluginSocketFlood(t *testing.T) {
	requireSuite(t)
	requireZram(t)
	n := newNode(t, "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 2\n- devicematch: ^null$\n  nummaxdevices: 3\n- devicematch: ^zero$\n  nummaxdevices: 2\n")
	// As make build builds it: the race detector's shadow memory grows
	// with every goroutine and object (no plateau) and would swamp the
	// bound.
	n.daemonBin = releaseDaemon(t)
	n.startKubelet()
	n.startDaemon()
	want := map[string]counts{resNull: {3, 3}, resZero: {2, 2}}
	n.waitCapacity("null and zero registered", want)
	z := zramAdd(t)
	res := fmt.Sprintf("smarter-devices/zram%d", z)
	want[res] = counts{2, 2}
	n.waitCapacity("zram registered", want)
	resources := []string{resNull, resZero, res}
	before := n.waitMetrics("every registration counted", func(m map[string]float64) bool {
		for _, r := range resources {
			if m[perResource("resource_registered", r)] != 1 {
				return false
			}
		}
		return true
	})
	pid := n.daemon.cmd.Process.Pid
	idleFDs, idleG, hwm0 := procFDs(t, pid), daemonGoroutines(t, n.metricsAddr()), procStatusKB(t, pid, "VmHWM")
	began := time.Now()

	// null's socket and the zram resource's, flooded from here on.
	floods := []*sockFlood{
		startSockFlood(t, filepath.Join(n.dir, "smarter-null.sock")),
		startSockFlood(t, filepath.Join(n.dir, fmt.Sprintf("smarter-zram%d.sock", z))),
	}
	rounds := func(k int) {
		t.Helper()
		n.poll(fmt.Sprintf("%d rounds of each flood", k), func() bool {
			for _, f := range floods {
				if f.roundsDone() < k {
					return false
				}
			}
			return true
		}, func() string { return fmt.Sprintf("rounds %d and %d", floods[0].roundsDone(), floods[1].roundsDone()) })
	}
	rounds(5)
	if err := zramRemove(z); err != nil {
		t.Fatal(err)
	}
	want[res] = counts{2, 0} // unhealthy until --remove-after
	n.waitCapacity("hot_remove during the flood", want)
	rounds(10)
	// zram hands out the lowest free number: the same node comes back
	// unless another process took it meanwhile.
	z2 := zramAdd(t)
	sameLevels := z2 == z
	if !sameLevels {
		t.Logf("zram%d came back as zram%d (another process holds the number): a new resource; idle levels are not compared", z, z2)
		want[fmt.Sprintf("smarter-devices/zram%d", z2)] = counts{2, 2}
	} else {
		want[res] = counts{2, 2}
	}
	n.waitCapacity("hot_add again during the flood", want)
	rounds(floodRounds)
	// Every resource is still registered, and none was registered again:
	// the flood cost no registration and no attempt.
	after := n.metrics()
	for _, r := range resources {
		for _, name := range []string{"registrations_total", "registration_attempts_total", "resource_registered"} {
			if got, was := after[perResource(name, r)], before[perResource(name, r)]; got != was {
				t.Errorf("%s: %s = %v during the flood; want %v as before it", r, name, got, was)
			}
		}
	}
	for _, f := range floods {
		f.stop()
		t.Logf("%s: %d rounds: %d connections served, %d closed at once; %d garbage and %d broken connections closed; %d oversized requests refused; %d ListAndWatch streams never read, %d opened and ended",
			filepath.Base(f.path), f.rounds, f.served, f.refused, f.garbageClosed, f.brokenClosed, f.oversized, f.stalled, f.churned)
		if f.refused == 0 || f.garbageClosed == 0 || f.brokenClosed == 0 || f.oversized == 0 || f.stalled == 0 || f.churned == 0 {
			t.Errorf("%s: the flood did not do everything it should (see the line above)", filepath.Base(f.path))
		}
		for _, err := range f.errs {
			t.Errorf("%s: %v", filepath.Base(f.path), err)
		}
	}
	t.Logf("flood and hotplug took %v", time.Since(began).Round(time.Millisecond))
	// The never-read streams ended with the flood: still no sign that the
	// kubelet went. A re-registration would follow within the daemon's
	// first backoff (100 ms); none for a second is telling.
	quiet := time.Now().Add(time.Second)
	n.poll("a second after the flood", func() bool {
		m := n.metrics()
		for _, r := range resources {
			if name := perResource("registration_attempts_total", r); m[name] != before[name] {
				t.Fatalf("%s: %s = %v after the flood ended; want %v as before it", r, "registration_attempts_total", m[name], before[name])
			}
		}
		return time.Now().After(quiet)
	}, func() string { return "" })
	if got := n.capacity(); !capacityHas(got, want) {
		t.Errorf("capacity after the flood %v; want %v", got, want)
	}

	// What the flood cost comes back.
	var fds, g int
	if sameLevels {
		n.poll("descriptors and goroutines back to idle", func() bool {
			fds, g = procFDs(t, pid), daemonGoroutines(t, n.metricsAddr())
			return fds <= idleFDs+2 && g <= idleG+4
		}, func() string {
			return fmt.Sprintf("%d descriptors (idle %d), %d goroutines (idle %d)", fds, idleFDs, g, idleG)
		})
	}
	hwm := procStatusKB(t, pid, "VmHWM")
	t.Logf("idle: %d descriptors, %d goroutines; after: %d, %d; VmHWM %d -> %d KiB (+%.1f MiB)",
		idleFDs, idleG, fds, g, hwm0>>10, hwm>>10, float64(hwm-hwm0)/(1<<20))
	fmt.Printf("ATTACK %-28s %6.1f s  2 sockets x %d connections, garbage, 2 MiB requests, unread streams; hotplug followed  VmHWM %+6.2f MiB (%.1f MiB)\n",
		"plugin socket flood", time.Since(began).Seconds(), floods[0].served+floods[0].refused, float64(hwm-hwm0)/(1<<20), float64(hwm)/(1<<20))
	if hwm-hwm0 >= sockFloodHWMBound {
		t.Errorf("VmHWM grew by %.1f MiB during the flood; want < %d MiB", float64(hwm-hwm0)/(1<<20), sockFloodHWMBound>>20)
	}
}

func capacityHas(got, want map[string]counts) bool {
	for name, w := range want {
		if got[name] != w {
			return false
		}
	}
	return true
}

// sockFlood floods one plugin socket from its own goroutine until stop.
type sockFlood struct {
	path     string
	cancel   context.CancelFunc
	exited   chan struct{} // closed when the flood's goroutine has returned
	roundsMu sync.Mutex
	finished int // rounds done, while the flood runs

	// Read after stop.
	rounds, served, refused, garbageClosed, brokenClosed, oversized, stalled, churned int
	errs                                                                              []error
}

// startSockFlood opens what a flooder keeps open (a client with
// ListAndWatch streams it never reads, a client that sends oversized
// requests), then, every 100 ms, 100 connections that complete the
// HTTP/2 handshake and make no call (the served ones are kept), 10 that
// send garbage, 10 whose headers do not decode, and one request of 2 MiB.
func startSockFlood(t *testing.T, path string) *sockFlood {
	t.Helper()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the socket to flood: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &sockFlood{path: path, cancel: cancel, exited: make(chan struct{})}
	t.Cleanup(f.stop)

	dial := func(opts ...grpc.DialOption) *grpc.ClientConn {
		conn, err := grpc.NewClient("unix:"+path, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	// 64 KiB windows: the daemon's writes stop there.
	stalledConn := dial(grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	for range 4 {
		stream, err := pluginapi.NewDevicePluginClient(stalledConn).ListAndWatch(ctx, &pluginapi.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil { // open; never read again
			t.Fatal(err)
		}
		f.stalled++
	}
	bigConn := dial()
	big := &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{strings.Repeat("x", 2<<20)}}}}

	go func() {
		defer close(f.exited)
		defer stalledConn.Close()
		defer bigConn.Close()
		var held []net.Conn // idle connections kept across rounds
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			// A burst held open together: the free slots are served, the
			// rest closed at once. Two are kept, idle, for the next rounds.
			var burst []net.Conn
			for range 100 {
				c, err := net.Dial("unix", path)
				if err != nil {
					f.errs = append(f.errs, err)
					return
				}
				_, _ = c.Write(append([]byte(h2ClientPreface), h2Frame(0x4, 0, 0, nil)...)) // SETTINGS
				if first, _ := sockRead(c, 5*time.Second); first > 0 {
					f.served++
					burst = append(burst, c)
				} else {
					f.refused++
					c.Close()
				}
			}
			for _, c := range burst {
				if len(held) < 2 {
					held = append(held, c)
				} else {
					c.Close()
				}
			}
			for i := range 20 {
				c, err := net.Dial("unix", path)
				if err != nil {
					f.errs = append(f.errs, err)
					return
				}
				if i%2 == 0 {
					_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe"))
				} else {
					_, _ = c.Write(append(append([]byte(h2ClientPreface), h2Frame(0x4, 0, 0, nil)...),
						h2Frame(0x1, 0x4|0x1, 1, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})...)) // HEADERS that do not decode
				}
				// Closed by the daemon within a second, or it is an error.
				if err := sockClosed(c, time.Second); err == nil {
					if i%2 == 0 {
						f.garbageClosed++
					} else {
						f.brokenClosed++
					}
				} else {
					f.errs = append(f.errs, fmt.Errorf("a connection sending garbage or broken frames: %w", err))
				}
				c.Close()
			}
			// A ListAndWatch stream of its own, opened and ended: no sign
			// that the kubelet went.
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			if stream, err := pluginapi.NewDevicePluginClient(bigConn).ListAndWatch(cctx, &pluginapi.Empty{}); err == nil {
				if _, err := stream.Recv(); err == nil {
					f.churned++
				}
			}
			ccancel()
			cctx, ccancel = context.WithTimeout(ctx, 10*time.Second)
			_, err := pluginapi.NewDevicePluginClient(bigConn).Allocate(cctx, big)
			ccancel()
			switch {
			case status.Code(err) == codes.ResourceExhausted:
				f.oversized++
			case ctx.Err() != nil:
			default:
				f.errs = append(f.errs, fmt.Errorf("a 2 MiB Allocate: %v; want ResourceExhausted", err))
			}
			f.rounds++
			f.roundsMu.Lock()
			f.finished = f.rounds
			f.roundsMu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return f
}

// roundsDone returns how many rounds the flood has done.
func (f *sockFlood) roundsDone() int {
	f.roundsMu.Lock()
	defer f.roundsMu.Unlock()
	return f.finished
}

// stop ends the flood and closes everything it opened.
func (f *sockFlood) stop() {
	f.cancel()
	<-f.exited
}

// HTTP/2 as a raw client writes it (RFC 9113).
const h2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h2Frame is one HTTP/2 frame: its 9-byte header, then payload.
func h2Frame(typ, flags byte, stream uint32, payload []byte) []byte {
	n := len(payload)
	b := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[5:], stream&0x7fffffff)
	return append(b, payload...)
}

// sockRead reads what c has within limit: how many bytes, and the error
// that ended it (io.EOF once the daemon closed c).
func sockRead(c net.Conn, limit time.Duration) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(limit))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 4096)
	total := 0
	for {
		k, err := c.Read(buf)
		total += k
		if err != nil {
			return total, err
		}
		if total > 0 && k < len(buf) {
			return total, nil // what the daemon wrote first (its SETTINGS)
		}
	}
}

// sockClosed reads c until the daemon closes it, and fails after limit.
func sockClosed(c net.Conn, limit time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, c)
	if err == nil || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return fmt.Errorf("still open after %v: %w", limit, err)
}

// procFDs counts the descriptors of process pid.
func procFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// procStatusKB reads a "kB" field of /proc/PID/status, in bytes.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// daemonGoroutines is the daemon's own go_goroutines.
func daemonGoroutines(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(f)
		}
	}
	t.Fatal("no go_goroutines in the daemon's /metrics")
	return 0
}
