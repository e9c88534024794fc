package httpserve

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

func serve(t *testing.T, h http.Handler, o Options) (string, *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(ln, h, o)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return ln.Addr().String(), s
}

func testMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/text", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		io.WriteString(w, "a 1\n")
	})
	mux.HandleFunc("/panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	return mux
}

// get fetches path on a new connection and returns the status and body.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// raw sends req as written and returns what the server sent back before it
// closed the connection (or the read timed out).
func raw(t *testing.T, addr string, req []byte) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	go func() { _, _ = c.Write(req) }() // the server may answer before it read everything
	b, _ := io.ReadAll(c)
	return string(b)
}

// A request line or header block past the limit gets net/http's 431, and
// the server goes on serving.
func TestOversizedRequestGets431(t *testing.T) {
	addr, _ := serve(t, testMux(), Options{})
	long := append([]byte("GET /"), bytes.Repeat([]byte("a"), 1<<20)...)
	for name, req := range map[string][]byte{
		"request line": append(long, " HTTP/1.1\r\nHost: x\r\n\r\n"...),
		"header":       []byte("GET /text HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("b", 1<<20) + "\r\n\r\n"),
	} {
		if got := raw(t, addr, req); !strings.HasPrefix(got, "HTTP/1.1 431 ") {
			t.Errorf("%s of 1 MiB: answer %.60q; want a 431", name, got)
		}
	}
	if code, body := get(t, addr, "/text"); code != 200 || body != "a 1\n" {
		t.Errorf("after the oversized requests: %d %q", code, body)
	}
}

// A handler's panic goes to the error log; the server goes on serving.
func TestPanicIsLogged(t *testing.T) {
	var buf testutil.SyncBuffer
	addr, _ := serve(t, testMux(), Options{ErrorLog: log.New(&buf, "", 0)})
	c := &http.Client{Timeout: 5 * time.Second}
	if resp, err := c.Get("http://" + addr + "/panic"); err == nil {
		resp.Body.Close()
		t.Errorf("a panicking handler answered %s; want the connection closed", resp.Status)
	}
	if code, _ := get(t, addr, "/text"); code != 200 {
		t.Errorf("after a panic: %d", code)
	}
	if !strings.Contains(buf.String(), "boom") {
		t.Errorf("error log %q does not name the panic", buf.String())
	}
}

// With the budget spent by connections that send nothing, a new one is
// served: the oldest waiting connection is closed to make room.
func TestBudgetEvictsTheOldestWaiting(t *testing.T) {
	addr, s := serve(t, testMux(), Options{MaxConns: 4})
	var held []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
		waitHeld(t, s, len(held))
	}
	if code, _ := get(t, addr, "/text"); code != 200 {
		t.Fatalf("with the budget spent: %d", code)
	}
	// The first connection was the one evicted: the server closed it.
	_ = held[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := held[0].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("the oldest idle connection: read %v; want EOF (closed by the server)", err)
	}
	for _, c := range held[1:] {
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
			t.Errorf("a younger idle connection: read %v; want it still open", err)
		}
	}
	if _, evicted := s.ln.Stats(); evicted != 1 {
		t.Errorf("evicted %d; want 1", evicted)
	}
}

// A connection whose request is in a handler is evicted only when no
// connection is waiting: the waiting one goes first, even if younger.
func TestBudgetPrefersWaitingOverActive(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	mux := testMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "slow done")
	})
	addr, s := serve(t, mux, Options{MaxConns: 2})
	slow := make(chan string, 1)
	go func() {
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + addr + "/slow")
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(b)
	}()
	<-entered
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	waitHeld(t, s, 2)
	if code, _ := get(t, addr, "/text"); code != 200 {
		t.Fatalf("with the budget spent: %d", code)
	}
	close(release)
	if got := <-slow; got != "slow done" {
		t.Errorf("the request in a handler: %q; want it answered (the idle connection evicted instead)", got)
	}
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("the idle connection: read %v; want EOF", err)
	}
}

// Out of file descriptors, the listener closes a held connection so that
// the next accept can succeed, and hands the error on to net/http (which
// logs it and retries).
func TestOutOfDescriptorsEvicts(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	fl := &failingListener{errs: []error{&net.OpError{Op: "accept", Err: syscall.EMFILE}}, conns: []net.Conn{a}}
	l := newListener(fl, 8)
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	l.ConnState(c, http.StateNew)
	if _, err := l.Accept(); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("accept: %v; want EMFILE passed on", err)
	}
	if held, evicted := l.Stats(); held != 0 || evicted != 1 {
		t.Errorf("held %d, evicted %d; want 0 and 1", held, evicted)
	}
	_ = b.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("the held connection: read %v; want it closed", err)
	}
}

// failingListener returns its connections first, then its errors.
type failingListener struct {
	net.Listener
	conns []net.Conn
	errs  []error
}

func (f *failingListener) Accept() (net.Conn, error) {
	if len(f.conns) > 0 {
		c := f.conns[0]
		f.conns = f.conns[1:]
		return c, nil
	}
	err := f.errs[0]
	f.errs = f.errs[1:]
	return nil, err
}

// Close gives a request in a handler until its context ends, then cuts
// it: the handler sees its request's context end.
func TestCloseCancelsWhatIsLeft(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan error, 1)
	addr, s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		ended <- r.Context().Err()
	}), Options{})
	go func() {
		resp, err := http.Get("http://" + addr + "/")
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
	case <-time.After(5 * time.Second):
		t.Error("the handler's context did not end after Close")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still accepting after Close")
	}
}

func waitHeld(t *testing.T, s *Server, n int) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, "connections held", func() bool {
		held, _ := s.ln.Stats()
		return held == n
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
