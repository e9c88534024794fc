package e2e

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The metrics port (/metrics, /healthz, /readyz) is on the host network
// with no authentication: anyone who reaches the node can send it bytes.
// Each test here attacks it on the daemon built as `make build` builds it
// (static, no race detector: its memory is what a node pays), serving a
// resource to the real kubelet device manager, and asserts what a user
// depends on: the liveness probe answered within a second all along, the
// daemon's peak memory (VmHWM) grew by less than 16 MiB, its descriptors
// and goroutines came back to their idle numbers, and its resource stayed
// registered with the kubelet. Each prints an ATTACK line with its
// figures (docs/operations.md).

// attackHWMBound is the most an attack may raise the daemon's peak memory.
const attackHWMBound = 16 << 20

var releaseBin struct {
	once sync.Once
	path string
	err  error
}

// releaseDaemon builds the daemon with the Makefile's release flags, once;
// SDM_E2E_RELEASE_DAEMON names a prebuilt one instead (another version's,
// to compare).
func releaseDaemon(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("SDM_E2E_RELEASE_DAEMON"); bin != "" {
		return bin
	}
	releaseBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "sdm-release")
		if err != nil {
			releaseBin.err = err
			return
		}
		releaseBin.path = filepath.Join(dir, "smarter-device-manager")
		cmd := exec.Command(goTool(), "build", "-trimpath", "-tags", "grpcnotrace,nethttpomithttp2", "-ldflags=-s -w", "-o", releaseBin.path, "./cmd/smarter-device-manager")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			releaseBin.err = fmt.Errorf("building the release daemon: %v\n%s", err, out)
		}
	})
	if releaseBin.err != nil {
		t.Fatal(releaseBin.err)
	}
	return releaseBin.path
}

// target is a running release daemon under attack, and its idle figures.
type target struct {
	n          *node
	addr       string
	pid        int
	fds, gor   int
	hwm        int64
	registered float64
}

func newTarget(t *testing.T) *target {
	t.Helper()
	n := newNode(t, "- devicematch: ^null$\n  nummaxdevices: 2\n")
	n.daemonBin = releaseDaemon(t)
	n.startKubelet()
	n.startDaemon()
	n.waitCapacity("null registered", map[string]counts{resNull: {2, 2}})
	tg := &target{n: n, addr: n.metricsAddr(), pid: n.daemon.cmd.Process.Pid}
	m := n.waitMetrics("the registration counted", func(m map[string]float64) bool {
		return m[perResource("registrations_total", resNull)] == 1
	})
	tg.registered = m[perResource("registrations_total", resNull)]
	tg.fds, tg.gor = tg.fdCount(), tg.goroutines()
	tg.hwm = tg.status("VmHWM")
	return tg
}

// under runs attack while a prober sends the kubelet's liveness probe
// (GET /healthz on a new connection, 1 s timeout) every 100 ms, then checks
// everything the daemon must have kept. probeDuring false: the attack
// stops the process from accepting anything (no descriptor left), and
// only what follows it is checked.
func (tg *target) under(t *testing.T, name string, probeDuring bool, attack func()) {
	t.Helper()
	hwm0 := tg.status("VmHWM")
	stop := make(chan struct{})
	type result struct {
		n, failed int
		worst     time.Duration
		first     error
	}
	done := make(chan result)
	go func() {
		var r result
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- r
				return
			case <-tick.C:
			}
			d, err := livenessProbe(tg.addr)
			r.n++
			r.worst = max(r.worst, d)
			if err != nil {
				r.failed++
				if r.first == nil {
					r.first = err
				}
			}
		}
	}()
	// A quick attack is repeated for a second, so that probes run during it.
	began := time.Now()
	for first := true; first || time.Since(began) < time.Second; first = false {
		attack()
	}
	took := time.Since(began)
	close(stop)
	r := <-done
	if probeDuring && (r.failed > 0 || r.n == 0) {
		t.Errorf("%s: %d of %d liveness probes failed during the attack (first: %v)", name, r.failed, r.n, r.first)
	}
	// After it, the probe answers at once again.
	tg.n.poll("the liveness probe answering after the attack", func() bool {
		_, err := livenessProbe(tg.addr)
		return err == nil
	}, func() string { return "" })
	tg.n.poll("descriptors and goroutines back to idle", func() bool {
		return tg.fdCount() <= tg.fds+2 && tg.goroutines() <= tg.gor+2
	}, func() string {
		return fmt.Sprintf("%d descriptors (idle %d), %d goroutines (idle %d)", tg.fdCount(), tg.fds, tg.goroutines(), tg.gor)
	})
	hwm := tg.status("VmHWM")
	if hwm-hwm0 >= attackHWMBound {
		t.Errorf("%s: VmHWM grew by %.1f MiB (%d → %d KiB); want < %d MiB", name, float64(hwm-hwm0)/(1<<20), hwm0>>10, hwm>>10, attackHWMBound>>20)
	}
	if got := tg.n.capacity()[resNull]; got != (counts{2, 2}) {
		t.Errorf("%s: the kubelet's capacity for %s is %v after the attack; want {2 2}", name, resNull, got)
	}
	m := tg.n.metrics()
	if got := m[perResource("resource_registered", resNull)]; got != 1 {
		t.Errorf("%s: resource_registered = %v; want 1", name, got)
	}
	if got := m[perResource("registrations_total", resNull)]; got != tg.registered {
		t.Errorf("%s: registrations_total = %v; want %v (no re-registration)", name, got, tg.registered)
	}
	fmt.Printf("ATTACK %-28s %6.1f s  probes %3d, failed %d, slowest %4.0f ms  VmHWM %+6.2f MiB (%.1f MiB)\n",
		name, took.Seconds(), r.n, r.failed, float64(r.worst.Microseconds())/1000, float64(hwm-hwm0)/(1<<20), float64(hwm)/(1<<20))
}

// livenessProbe is the kubelet's liveness probe: a new connection, 1 s.
func livenessProbe(addr string) (time.Duration, error) {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	began := time.Now()
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		return time.Since(began), err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return time.Since(began), fmt.Errorf("/healthz: %s", resp.Status)
	}
	return time.Since(began), nil
}

func (tg *target) status(field string) int64 { return procStatusKB(tg.n.t, tg.pid, field) }
func (tg *target) fdCount() int              { return procFDs(tg.n.t, tg.pid) }
func (tg *target) goroutines() int           { return daemonGoroutines(tg.n.t, tg.addr) }

func (tg *target) dial() net.Conn {
	c, err := net.Dial("tcp", tg.addr)
	if err != nil {
		tg.n.t.Fatal(err)
	}
	return c
}

// answer reads what the server sends on c until it closes it, at most 10 s.
func answer(c net.Conn) string {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// flood writes size bytes of filler to c after head, until the server
// stops reading (it answered and closed); it returns what was written.
func flood(c net.Conn, head string, filler []byte, size int64) int64 {
	_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	n, err := io.WriteString(c, head)
	sent := int64(n)
	for err == nil && sent < size {
		n, err = c.Write(filler)
		sent += int64(n)
	}
	return sent
}

func TestAttackLongRequestLine(t *testing.T) {
	tg := newTarget(t)
	tg.under(t, "200 MB request line", true, func() {
		c := tg.dial()
		defer c.Close()
		got := make(chan string, 1)
		go func() { got <- answer(c) }()
		sent := flood(c, "GET /", bytes.Repeat([]byte("a"), 64<<10), 200<<20)
		if a := <-got; !strings.HasPrefix(a, "HTTP/1.1 431 ") {
			t.Errorf("a 200 MB request line (%d MB sent): answer %.40q; want 431", sent>>20, a)
		}
	})
}

func TestAttackHugeHeaders(t *testing.T) {
	tg := newTarget(t)
	tg.under(t, "1 MB of headers", true, func() {
		c := tg.dial()
		defer c.Close()
		got := make(chan string, 1)
		go func() { got <- answer(c) }()
		flood(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n", []byte("X-Filler: "+strings.Repeat("v", 100)+"\r\n"), 1<<20)
		if a := <-got; !strings.HasPrefix(a, "HTTP/1.1 431 ") {
			t.Errorf("1 MB of headers: answer %.40q; want 431", a)
		}
	})
}

// 100 connections that send a request one byte a second: each is cut by
// the server's header timeout, and the probes get through meanwhile.
func TestAttackSlowloris(t *testing.T) {
	tg := newTarget(t)
	tg.under(t, "100 slowloris connections", true, func() {
		var wg sync.WaitGroup
		var mu sync.Mutex
		cut := 0
		for range 100 {
			c := tg.dial()
			wg.Go(func() {
				defer c.Close()
				req := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("s", 20)
				for i := range len(req) {
					if _, err := c.Write([]byte{req[i]}); err != nil {
						mu.Lock()
						cut++
						mu.Unlock()
						return
					}
					time.Sleep(time.Second)
				}
			})
		}
		wg.Wait()
		if cut != 100 {
			t.Errorf("%d of 100 slow connections were cut by the server; want all (header timeout)", cut)
		}
	})
}

// 2,000 connections opened and held without a byte: the budget keeps the
// newest, the probes among them.
func TestAttackIdleConnections(t *testing.T) {
	tg := newTarget(t)
	tg.under(t, "2,000 idle connections", true, func() {
		conns := make([]net.Conn, 0, 2000)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range 2000 {
			conns = append(conns, tg.dial())
		}
		// Held for a while: the probes run meanwhile.
		time.Sleep(3 * time.Second)
	})
}

// Pipelined requests are answered in order; malformed ones get a 4xx (or
// the connection closed), never a crash or a hang.
func TestAttackPipelinedAndMalformed(t *testing.T) {
	tg := newTarget(t)
	tg.under(t, "pipelined and malformed", true, func() {
		c := tg.dial()
		go func() {
			for range 200 {
				if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					return
				}
			}
			_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		}()
		if got := strings.Count(answer(c), "HTTP/1.1 200 OK"); got != 201 {
			t.Errorf("201 pipelined probes: %d answered 200", got)
		}
		c.Close()
		// What net/http answers each: a 4xx or 5xx for what it cannot
		// parse; 200 where RFC 9112 makes sense of it (Transfer-Encoding
		// overrides Content-Length) or the handler never reads the broken
		// body. The write side is closed after each, so a server that
		// waited for more would be seen to hang.
		for _, c := range []struct{ req, want string }{
			{"GET / HTTP/9.9\r\n\r\n", "505"},
			{"\x00\x01\x02\x03\xff\xfe\r\n\r\n", "400"},
			{"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", "400"},
			{"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "400"},
			{"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "400"},
			{"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n", "400"},
			{"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "200"},
			{"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "200"},
			{strings.Repeat("\r\n", 5000), ""},
		} {
			conn := tg.dial()
			_, _ = io.WriteString(conn, c.req)
			_ = conn.(*net.TCPConn).CloseWrite()
			began := time.Now()
			a := answer(conn)
			conn.Close()
			status, _, _ := strings.Cut(strings.TrimPrefix(a, "HTTP/1.1 "), " ")
			if c.want != "" && status != c.want || c.want == "" && a != "" && status[:1] != "4" {
				t.Errorf("%.40q: answer %.60q; want %s", c.req, a, cmp.Or(c.want, "none or a 4xx"))
			}
			if d := time.Since(began); d > 5*time.Second {
				t.Errorf("%.40q: the connection stayed open %v after the request", c.req, d)
			}
		}
	})
}

// A request with a body the endpoint does not read: answered, and the
// server reads at most a bounded part of the body before closing.
func TestAttackRequestBody(t *testing.T) {
	tg := newTarget(t)
	tg.under(t, "100 MB request bodies", true, func() {
		for _, head := range []string{
			"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n",
			"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		} {
			c := tg.dial()
			got := make(chan string, 1)
			go func() { got <- answer(c) }()
			filler := bytes.Repeat([]byte("b"), 64<<10)
			if strings.Contains(head, "chunked") {
				filler = append([]byte("10000\r\n"), append(filler, "\r\n"...)...)
			}
			sent := flood(c, head, filler, 100<<20)
			if a := <-got; !strings.HasPrefix(a, "HTTP/1.1 200 ") {
				t.Errorf("%.40q with a 100 MB body (%d MB sent): answer %.40q; want 200", head, sent>>20, a)
			}
			c.Close()
		}
	})
}

// Out of file descriptors (the limit lowered under the daemon's feet, as
// a leak elsewhere would), the port cannot accept; once descriptors are
// free again it answers again: net/http retries the accept error.
func TestAttackDescriptorExhaustion(t *testing.T) {
	tg := newTarget(t)
	var old unix.Rlimit
	if err := unix.Prlimit(tg.pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Prlimit(tg.pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
			t.Errorf("restoring the daemon's descriptor limit: %v", err)
		}
	}()
	tg.under(t, "descriptor exhaustion", false, func() {
		low := unix.Rlimit{Cur: uint64(tg.fdCount() + 4), Max: old.Max}
		if err := unix.Prlimit(tg.pid, unix.RLIMIT_NOFILE, &low, nil); err != nil {
			t.Fatal(err)
		}
		var conns []net.Conn
		for range 300 {
			conns = append(conns, tg.dial())
		}
		time.Sleep(2 * time.Second)
		if err := unix.Prlimit(tg.pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
			t.Fatal(err)
		}
		for _, c := range conns {
			c.Close()
		}
	})
}
