// Package httpserve serves an http.Handler over plain HTTP/1.1, one request
// per connection, for the daemon's small local endpoints (/metrics,
// /healthz, /readyz, pprof).
//
// net/http's Server cannot be linked without the TLS stack (its connection
// handler completes TLS handshakes): crypto/tls, x509 and their ciphers
// were 1.3 MiB of the daemon's 11 MiB binary, for endpoints that are never
// served over TLS. This server keeps net/http's request parser
// (http.ReadRequest), its handlers and ServeMux, and writes the response
// itself: status line, headers with Content-Length and Connection: close,
// then the body, which the handler's writes buffer. What it leaves out:
// keep-alive, streamed (chunked) responses, request bodies beyond what a
// handler reads, HTTP/2, TLS.
package httpserve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

const (
	// headerTimeout bounds reading a request, as net/http's
	// ReadHeaderTimeout did.
	headerTimeout = 5 * time.Second
	// writeTimeout bounds writing a response.
	writeTimeout = 10 * time.Second
	// maxConns bounds the connections served at once; more wait to be
	// accepted.
	maxConns = 16
)

// Server serves one listener.
type Server struct {
	ln      net.Listener
	h       http.Handler
	onPanic func(any)
	ctx     context.Context // ends when Close is called: handlers see it
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
}

// Serve serves h on ln in its own goroutines until Close. onPanic, when
// not nil, is told of a handler's panic (the request gets a 500).
func Serve(ln net.Listener, h http.Handler, onPanic func(any)) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{ln: ln, h: h, onPanic: onPanic, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	s.wg.Go(s.accept)
	return s
}

func (s *Server) accept() {
	sem := make(chan struct{}, maxConns)
	for {
		sem <- struct{}{}
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				<-sem
				continue
			}
			return // closed
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() { <-sem }()
			s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		})
	}
}

// Close stops accepting, gives the requests being handled until ctx ends,
// then closes their connections, and waits for every goroutine.
func (s *Server) Close(ctx context.Context) {
	s.ln.Close()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
}

// serve reads one request from c and writes its response.
func (s *Server) serve(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(headerTimeout))
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
		return
	}
	req.RemoteAddr = c.RemoteAddr().String()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	resp := &response{header: http.Header{}}
	s.handle(resp, req.WithContext(ctx))
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	_ = resp.writeTo(c, req.Method == http.MethodHead)
}

// handle runs the handler, turning a panic into a 500.
func (s *Server) handle(resp *response, req *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if s.onPanic != nil {
				s.onPanic(p)
			}
			*resp = response{header: http.Header{}}
			http.Error(resp, "internal error", http.StatusInternalServerError)
		}
	}()
	s.h.ServeHTTP(resp, req)
}

// response buffers what a handler writes.
type response struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *response) Header() http.Header { return r.header }

func (r *response) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *response) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(p)
}

// writeTo writes the response as HTTP/1.1; head leaves the body out.
func (r *response) writeTo(c net.Conn, head bool) error {
	r.WriteHeader(http.StatusOK)
	h := r.header
	if h.Get("Content-Type") == "" && r.body.Len() > 0 {
		h.Set("Content-Type", http.DetectContentType(r.body.Bytes()))
	}
	h.Set("Content-Length", strconv.Itoa(r.body.Len()))
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	w := bufio.NewWriter(c)
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\n", r.status, http.StatusText(r.status))
	if err := h.Write(w); err != nil {
		return err
	}
	_, _ = w.WriteString("\r\n")
	if !head {
		_, _ = w.Write(r.body.Bytes())
	}
	return w.Flush()
}
