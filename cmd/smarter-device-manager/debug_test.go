package main

import (
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/daemon"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// A profile's length is capped at maxProfile whatever the client asks, and
// a request with no usable seconds= gets the default.
func TestProfileSecondsCapped(t *testing.T) {
	for _, c := range []struct {
		q    string
		want time.Duration
	}{
		{"", 30 * time.Second},
		{"5", 5 * time.Second},
		{"0.5", 500 * time.Millisecond},
		{"86400", maxProfile},
		{"1e300", maxProfile},
		{"Inf", maxProfile},
		{"NaN", 30 * time.Second},
		{"-3", 30 * time.Second},
		{"x", 30 * time.Second},
		{strconv.FormatFloat(math.MaxFloat64, 'g', -1, 64), maxProfile},
	} {
		r := &http.Request{URL: &url.URL{RawQuery: "seconds=" + url.QueryEscape(c.q)}}
		if got := seconds(r, 30); got != c.want {
			t.Errorf("seconds=%q: %v; want %v", c.q, got, c.want)
		}
	}
}

// A CPU profile ends when its client goes away, not when the seconds it
// asked for run out.
func TestProfileEndsWhenTheClientLeaves(t *testing.T) {
	entered, returned := make(chan struct{}), make(chan struct{})
	h := debugHandler(new(daemon.Stats))
	stop, addr := serveDebug(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		h.ServeHTTP(w, r)
		close(returned)
	}))
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/debug/pprof/profile?seconds=60", nil)
	go func() {
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-entered
	cancel()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("a 60 s profile still ran 10 s after its client left")
	}
}

// A profile longer than the server's write timeout is written whole.
func TestProfileOutlivesTheWriteTimeout(t *testing.T) {
	testutil.SkipShort(t, "runs an 11 s profile")
	stop, addr := serveDebug(t, debugHandler(new(daemon.Stats)))
	defer stop()
	began := time.Now()
	resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=11")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || len(b) == 0 {
		t.Fatalf("an 11 s profile: %v, status %d, %d bytes", err, resp.StatusCode, len(b))
	}
	if d := time.Since(began); d < 11*time.Second {
		t.Errorf("an 11 s profile took %v: cut short", d)
	}
}

func serveDebug(t *testing.T, h http.Handler) (func(), string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	stop, err := serveHTTP(addr, h, "debug endpoints", true, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return stop, addr
}
