package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"

	"github.com/smarter-project/smarter-device-manager/daemon"
)

// debugHandler serves pprof and the daemon's counters (--debug-addr).
// It is off by default: it is for finding out why a figure is poor, and the
// benchmarks read Go heap figures from it.
//
// The profiles are served straight from runtime/pprof and runtime/trace at
// net/http/pprof's paths (go tool pprof http://ADDR/debug/pprof/heap), with
// a plain-text index: net/http/pprof's HTML index links html/template and
// text/template, 0.3 MiB of the binary.
func debugHandler(stats *daemon.Stats) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/")
		switch name {
		case "":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintln(w, "profiles (?debug=1 for text): profile?seconds=N (CPU), trace?seconds=N, cmdline")
			for _, p := range pprof.Profiles() {
				fmt.Fprintf(w, "%s (%d)\n", p.Name(), p.Count())
			}
		case "cmdline":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprint(w, strings.Join(os.Args, "\x00"))
		case "profile":
			w.Header().Set("Content-Type", "application/octet-stream")
			if err := pprof.StartCPUProfile(w); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			sleep(r, seconds(r, 30))
			pprof.StopCPUProfile()
		case "trace":
			w.Header().Set("Content-Type", "application/octet-stream")
			if err := trace.Start(w); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			sleep(r, seconds(r, 1))
			trace.Stop()
		default:
			p := pprof.Lookup(name)
			if p == nil {
				http.NotFound(w, r)
				return
			}
			if name == "heap" && r.URL.Query().Get("gc") == "1" {
				runtime.GC()
			}
			debug, _ := strconv.Atoi(r.URL.Query().Get("debug"))
			if debug > 0 {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			} else {
				w.Header().Set("Content-Type", "application/octet-stream")
			}
			_ = p.WriteTo(w, debug)
		}
	})
	// Like expvar's /debug/vars, without its process-global registry.
	mux.HandleFunc("/debug/vars", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") == "1" {
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"memstats":               ms,
			"goroutines":             runtime.NumGoroutine(),
			"smarter_device_manager": stats.Snapshot(),
		})
	})
	return mux
}

// seconds is the request's ?seconds=, or def.
func seconds(r *http.Request, def float64) time.Duration {
	s, err := strconv.ParseFloat(r.URL.Query().Get("seconds"), 64)
	if err != nil || s <= 0 {
		s = def
	}
	return time.Duration(s * float64(time.Second))
}

// sleep waits for d or until the client goes away.
func sleep(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}
