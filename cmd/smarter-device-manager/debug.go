package main

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"runtime"

	"github.com/smarter-project/smarter-device-manager/daemon"
)

// debugHandler serves pprof and the daemon's counters (--debug-addr).
// It is off by default: it is for finding out why a figure is poor, and the
// benchmarks read Go heap figures from it.
func debugHandler(stats *daemon.Stats) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
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
