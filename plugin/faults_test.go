package plugin_test

import (
	"bufio"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// These tests put a plugin server (with the plugin-directory watch the
// daemon wires to it) in front of a kubelet that misbehaves, then replace
// that kubelet with a well-behaved one: the server must back off, say so in
// its log, keep its goroutines bounded however often it retries, and
// recover by itself.

// goroutineSlack is how many goroutines above a reference level still count
// as "the same level": an attempt in flight owns a few (a gRPC client
// connection and its transport); a leak of one per attempt over dozens of
// attempts is far above it.
const goroutineSlack = 12

// faultServer runs a server on dir with a short backoff, its log captured,
// and the plugin-directory watch kicking it.
func faultServer(t *testing.T, dir string, minBackoff, maxBackoff time.Duration) (*running, *testutil.SyncBuffer) {
	t.Helper()
	log := &testutil.SyncBuffer{}
	opts := options(t, dir)
	opts.Logger = zerolog.New(log).With().Timestamp().Logger()
	opts.MinBackoff, opts.MaxBackoff = minBackoff, maxBackoff
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", log.String())
		}
	})
	srv := run(t, plugin.NewServer(opts, ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
	watch(t, dir, srv.Server)
	return srv, log
}

// logLine is the part of a server log line these tests read.
type logLine struct {
	Message string `json:"message"`
	Level   string `json:"level"`
	Error   string `json:"error"`
	Reason  string `json:"reason"`
	Backoff string `json:"backoff"` // a duration with its unit, e.g. "100ms"
}

func logLines(t *testing.T, log string, message string) []logLine {
	t.Helper()
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if l.Message == message {
			out = append(out, l)
		}
	}
	return out
}

// checkBackoff asserts the retry lines' backoff doubles from min up to max
// and stays there: the server never retries in a tight loop.
func checkBackoff(t *testing.T, lines []logLine, minBackoff, maxBackoff time.Duration) {
	t.Helper()
	if len(lines) < 2 {
		t.Fatalf("%d retry lines, want several", len(lines))
	}
	// Each delay doubles the one before, up to the cap, or starts again
	// from the minimum: a wake-up that finds a registration holding (the
	// plugin directory's first events arrive while the first streams are
	// open) resets the backoff, as it should. What must hold is the
	// growth: the last retries wait the cap.
	prev := time.Duration(0)
	for i, l := range lines {
		if l.Level != "warn" {
			t.Errorf("retry line %d logged at %q, want warn", i, l.Level)
		}
		// What a user reads: a duration with its unit, not a bare number.
		got, err := time.ParseDuration(l.Backoff)
		if err != nil {
			t.Fatalf("retry %d: backoff %q is not a duration: %v", i, l.Backoff, err)
		}
		if got != minBackoff && got != min(2*prev, maxBackoff) {
			t.Fatalf("retry %d: backoff %v after %v, want %v or %v (doubling from %v to %v)", i, got, prev, min(2*prev, maxBackoff), minBackoff, minBackoff, maxBackoff)
		}
		prev = got
	}
	if len(lines) < 10 {
		t.Fatalf("%d retry lines, want 10 or more to see the backoff reach its cap", len(lines))
	}
	if tail := lines[len(lines)-3:]; tail[0].Backoff != maxBackoff.String() || tail[2].Backoff != maxBackoff.String() {
		t.Errorf("the last retries wait %v, %v, %v; want the cap %v", tail[0].Backoff, tail[1].Backoff, tail[2].Backoff, maxBackoff)
	}
}

// waitGoroutines waits until the goroutine count is back within slack of
// ref (an attempt in flight may hold a few for a moment).
func waitGoroutines(t *testing.T, ref int, what string) int {
	t.Helper()
	n := runtime.NumGoroutine()
	testutil.Eventually(t, waitTimeout, what, func() bool {
		n = runtime.NumGoroutine()
		return n <= ref+goroutineSlack
	})
	return n
}

// waitAttempts waits until the kubelet has seen n Register calls.
func waitAttempts(t *testing.T, k *plugintest.FakeKubelet, n int) {
	t.Helper()
	if err := k.Wait(waitCtx(t), func() bool { return k.Attempts(resourceName) >= n }); err != nil {
		t.Fatalf("%d registration attempts, want %d: %v", k.Attempts(resourceName), n, err)
	}
}

// recover replaces the misbehaving kubelet with a well-behaved one, the way
// a kubelet restart does (its sockets wiped, kubelet.sock new), and waits for
// a registration with a healthy, open stream that stays open.
func recoverWith(t *testing.T, dir string, stopBad func()) {
	t.Helper()
	stopBad()
	if err := plugintest.WipeSockets(dir); err != nil {
		t.Fatal(err)
	}
	good := startKubelet(t, dir)
	waitRegistered(t, good, 1)
	waitDevices(t, good, []plugin.Device{{ID: "0", Healthy: true}})
}

// (c) A kubelet that rejects every registration.
func TestRejectingKubeletBackoff(t *testing.T) {
	const minB, maxB = time.Millisecond, 16 * time.Millisecond
	dir := testutil.ShortTempDir(t)
	bad := startKubelet(t, dir, plugintest.RejectRegistrations())
	_, log := faultServer(t, dir, minB, maxB)

	waitAttempts(t, bad, 5)
	ref := runtime.NumGoroutine()
	waitAttempts(t, bad, 60)
	got := waitGoroutines(t, ref, "goroutines back to the level after 5 attempts")
	t.Logf("goroutines after 5 rejected attempts: %d; after %d: %d", ref, bad.Attempts(resourceName), got)

	lines := logLines(t, log.String(), "registration failed; retrying")
	checkBackoff(t, lines, minB, maxB)
	if !strings.Contains(lines[0].Error, "rejects registration") {
		t.Errorf("retry line does not say why: %q", lines[0].Error)
	}
	recoverWith(t, dir, bad.Stop)
}

// (b) A kubelet that accepts the registration and then ends every
// ListAndWatch stream at once.
func TestStreamClosingKubeletBackoff(t *testing.T) {
	const minB, maxB = time.Millisecond, 16 * time.Millisecond
	dir := testutil.ShortTempDir(t)
	bad := startKubelet(t, dir, plugintest.CloseStreams())
	_, log := faultServer(t, dir, minB, maxB)

	closed := func(n int) {
		t.Helper()
		if err := bad.Wait(waitCtx(t), func() bool { return bad.ClosedStreams(resourceName) >= n }); err != nil {
			t.Fatalf("%d streams closed, want %d: %v", bad.ClosedStreams(resourceName), n, err)
		}
	}
	closed(5)
	ref := runtime.NumGoroutine()
	closed(40)
	got := waitGoroutines(t, ref, "goroutines back to the level after 5 closed streams")
	t.Logf("goroutines after 5 closed streams: %d; after %d: %d (registrations %d)",
		ref, bad.ClosedStreams(resourceName), got, bad.Registrations(resourceName))

	// Each closed stream is said, and the next registration waits a growing
	// backoff instead of hammering the kubelet.
	if n := len(logLines(t, log.String(), "kubelet closed the ListAndWatch stream")); n < 5 {
		t.Errorf("%d log lines about closed streams, want one per stream", n)
	}
	checkBackoff(t, logLines(t, log.String(), "kubelet closed its ListAndWatch stream; re-registering after backoff"), minB, maxB)
	recoverWith(t, dir, bad.Stop)
}

// (a) A kubelet that accepts the connection on kubelet.sock and never
// answers: each Register call can only end by its own deadline.
func TestSilentKubeletBackoff(t *testing.T) {
	testutil.SkipShort(t, "waits out registration deadlines, 10 s")
	const minB, maxB = time.Millisecond, 16 * time.Millisecond
	dir := testutil.ShortTempDir(t)
	bad, err := plugintest.StartSilentKubelet(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bad.Stop)
	srv, log := faultServer(t, dir, minB, maxB)

	accepted := func(n int) {
		t.Helper()
		timeout := time.After(waitTimeout)
		for {
			got, changed := bad.Accepted()
			if got >= n {
				return
			}
			select {
			case <-changed:
			case <-timeout:
				t.Fatalf("%d connections to the silent kubelet, want %d", got, n)
			}
		}
	}
	accepted(1)
	ref := runtime.NumGoroutine()
	// Every attempt waits out the register deadline (5s): two more are
	// enough to see the retry and that nothing piles up.
	accepted(3)
	got := waitGoroutines(t, ref, "goroutines back to the level of the first attempt")
	t.Logf("goroutines during the first attempt: %d; during the third: %d", ref, got)
	if srv.Registered() {
		t.Fatal("registered with a kubelet that never answered")
	}
	lines := logLines(t, log.String(), "registration failed; retrying")
	if len(lines) < 2 || !strings.Contains(lines[0].Error, "DeadlineExceeded") {
		t.Fatalf("retry lines %+v; want each to say the kubelet did not answer in time", lines)
	}
	recoverWith(t, dir, bad.Stop)
}
