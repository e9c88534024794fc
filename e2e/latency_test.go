package e2e

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestKubeletHotplugLatency measures, for the benchmark report (make bench),
// how long the real kubelet device manager takes to see a hotplug: from the
// kernel's first uevent of the change, stamped on receipt by a netlink
// listener of the test's own, to GetCapacity showing the resource
// allocatable (add) or not (remove). It asserts nothing about time; it runs
// only when SDM_BENCH_CYCLES is set and prints one LATENCY line per series.
func TestKubeletHotplugLatency(t *testing.T) {
	cycles, _ := strconv.Atoi(os.Getenv("SDM_BENCH_CYCLES"))
	if cycles <= 0 {
		t.Skip("skipping: a benchmark; set SDM_BENCH_CYCLES (make bench does)")
	}
	requireSuite(t)
	requireZram(t)
	n := newNode(t, "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 1\n- devicematch: ^null$\n  nummaxdevices: 1\n")
	// Damping off: the series cycle one device hundreds of times a minute,
	// which flap damping holds by design; a clean change takes the same path
	// either way (TestFlapBench times clean plugs with damping on).
	n.daemonArgs = []string{"--log-level", "warn", "--remove-after", "0", "--flap-half-life", "0"}
	n.startKubelet()
	n.startDaemon()
	n.waitCapacity("null registered", map[string]counts{resNull: {1, 1}})

	l := listenUevents(t)
	var add, remove []time.Duration
	for i := range cycles {
		next := nextZram(t)
		res := "smarter-devices/zram" + strconv.Itoa(next)
		l.drain()
		seen := n.pollAllocatable(res, 1)
		z := zramAdd(t)
		if z != next {
			t.Fatalf("zram hot_add gave zram%d, expected zram%d", z, next)
		}
		t0 := l.first(t, "add", "zram"+strconv.Itoa(z))
		t1 := <-seen
		l.drain()
		seen = n.pollAllocatable(res, 0)
		if err := zramRemove(z); err != nil {
			t.Fatal(err)
		}
		t2 := l.first(t, "remove", "zram"+strconv.Itoa(z))
		t3 := <-seen
		if i > 0 { // the first add also registers the resource
			add = append(add, t1.Sub(t0))
		}
		remove = append(remove, t3.Sub(t2))
	}
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		pct := func(p float64) float64 {
			i := min(max(int(p*float64(len(d))+0.5)-1, 0), len(d)-1)
			return float64(d[i]) / float64(time.Millisecond)
		}
		fmt.Printf("LATENCY series=%q n=%d p50=%.2f p90=%.2f p99=%.2f max=%.2f\n", name, len(d), pct(0.5), pct(0.9), pct(0.99), pct(1))
	}
	report("kernel, health flip: add → allocatable in the real kubelet", add)
	report("kernel, health flip: remove → not allocatable in the real kubelet", remove)
}

// pollAllocatable watches GetCapacity from now on (it has no change
// notification) and delivers the moment res has want allocatable.
func (n *node) pollAllocatable(res string, want int64) <-chan time.Time {
	ch := make(chan time.Time, 1)
	deadline := time.Now().Add(waitLimit)
	go func() {
		for time.Now().Before(deadline) {
			if c, ok := n.capacity()[res]; ok && c.allocatable == want {
				ch <- time.Now()
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
		ch <- time.Time{}
	}()
	return ch
}

func nextZram(t *testing.T) int {
	for i := 0; ; i++ {
		if _, err := os.Stat("/sys/block/zram" + strconv.Itoa(i)); os.IsNotExist(err) {
			return i
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// uevents is a kernel-group netlink listener that stamps each message on
// receipt.
type uevents struct {
	fd int
	ch chan stamped
}

type stamped struct {
	action, devname string
	at              time.Time
}

func listenUevents(t *testing.T) *uevents {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatalf("netlink socket: %v", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK, Groups: 1}); err != nil {
		syscall.Close(fd)
		t.Fatalf("netlink bind: %v", err)
	}
	// Reads end when the socket is shut down at cleanup.
	tv := syscall.Timeval{Usec: 100000}
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	u := &uevents{fd: fd, ch: make(chan stamped, 4096)}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, _, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // timeout: look at stop again
			}
			at := time.Now()
			s := stamped{at: at}
			for _, f := range bytes.Split(buf[:m], []byte{0}) {
				if v, ok := bytes.CutPrefix(f, []byte("ACTION=")); ok {
					s.action = string(v)
				} else if v, ok := bytes.CutPrefix(f, []byte("DEVNAME=")); ok {
					s.devname = string(v)
				}
			}
			select {
			case u.ch <- s:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		syscall.Close(fd)
	})
	return u
}

func (u *uevents) drain() {
	for {
		select {
		case <-u.ch:
		default:
			return
		}
	}
}

// first waits for devname's action and returns the receipt time of the first
// uevent since the last drain (zram sends its bdi device's before the block
// device's, and the daemon can react to either).
func (u *uevents) first(t *testing.T, action, devname string) time.Time {
	first, _ := u.firstAndOwn(t, action, devname)
	return first
}

// firstAndOwn is first, and also returns the receipt time of devname's own
// uevent: between the two the kernel is still at work (zram tears down its
// queue and bdi before it removes the node), a span that is the kernel's,
// not the daemon's.
func (u *uevents) firstAndOwn(t *testing.T, action, devname string) (first, own time.Time) {
	deadline := time.After(waitLimit)
	for {
		select {
		case s := <-u.ch:
			if first.IsZero() {
				first = s.at
			}
			if s.action == action && s.devname == devname {
				return first, s.at
			}
		case <-deadline:
			t.Fatalf("no %s uevent for %s", action, devname)
		}
	}
}
