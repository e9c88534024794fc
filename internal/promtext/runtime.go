package promtext

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// WriteGo writes the Go runtime's standard metrics, named as the
// Prometheus Go client's Go collector names them: go_goroutines,
// go_threads, go_info, go_sched_gomaxprocs_threads, go_gc_duration_seconds
// and the go_memstats_ figures of runtime.MemStats that dashboards use.
func (w *Writer) WriteGo() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.One("go_goroutines", Gauge, "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	threads, _ := runtime.ThreadCreateProfile(nil)
	w.One("go_threads", Gauge, "Number of OS threads created.", float64(threads))
	w.One("go_sched_gomaxprocs_threads", Gauge, "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously.", float64(runtime.GOMAXPROCS(0)))
	w.Family("go_info", Gauge, "Information about the Go environment.")
	w.Sample("go_info", 1, "version", runtime.Version())

	// Pause quantiles 0, .25, .5, .75 and 1 of the recent collections.
	gc := debug.GCStats{PauseQuantiles: make([]time.Duration, 5)}
	debug.ReadGCStats(&gc)
	w.Family("go_gc_duration_seconds", Summary, "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.")
	for i, q := range []string{"0", "0.25", "0.5", "0.75", "1"} {
		w.Sample("go_gc_duration_seconds", gc.PauseQuantiles[i].Seconds(), "quantile", q)
	}
	w.Sample("go_gc_duration_seconds_sum", gc.PauseTotal.Seconds())
	w.Sample("go_gc_duration_seconds_count", float64(gc.NumGC))

	for _, m := range []struct {
		name, typ, help string
		v               uint64
	}{
		{"alloc_bytes", Gauge, "Number of heap bytes allocated and currently in use, same as go_memstats_heap_alloc_bytes.", ms.Alloc},
		{"alloc_bytes_total", Counter, "Total number of bytes allocated in heap until now, even if released already.", ms.TotalAlloc},
		{"mallocs_total", Counter, "Total number of heap objects allocated, both live and gc-ed.", ms.Mallocs},
		{"frees_total", Counter, "Total number of heap objects frees.", ms.Frees},
		{"heap_alloc_bytes", Gauge, "Number of heap bytes allocated and currently in use.", ms.HeapAlloc},
		{"heap_idle_bytes", Gauge, "Number of heap bytes waiting to be used.", ms.HeapIdle},
		{"heap_inuse_bytes", Gauge, "Number of heap bytes that are in use.", ms.HeapInuse},
		{"heap_objects", Gauge, "Number of currently allocated objects.", ms.HeapObjects},
		{"heap_released_bytes", Gauge, "Number of heap bytes released to OS.", ms.HeapReleased},
		{"heap_sys_bytes", Gauge, "Number of heap bytes obtained from system.", ms.HeapSys},
		{"stack_inuse_bytes", Gauge, "Number of bytes obtained from system for stack allocator in non-CGO environments.", ms.StackInuse},
		{"stack_sys_bytes", Gauge, "Number of bytes obtained from system for stack allocator.", ms.StackSys},
		{"next_gc_bytes", Gauge, "Number of heap bytes when next garbage collection will take place.", ms.NextGC},
		{"sys_bytes", Gauge, "Number of bytes obtained from system.", ms.Sys},
	} {
		w.One("go_memstats_"+m.name, m.typ, m.help, float64(m.v))
	}
	w.One("go_memstats_last_gc_time_seconds", Gauge, "Number of seconds since 1970 of last garbage collection.", float64(ms.LastGC)/1e9)
}

// WriteProcess writes the process's standard metrics, named as the
// Prometheus Go client's process collector names them, from /proc/self:
// CPU time, resident and virtual memory, open and maximum file
// descriptors, and the start time. A figure that cannot be read is left
// out.
func (w *Writer) WriteProcess() {
	if stat, err := os.ReadFile("/proc/self/stat"); err == nil {
		// The fields after the parenthesised command name.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 21 {
			num := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v }
			// utime, stime and starttime are in clock ticks, 100 a
			// second on Linux; vsize in bytes, rss in pages.
			const ticks = 100
			w.One("process_cpu_seconds_total", Counter, "Total user and system CPU time spent in seconds.", (num(11)+num(12))/ticks)
			w.One("process_virtual_memory_bytes", Gauge, "Virtual memory size in bytes.", num(20))
			w.One("process_resident_memory_bytes", Gauge, "Resident memory size in bytes.", num(21)*float64(os.Getpagesize()))
			if boot, ok := bootTime(); ok {
				w.One("process_start_time_seconds", Gauge, "Start time of the process since unix epoch in seconds.", boot+num(19)/ticks)
			}
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		w.One("process_open_fds", Gauge, "Number of open file descriptors.", float64(len(fds)))
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		w.One("process_max_fds", Gauge, "Maximum number of open file descriptors.", float64(lim.Cur))
	}
}

// bootTime is the system's boot time, in seconds since the epoch
// (/proc/stat's btime).
func bootTime() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			t, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return t, err == nil
		}
	}
	return 0, false
}
