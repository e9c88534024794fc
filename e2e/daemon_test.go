package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
)

// daemonProc is one run of the daemon binary.
type daemonProc struct {
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done is closed
	// stopping is set once the test signals the daemon: its exit is then
	// expected, not a failure to report.
	stopping atomic.Bool
	killed   bool   // by the test's SIGKILL: its exit status means nothing
	logStart int    // where this run's lines begin in log (shared by a node's runs)
	metrics  string // this run's --metrics-addr, once read from its log
}

// startDaemon runs the daemon on the node's plugin directory and rules.
// Every run of one node logs into the same buffer, each under a header.
func (n *node) startDaemon() {
	n.t.Helper()
	if n.daemon != nil && !n.daemon.exited() {
		n.t.Fatal("startDaemon: already running")
	}
	log := &syncBuffer{}
	if n.daemon != nil {
		log = n.daemon.log
	}
	p := &daemonProc{log: log, done: make(chan struct{})}
	// Its metrics are the daemon's own count of what it did (registrations,
	// attempts, calls from the kubelet): the tests read them, not its log.
	args := append([]string{"--plugin-dir", n.dir, "--config", n.rules, "--uevent-source", "kernel",
		"--log-level", "debug", "--resync", "1h", "--metrics-addr", "127.0.0.1:0"}, n.daemonArgs...)
	bin := daemonBinary
	if n.daemonBin != "" {
		bin = n.daemonBin
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = log
	p.cmd.Stderr = log
	if err := p.cmd.Start(); err != nil {
		n.t.Fatalf("starting the daemon: %v", err)
	}
	fmt.Fprintf(log, "=== daemon pid %d started\n", p.cmd.Process.Pid)
	p.logStart = len(log.String())
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	n.daemon = p
}

func (p *daemonProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the daemon by its own PID and waits for it to exit.
func (p *daemonProc) signal(sig syscall.Signal) error {
	if p.exited() {
		return nil
	}
	if pid := p.cmd.Process.Pid; pid <= 1 {
		return fmt.Errorf("refusing to signal pid %d", pid)
	}
	p.stopping.Store(true)
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%v: %w", sig, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(waitLimit):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("daemon still running %v after %v", waitLimit, sig)
	}
}

// stopDaemon is a clean stop: SIGTERM, and the daemon must exit 0.
func (n *node) stopDaemon() {
	n.t.Helper()
	if err := n.daemon.signal(syscall.SIGTERM); err != nil {
		n.t.Fatal(err)
	}
	if code := n.daemon.cmd.ProcessState.ExitCode(); code != 0 {
		n.t.Fatalf("daemon exited with status %d after SIGTERM (%v); want 0", code, n.daemon.err)
	}
}

// killDaemon crashes the daemon with SIGKILL.
func (n *node) killDaemon() {
	n.t.Helper()
	n.daemon.killed = true
	if err := n.daemon.signal(syscall.SIGKILL); err != nil {
		n.t.Fatal(err)
	}
}

// metricsAddr returns the address this run serves /metrics on (the test
// asks for port 0): the log line that says where it listens is the only
// place that says it.
func (n *node) metricsAddr() string {
	n.t.Helper()
	p := n.daemon
	if p.metrics != "" {
		return p.metrics
	}
	n.poll("the daemon's metrics address in its log", func() bool {
		sc := bufio.NewScanner(strings.NewReader(p.log.String()[p.logStart:]))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var rec struct{ Message, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && strings.HasPrefix(rec.Message, "health endpoints") && rec.Addr != "" {
				p.metrics = rec.Addr
				return true
			}
		}
		return false
	}, func() string { return "no \"health endpoints ... listening\" line (is --log-level above info?)" })
	return p.metrics
}

// metrics scrapes the running daemon's /metrics: every
// smarter_device_manager_ sample by its name and labels as written, e.g.
// `smarter_device_manager_registrations_total{resource="smarter-devices/null"}`.
func (n *node) metrics() map[string]float64 {
	n.t.Helper()
	resp, err := http.Get("http://" + n.metricsAddr() + "/metrics")
	if err != nil {
		n.t.Fatalf("scraping the daemon's metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		n.t.Fatalf("scraping the daemon's metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "smarter_device_manager_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			n.t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		n.t.Fatalf("reading the daemon's metrics: %v", err)
	}
	return out
}

// perResource is the name of a per-resource metric's sample.
func perResource(metric, res string) string {
	return fmt.Sprintf("smarter_device_manager_%s{resource=%q}", metric, res)
}

// sample is one sample of m, failing the test when the daemon does not
// export it (a missing counter must not read as 0).
func (n *node) sample(m map[string]float64, name string) float64 {
	n.t.Helper()
	v, ok := m[name]
	if !ok {
		n.t.Fatalf("the daemon's /metrics has no %s", name)
	}
	return v
}

// waitMetrics scrapes the daemon's metrics until cond holds and returns
// the last scrape: the daemon counts a registration when the kubelet's
// answer arrives, which may be after the kubelet already lists the
// resource.
func (n *node) waitMetrics(what string, cond func(m map[string]float64) bool) map[string]float64 {
	n.t.Helper()
	var m map[string]float64
	n.poll(what, func() bool {
		m = n.metrics()
		return cond(m)
	}, func() string { return fmt.Sprintf("last metrics %v", m) })
	return m
}

// requireZram skips the test unless it can make zram devices, and holds
// the zram lock every test binary of the project takes for the rest of the
// test: zram hands out the lowest free number, so a number one test frees
// would otherwise come back as another test's device.
func requireZram(t *testing.T) { testkernel.RequireZram(t) }

// zramAdd creates /dev/zramN with a real add uevent and returns N; cleanup
// removes it if the test did not. Only a top-level test may call it: the
// lock it takes is per test, and a subtest's would wait on its parent's.
func zramAdd(t *testing.T) int { return testkernel.ZramAdd(t) }

// zramRemove removes /dev/zramN (a real remove uevent); one already gone is
// not an error.
func zramRemove(n int) error { return testkernel.ZramRemove(n) }
