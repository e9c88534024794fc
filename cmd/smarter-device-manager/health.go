package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/daemon"
	"github.com/smarter-project/smarter-device-manager/internal/httpserve"
)

// probeTimeout bounds how long a probe waits for the event loop.
const probeTimeout = 2 * time.Second

// healthHandler serves /metrics (Prometheus), /healthz (the event loop answers and the uevent
// monitor runs) and /readyz (the kubelet socket is there, every running
// resource is registered with the kubelet, and every --require resource
// has a healthy device).
func healthHandler(stats *daemon.Stats, probe *daemon.Probe, require []string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler(stats, probe))
	check := func(w http.ResponseWriter, r *http.Request) (daemon.Report, bool) {
		ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
		defer cancel()
		rep, err := probe.Check(ctx)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return rep, false
		}
		return rep, true
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		rep, ok := check(w, r)
		if !ok {
			return
		}
		if !rep.Monitor {
			http.Error(w, "the uevent monitor is not running", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		rep, ok := check(w, r)
		if !ok {
			return
		}
		var problems []string
		if rep.WaitingForKubelet {
			problems = append(problems, "waiting for the kubelet: no kubelet.sock in the plugin directory (DRA mode: the kubelet has not registered the driver)")
		}
		for name, st := range rep.Resources {
			if !st.Registered {
				problems = append(problems, name+": not registered with the kubelet")
			}
		}
		for _, name := range require {
			if st, ok := rep.Resources[name]; !ok || st.Healthy == 0 {
				problems = append(problems, name+": required, and no healthy device")
			}
		}
		if len(problems) > 0 {
			slices.Sort(problems)
			http.Error(w, strings.Join(problems, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ready: %d resources\n", len(rep.Resources))
	})
	return mux
}

// serveHTTP serves h on addr (plain HTTP/1.1, see httpserve) until stop
// is called; stop shuts the server down (in-flight requests get 2 s) and
// waits for it.
func serveHTTP(addr string, h http.Handler, what string, log zerolog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := httpserve.Serve(ln, h, func(p any) {
		log.Error().Str("panic", fmt.Sprint(p)).Msg(what + ": a request's handler panicked")
	})
	log.Info().Str("addr", ln.Addr().String()).Msg(what + " listening")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Close(ctx)
	}, nil
}
