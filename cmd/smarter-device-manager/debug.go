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
	"github.com/smarter-project/smarter-device-manager/internal/httpserve"
)

// debugHandler serves pprof and the daemon's counters (--debug-addr).
// It is off by default: it is for finding out why a figure is poor, and the
// benchmarks read Go heap figures from it. Serve it on a loopback address
// only (the daemon warns otherwise): a client can run profiles. A profile
// or trace runs at most maxProfile, ends when its client goes away, and
// streams to the client as it goes (nothing is held whole in memory).
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
			d := seconds(r, 30)
			extendWrite(w, d)
			w.Header().Set("Content-Type", "application/octet-stream")
			if err := pprof.StartCPUProfile(w); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			sleep(r, d)
			pprof.StopCPUProfile()
		case "trace":
			d := seconds(r, 1)
			extendWrite(w, d)
			w.Header().Set("Content-Type", "application/octet-stream")
			if err := trace.Start(w); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			sleep(r, d)
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

// maxProfile caps a profile's or trace's ?seconds=.
const maxProfile = 60 * time.Second

// seconds is the request's ?seconds=, or def, at most maxProfile.
func seconds(r *http.Request, def float64) time.Duration {
	s, err := strconv.ParseFloat(r.URL.Query().Get("seconds"), 64)
	if err != nil || !(s > 0) { // NaN too
		s = def
	}
	return min(time.Duration(min(s, maxProfile.Seconds())*float64(time.Second)), maxProfile)
}

// extendWrite lets a response that runs d be written for d plus the
// server's usual bound (httpserve.DefaultWriteTimeout). (The read deadline
// need not move: net/http clears it while it waits for the client to go.)
func extendWrite(w http.ResponseWriter, d time.Duration) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + httpserve.DefaultWriteTimeout))
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
