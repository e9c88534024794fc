package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/smarter-project/smarter-device-manager/e2e/probe"
	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
)

// report is what one case's containers saw: one line, printed whether the
// case passes or fails (make e2e-container shows them).
type report struct {
	t     *testing.T
	name  string
	parts []string
}

func newReport(t *testing.T, name string) *report {
	r := &report{t: t, name: name}
	t.Cleanup(func() {
		status := "ok"
		if t.Failed() {
			status = "FAILED"
		}
		fmt.Printf("CONTAINER %-28s %s: %s\n", name, status, strings.Join(r.parts, "; "))
	})
	return r
}

func (r *report) saw(format string, args ...any) {
	r.parts = append(r.parts, fmt.Sprintf(format, args...))
}

// expect sends the request, reports what the process saw, and fails the
// case unless the answer is want ("ok" or an errno name).
func (r *report) expect(c *container, req probe.Request, want string) probe.Reply {
	r.t.Helper()
	rep := c.do(r.t, req)
	what := req.Op
	if req.Flags != "" {
		what += " " + req.Flags
	}
	r.saw("%s %s %s", what, req.Path, rep.Result())
	if rep.Result() != want {
		r.t.Errorf("%s %s: the process saw %s (%s); want %s", what, req.Path, rep.Result(), rep.Error, want)
	}
	return rep
}

// stat reports the node as the process sees it and fails unless it has
// the type and numbers of the host's node.
func (r *report) stat(c *container, path string, host probe.Reply) probe.Reply {
	r.t.Helper()
	rep := c.do(r.t, probe.Request{Op: "stat", Path: path})
	if rep.Errno != "" {
		r.saw("stat %s %s", path, rep.Errno)
		r.t.Errorf("stat %s in the container: %s", path, rep.Error)
		return rep
	}
	r.saw("%s is %s", path, rep.Node())
	if rep.Type != host.Type || rep.Major != host.Major || rep.Minor != host.Minor {
		r.t.Errorf("%s in the container is %s; the host's %s is %s", path, rep.Node(), host.Path, host.Node())
	}
	return rep
}

// roundTrip writes a pattern through one path in the container, reads it
// back through another (the same path, or a link to the same device), and
// checks that the host's node holds it: the process reached the device.
func (r *report) roundTrip(c *container, writeVia, readVia, host string) {
	r.t.Helper()
	pattern := fmt.Sprintf("sdm-e2e %s via %s", c.id, writeVia)
	if rep := r.expect(c, probe.Request{Op: "write", Path: writeVia, Data: pattern}, "ok"); rep.Errno != "" {
		return
	}
	rep := r.expect(c, probe.Request{Op: "read", Path: readVia, Len: len(pattern)}, "ok")
	if rep.Data != pattern {
		r.t.Errorf("read %s gave %q; wrote %q through %s", readVia, rep.Data, pattern, writeVia)
	}
	b := make([]byte, len(pattern))
	f, err := os.Open(host)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, 0); err != nil || string(b) != pattern {
		r.t.Errorf("the host's %s holds %q (%v); the container wrote %q", host, b, err, pattern)
		return
	}
	r.saw("the host's %s holds the pattern", host)
}

// zramDisk gives zram device z a size, so that it can be read and written.
func zramDisk(t *testing.T, z int) string {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/sys/block/zram%d/disksize", z), []byte("1M"), 0); err != nil {
		t.Fatalf("zram%d disksize: %v", z, err)
	}
	return fmt.Sprintf("/dev/zram%d", z)
}

// udevLinks makes udevd give every zram device a by-id link, as it gives
// a USB serial adapter /dev/serial/by-id/usb-…. Call it before zramAdd.
func udevLinks(t *testing.T) {
	t.Helper()
	testkernel.Udevd(t)
	udevRule(t, "99-smarter-device-manager-container-test.rules", `KERNEL=="zram*", SYMLINK+="serial/by-id/usb-sdm-e2e_GPS_%k-if00"`+"\n")
}

// udevRule installs a rule file of the test's in /run/udev/rules.d and has
// the running udevd reload its rules; cleanup removes it and reloads.
func udevRule(t *testing.T, name, rule string) {
	t.Helper()
	const dir = "/run/udev/rules.d"
	file := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(file)
		if err := testkernel.UdevadmControl("--reload"); err != nil {
			t.Error(err)
		}
	})
	if err := testkernel.UdevadmControl("--reload"); err != nil {
		t.Fatal(err)
	}
}

// udevSettle waits until udevd has handled every event so far: the
// nodes' groups and links are then what the daemon will read.
func udevSettle(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("udevadm", "settle", "--timeout=30").CombinedOutput(); err != nil {
		t.Fatalf("udevadm settle: %v\n%s", err, out)
	}
}

// envOf returns the environment the process sees.
func envOf(t *testing.T, c *container) map[string]string {
	t.Helper()
	rep := c.do(t, probe.Request{Op: "env"})
	if rep.Errno != "" {
		t.Fatalf("env: %s", rep.Error)
	}
	return rep.Env
}

// cdiFiles is the content of every CDI spec in dir, for a failure message.
func cdiFiles(dir string) string {
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	slices.Sort(files)
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "\n%s:\n%s", f, data)
	}
	return b.String()
}

// envKey is the daemon's describe_env prefix for a resource:
// smarter-devices/zram3 → SMARTER_DEVICE_ZRAM3.
func envKey(res string) string {
	part := res[strings.LastIndexByte(res, '/')+1:]
	return "SMARTER_DEVICE_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(part))
}
