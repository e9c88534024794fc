package testkernel

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeUdevadm puts a udevadm on PATH that fails with udevd's EAGAIN answer
// the first busy times, then succeeds; it returns the file counting calls.
func fakeUdevadm(t *testing.T, busy int) string {
	t.Helper()
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho x >> " + calls + "\n" +
		"n=$(wc -l < " + calls + ")\n" +
		"if [ \"$n\" -le " + strconv.Itoa(busy) + " ]; then echo 'Failed to send reload request: Resource temporarily unavailable' >&2; exit 1; fi\n"
	if err := os.WriteFile(filepath.Join(dir, "udevadm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return calls
}

func countLines(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

// A busy udevd (EAGAIN on its control socket) is asked again until it
// takes the request: TestUdevLinksExposed failed on the first refusal.
func TestUdevadmControlRetriesWhileBusy(t *testing.T) {
	calls := fakeUdevadm(t, 2)
	if err := udevadmControl(10*time.Second, "--reload"); err != nil {
		t.Fatalf("refused twice, then accepted: %v", err)
	}
	if n := countLines(t, calls); n != 3 {
		t.Errorf("udevadm ran %d times, want 3", n)
	}
}

// A udevd that stays busy past the deadline is an error naming the request
// and udevadm's own message.
func TestUdevadmControlGivesUp(t *testing.T) {
	fakeUdevadm(t, 9)
	err := udevadmControl(200*time.Millisecond, "--reload")
	if err == nil || !strings.Contains(err.Error(), "--reload") || !strings.Contains(err.Error(), "temporarily unavailable") {
		t.Errorf("error %v", err)
	}
}
