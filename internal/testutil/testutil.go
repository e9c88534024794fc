// Package testutil holds small helpers the tests of several packages share.
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// ShortTempDir returns a fresh directory with a short path, removed when the
// test ends. Unix socket paths are limited to 108 bytes, which t.TempDir's
// long names can exceed.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// SyncBuffer is a bytes.Buffer safe for a process or logger writing while a
// test reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Eventually checks cond every few milliseconds until it holds, failing the
// test after limit. It is for effects nothing announces (a file removed, a
// log line written); wait on a channel where there is one.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(limit)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("%s: not within %v", what, limit)
		case <-tick.C:
		}
	}
}

// SkipShort skips a slow test in -short mode (make check), saying why; make
// test runs it.
func SkipShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("skipping in -short mode (make check; make test runs it): %s", why)
	}
}

// SkipEnv skips t because this machine lacks a part it needs (root, a
// kernel module, a tool, Docker), saying which. Skips must not hide a
// test CI's machine can run, so:
//   - with SDM_TEST_STRICT=1 (.ci/run sets it) the skip is a failure
//     naming the test and the missing part;
//   - with SDM_TEST_SKIPLOG naming a file (scripts/test.sh sets it), the
//     skip is appended there, one line, for make test's summary of what
//     did not run.
//
// A skip that is no lack of this machine's (a benchmark not asked for,
// -short, a test only a normal user can run) stays a plain t.Skip.
func SkipEnv(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(StrictEnv) == "1" {
		t.Fatalf("%s did not run, and CI's machine must run it (%s=1): %s", t.Name(), StrictEnv, msg)
	}
	if log := os.Getenv(SkipLogEnv); log != "" {
		// One write per line, O_APPEND: test processes running at once
		// do not interleave.
		if f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			fmt.Fprintf(f, "%s: %s\n", t.Name(), strings.ReplaceAll(msg, "\n", " "))
			f.Close()
		}
	}
	t.Skip(msg)
}

// The environment SkipEnv reads.
const (
	StrictEnv  = "SDM_TEST_STRICT"
	SkipLogEnv = "SDM_TEST_SKIPLOG"
)

// Golden compares got with the golden file at path: a contract users and
// running workloads depend on across versions (a device's name, a metric's
// labels). A difference fails the test with both texts; changing the
// contract is a deliberate edit of the file, reviewed with the change:
// SDM_UPDATE_GOLDEN=1 go test ... rewrites it from got.
func Golden(t testing.TB, path string, got []byte) {
	t.Helper()
	if os.Getenv("SDM_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (SDM_UPDATE_GOLDEN=1 writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed: a contract users depend on. If the change is meant, rewrite the file with SDM_UPDATE_GOLDEN=1 and say so in the commit.\n--- got\n%s\n--- want (%s)\n%s", path, got, path, want)
	}
}
