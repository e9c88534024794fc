package main

import (
	"context"
	"fmt"
	stdlog "log"
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
		// A flapping device does not make the node unready (the others
		// serve); it is said, under either answer.
		var flapping []string
		for name, st := range rep.Resources {
			if st.Flapping > 0 {
				flapping = append(flapping, fmt.Sprintf("%s: %d devices held for flapping (coming and going), unhealthy until quiet", name, st.Flapping))
			}
		}
		slices.Sort(flapping)
		if len(problems) > 0 {
			slices.Sort(problems)
			http.Error(w, strings.Join(append(problems, flapping...), "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ready: %d resources\n", len(rep.Resources))
		for _, f := range flapping {
			fmt.Fprintln(w, f)
		}
	})
	return mux
}

// serveHTTP serves h on addr with net/http's server, its limits set (see
// httpserve), until stop is called; stop shuts the server down (in-flight
// requests get 2 s) and waits for it. loopbackOnly warns when addr is
// reachable from other hosts.
func serveHTTP(addr string, h http.Handler, what string, loopbackOnly bool, log zerolog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	// net/http's own errors (an accept error it retries, a handler's
	// panic) go to the daemon's log.
	errLog := stdlog.New(logWriter{log.With().Str("server", what).Logger()}, "", 0)
	srv := httpserve.Serve(ln, h, httpserve.Options{ErrorLog: errLog})
	log.Info().Str("addr", ln.Addr().String()).Msg(what + " listening")
	if a, ok := ln.Addr().(*net.TCPAddr); loopbackOnly && ok && !a.IP.IsLoopback() {
		log.Warn().Str("addr", ln.Addr().String()).Msg(what + " reachable from other hosts: serve it on a loopback address (127.0.0.1:6060), it lets a client run profiles")
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Close(ctx)
	}, nil
}

// logWriter turns a standard logger's lines into zerolog events.
type logWriter struct{ log zerolog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Warn().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
