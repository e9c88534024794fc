package promtext

import (
	"math"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestExposition(t *testing.T) {
	var w Writer
	w.Family("x_devices", Gauge, "Devices by health.\nSecond line \\ here.")
	w.Sample("x_devices", 2, "health", "healthy", "resource", "smarter-devices/ttyUSB0")
	w.Sample("x_devices", 0.5, "health", "unhealthy", "resource", `odd "name"\`+"\n")
	w.One("x_total", Counter, "A counter.", 12345678)
	w.One("x_inf", Gauge, "Infinite.", math.Inf(1))
	want := `# HELP x_devices Devices by health.\nSecond line \\ here.
# TYPE x_devices gauge
x_devices{health="healthy",resource="smarter-devices/ttyUSB0"} 2
x_devices{health="unhealthy",resource="odd \"name\"\\\n"} 0.5
# HELP x_total A counter.
# TYPE x_total counter
x_total 1.2345678e+07
# HELP x_inf Infinite.
# TYPE x_inf gauge
x_inf +Inf
`
	if got := string(w.Bytes()); got != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", got, want)
	}
	rec := httptest.NewRecorder()
	w.Serve(rec)
	if ct := rec.Header().Get("Content-Type"); ct != ContentType || rec.Body.String() != want {
		t.Errorf("served %q with %q", rec.Body.String(), ct)
	}
}

var (
	sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (\S+)$`)
	typeRE   = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|summary)$`)
)

// The Go and process metrics are well-formed and carry the names
// dashboards for the Prometheus Go client look for.
func TestGoAndProcess(t *testing.T) {
	var w Writer
	w.WriteGo()
	w.WriteProcess()
	typed := map[string]bool{}
	seen := map[string]bool{}
	for line := range strings.Lines(string(w.Bytes())) {
		line = strings.TrimSuffix(line, "\n")
		if m := typeRE.FindStringSubmatch(line); m != nil {
			if typed[m[1]] {
				t.Errorf("family %s typed twice", m[1])
			}
			typed[m[1]] = true
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("malformed line %q", line)
			continue
		}
		family := strings.TrimSuffix(strings.TrimSuffix(m[1], "_sum"), "_count")
		if !typed[family] {
			t.Errorf("sample %q before its family's TYPE", line)
		}
		seen[m[1]] = true
	}
	for _, name := range []string{"go_goroutines", "go_threads", "go_info", "go_gc_duration_seconds", "go_gc_duration_seconds_count",
		"go_memstats_heap_inuse_bytes", "go_memstats_alloc_bytes_total", "go_memstats_sys_bytes",
		"process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
		"process_start_time_seconds", "process_open_fds", "process_max_fds"} {
		if !seen[name] {
			t.Errorf("no %s", name)
		}
	}
}
