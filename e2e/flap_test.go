package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// checkpointWrites counts the real device manager's checkpoint writes in
// dir as they happen: the checkpoint manager writes a temporary file and
// renames it over kubelet_internal_checkpoint (IN_MOVED_TO), or writes the
// file in place (IN_CLOSE_WRITE). The watch stops with the test.
func checkpointWrites(t *testing.T, dir string) *atomic.Int64 {
	t.Helper()
	// Non-blocking, through Go's poller: Close then ends the Read.
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		t.Fatalf("inotify watch %s: %v", dir, err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			k, err := f.Read(buf)
			if err != nil {
				return // closed by the cleanup
			}
			for off := 0; off+unix.SizeofInotifyEvent <= k; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
				if name == checkpointName {
					n.Add(1)
				}
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}()
	t.Cleanup(func() {
		f.Close()
		<-done
	})
	return &n
}

// A real zram device removed and added back 40 times (real uevents),
// through the real kubelet device manager: with flap damping the manager
// gets a bounded number of updates (its checkpoint, rewritten after each,
// counts them), the device is held unhealthy (the daemon's /readyz and
// metrics say so) while a second device added mid-flap is allocatable at
// once, and quiet again the device is healthy. Damped with a 1 s half-life
// and a 5 s hold at most, so the test waits seconds, not minutes.
func TestFlapRealZram(t *testing.T) {
	requireSuite(t)
	requireZram(t)
	n := newNode(t, "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 1\n- devicematch: ^null$\n  nummaxdevices: 1\n")
	n.daemonArgs = append(n.daemonArgs, "--flap-half-life", "1s", "--flap-max-hold", "5s")
	n.startKubelet()
	n.startDaemon()
	n.waitCapacity("null registered", map[string]counts{resNull: {1, 1}})
	z := zramAdd(t)
	res := fmt.Sprintf("smarter-devices/zram%d", z)
	n.waitCapacity("the device plugged", map[string]counts{res: {1, 1}})

	writes := checkpointWrites(t, n.dir)
	const flaps = 40
	var second string
	began := time.Now()
	for i := range flaps {
		if err := zramRemove(z); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the daemon sees it gone
		if z2 := zramAdd(t); z2 != z {
			t.Fatalf("zram%d came back as zram%d: the test holds zram's lock, so the number should be free", z, z2)
		}
		time.Sleep(20 * time.Millisecond)
		if i == flaps/2 {
			z3 := zramAdd(t)
			second = fmt.Sprintf("smarter-devices/zram%d", z3)
			n.waitCapacity("a second device, plugged mid-flap, allocatable while the first is held", map[string]counts{second: {1, 1}, res: {1, 0}})
		}
	}
	flapFor := time.Since(began)
	during := writes.Load()
	// Without damping every change is an update: 80 and more. With it:
	// 3 changes passed, the 4th shown held, and the second device's
	// arrival (its registration and its update).
	if during > 8 {
		t.Errorf("%d changes in %v: %d checkpoint writes by the kubelet's device manager, want at most 8", 2*flaps, flapFor.Round(time.Millisecond), during)
	}
	m := n.metrics()
	if held, eps := n.sample(m, perResource("devices_flapping", res)), n.sample(m, perResource("flaps_total", res)); held != 1 || eps < 1 {
		t.Errorf("metrics while it flaps: devices_flapping %v, flaps_total %v; want 1 and at least 1", held, eps)
	}
	resp, err := http.Get("http://" + n.metricsAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), res+": 1 devices held for flapping") {
		t.Errorf("/readyz while it flaps: %d %q; want it to name %s", resp.StatusCode, body, res)
	}
	n.waitCapacity("healthy once quiet", map[string]counts{res: {1, 1}, second: {1, 1}})
	t.Logf("FLAP real zram: %d changes in %v, %d checkpoint writes during the flap, %d until released", 2*flaps, flapFor.Round(time.Millisecond), during, writes.Load())
}
