package httpserve

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func serve(t *testing.T, h http.Handler, onPanic func(any)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(ln, h, onPanic)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return "http://" + ln.Addr().String()
}

func testMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/text", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		io.WriteString(w, "a 1\n")
		io.WriteString(w, "b 2\n")
	})
	mux.HandleFunc("/unavailable", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not ready: x", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/query", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Query().Get("gc")+" "+r.Method)
	})
	mux.HandleFunc("/panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	return mux
}

// What a client of the endpoints sees is what net/http's server gave it:
// status, headers, body, 404 from the mux, and a HEAD without a body.
func TestResponses(t *testing.T) {
	var mu sync.Mutex
	var panics []any
	base := serve(t, testMux(), func(p any) {
		mu.Lock()
		defer mu.Unlock()
		panics = append(panics, p)
	})
	for _, c := range []struct {
		method, path string
		status       int
		ctype, body  string
	}{
		{"GET", "/text", 200, "text/plain; version=0.0.4", "a 1\nb 2\n"},
		{"GET", "/unavailable", 503, "text/plain; charset=utf-8", "not ready: x\n"},
		{"GET", "/query?gc=1", 200, "text/plain; charset=utf-8", "1 GET"},
		{"GET", "/nothing", 404, "text/plain; charset=utf-8", "404 page not found\n"},
		{"GET", "/panic", 500, "text/plain; charset=utf-8", "internal error\n"},
	} {
		req, _ := http.NewRequest(c.method, base+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s %s: reading the body: %v", c.method, c.path, err)
		}
		if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != c.ctype || string(body) != c.body {
			t.Errorf("%s %s: %d %q %q; want %d %q %q", c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, c.status, c.ctype, c.body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(panics) != 1 || panics[0] != "boom" {
		t.Errorf("panics reported: %v; want [boom]", panics)
	}
}

// raw sends req as written and returns everything the server sent back
// before it closed the connection.
func raw(t *testing.T, base, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, req)
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A HEAD gets the headers a GET would, with no body after them.
func TestHead(t *testing.T) {
	base := serve(t, testMux(), nil)
	got := raw(t, base, "HEAD /text HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(got)), &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("HEAD answer %q: %v", got, err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != 8 || !strings.HasSuffix(got, "\r\n\r\n") {
		t.Errorf("HEAD answer %q: want 200, Content-Length 8 and nothing after the headers", got)
	}
}

// A request that is not HTTP gets a 400, and the server goes on serving.
func TestBadRequest(t *testing.T) {
	base := serve(t, testMux(), nil)
	if got := raw(t, base, "NOT HTTP\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400 ") {
		t.Errorf("answer to garbage: %q; want a 400", got)
	}
	resp, err := http.Get(base + "/text")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("after a bad request: %s", resp.Status)
	}
}

// Close waits for a request being handled, up to its context; a handler
// still running then sees its request's context end.
func TestCloseWaitsThenCancels(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	ended := make(chan error, 1)
	s := Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		ended <- r.Context().Err()
	}), nil)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	s.Close(ctx)
	select {
	case err := <-ended:
		if err == nil {
			t.Error("the handler's context ended without an error")
		}
	default:
		t.Error("Close returned while the handler still ran")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("still accepting after Close")
	}
}
