package plugin_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// These tests are a client of a plugin socket that is not the kubelet and
// floods it: connections beyond the cap, oversized and malformed frames,
// silent and idle connections, streams never read. The fake kubelet's own
// connection must keep working throughout, Update must never wait, and
// what the server holds must stay bounded.

// HTTP/2 as a raw client writes it (RFC 9113).
const (
	h2Preface      = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	frameData      = 0x0
	frameHeaders   = 0x1
	frameRSTStream = 0x3
	frameSettings  = 0x4
	frameGoAway    = 0x7
	flagEndStream  = 0x1
	flagEndHeaders = 0x4
)

// frame is one HTTP/2 frame: its 9-byte header, then payload.
func frame(typ, flags byte, stream uint32, payload []byte) []byte {
	n := len(payload)
	b := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[5:], stream&0x7fffffff)
	return append(b, payload...)
}

// hpackLiteral encodes headers as HPACK literals without indexing, names
// and values plain (each under 127 bytes): valid, if not compact.
func hpackLiteral(kv ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		b = append(b, 0x00, byte(len(kv[i])))
		b = append(b, kv[i]...)
		b = append(b, byte(len(kv[i+1])))
		b = append(b, kv[i+1]...)
	}
	return b
}

// dialRaw connects to a plugin socket; cleanup closes the connection.
func dialRaw(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// handshake writes what a gRPC client writes first: the preface and its
// SETTINGS. Write errors are not checked: a refused connection may be
// closed already (served says).
func handshake(c net.Conn) {
	_, _ = c.Write(append([]byte(h2Preface), frame(frameSettings, 0, 0, nil)...))
}

// served reports whether the server serves c: it writes its SETTINGS
// first on every connection it serves, and closes a refused one without a
// byte.
func served(t *testing.T, c net.Conn) bool {
	t.Helper()
	typ, _, _, _, err := readFrame(c, waitTimeout)
	switch {
	case err == nil:
		if typ != frameSettings {
			t.Fatalf("the server's first frame is of type %d, want SETTINGS", typ)
		}
		return true
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		return false
	default:
		t.Fatalf("reading the server's first frame: %v", err)
		return false
	}
}

// readFrame reads one frame from c within limit.
func readFrame(c net.Conn, limit time.Duration) (typ, flags byte, stream uint32, payload []byte, err error) {
	c.SetReadDeadline(time.Now().Add(limit))
	defer c.SetReadDeadline(time.Time{})
	var h [9]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, 0, 0, nil, err
	}
	payload = make([]byte, int(h[0])<<16|int(h[1])<<8|int(h[2]))
	if _, err := io.ReadFull(c, payload); err != nil {
		return 0, 0, 0, nil, err
	}
	return h[3], h[4], binary.BigEndian.Uint32(h[5:]) & 0x7fffffff, payload, nil
}

// waitClosed reads c until the server closes it, failing after limit, and
// returns how long that took and the frame types read on the way.
func waitClosed(t *testing.T, c net.Conn, limit time.Duration) (time.Duration, []byte) {
	t.Helper()
	start := time.Now()
	var types []byte
	for {
		typ, _, _, _, err := readFrame(c, time.Until(start.Add(limit)))
		switch {
		case err == nil:
			types = append(types, typ)
			continue
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
			return time.Since(start), types
		default:
			t.Fatalf("the connection is still open after %v (frames read: %v): %v", limit, types, err)
			return 0, nil
		}
	}
}

// startRegistered runs a server with the plugin-directory watch in front of
// a fake kubelet and waits for its registration.
func startRegistered(t *testing.T, snap plugin.Snapshot) (string, *plugintest.FakeKubelet, *running) {
	t.Helper()
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	opts := options(t, dir)
	opts.Logger = zerolog.Nop() // the floods below would make most of it
	srv := run(t, plugin.NewServer(opts, snap))
	watch(t, dir, srv.Server)
	waitRegistered(t, k, 1)
	waitStatus(t, srv.Server, "registered", func(st plugin.Status) bool { return st.Registered })
	return dir, k, srv
}

// Hundreds of connections to one socket: the socket serves up to its cap
// and closes the others at once, costing nothing; the kubelet's connection
// keeps working; a kubelet that comes while every slot is held cannot get
// in, and registers as soon as the flooders go.
func TestConnectionFloodBeyondCap(t *testing.T) {
	dir, k1, srv := startRegistered(t, ttySnapshot(plugin.Device{ID: "0", Healthy: true}))
	ref := runtime.NumGoroutine()

	const flood = 300
	var held []net.Conn
	for range flood {
		c := dialRaw(t, srv.SocketPath())
		handshake(c)
		if served(t, c) {
			held = append(held, c)
		} else {
			c.Close()
		}
	}
	t.Logf("%d connections: %d served, %d closed at once", flood, len(held), flood-len(held))
	// The kubelet holds one connection.
	if want := plugin.MaxConnsPerSocket - 1; len(held) != want {
		t.Errorf("%d flooders served, want %d (the cap less the kubelet's)", len(held), want)
	}
	// A served connection costs gRPC a few goroutines; a refused one none.
	if g := runtime.NumGoroutine() - ref; g > 4*plugin.MaxConnsPerSocket {
		t.Errorf("%d more goroutines after the flood, want at most %d", g, 4*plugin.MaxConnsPerSocket)
	}

	// The kubelet's connection still works: a change reaches its stream,
	// and Allocate is answered.
	two := []plugin.Device{{ID: "0", Healthy: true}, {ID: "1", Healthy: true}}
	srv.Update(ttySnapshot(two...))
	waitDevices(t, k1, two)
	client, err := k1.Client(resourceName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Allocate(waitCtx(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"1"}}}}); err != nil {
		t.Fatalf("Allocate on the kubelet's connection during the flood: %v", err)
	}

	// The kubelet goes, and a flooder takes its slot.
	k1.Stop()
	deadline := time.Now().Add(waitTimeout)
	for {
		c := dialRaw(t, srv.SocketPath())
		handshake(c)
		if served(t, c) {
			held = append(held, c)
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the kubelet's slot never came free")
		}
	}
	// A new kubelet cannot reach the socket while every slot is held...
	k2 := startKubelet(t, dir)
	if err := k2.Wait(waitCtx(t), func() bool { return k2.Attempts(resourceName) >= 1 }); err != nil {
		t.Fatalf("no registration attempt with the new kubelet: %v", err)
	}
	if n := k2.Registrations(resourceName); n != 0 {
		t.Fatalf("the new kubelet accepted %d registrations through a socket whose every slot is held", n)
	}
	// ...and gets in once the flooders go.
	for _, c := range held {
		c.Close()
	}
	waitRegistered(t, k2, 1)
	waitDevices(t, k2, two)
	waitGoroutines(t, ref, "goroutines back to the level before the flood")
}

// A request beyond MaxRecvMsgSize is refused with ResourceExhausted, also
// one whose length prefix lies and whose body never comes; the largest the
// kubelet could send (10,000 IDs of the longest form) is answered.
func TestOversizedMessageRefused(t *testing.T) {
	_, k, srv := startRegistered(t, ttySnapshot(plugin.Device{ID: "0", Healthy: true}))
	conn, err := grpc.NewClient("unix:"+srv.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pluginapi.NewDevicePluginClient(conn)

	// The longest ID: a 63-byte key and "-9999".
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s-%04d", strings.Repeat("k", 63), i)
		}
		return out
	}
	in := ids(conf10k)
	if _, err := client.GetPreferredAllocation(waitCtx(t), &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{AvailableDeviceIDs: in, AllocationSize: 1}}}); err != nil {
		t.Errorf("GetPreferredAllocation with %d IDs of %d bytes: %v", len(in), len(in[0]), err)
	}
	over := ids(plugin.MaxRecvMsgSize/len(in[0]) + 1)
	_, err = client.Allocate(waitCtx(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: over}}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Allocate with %d IDs (over %d bytes): %v; want ResourceExhausted", len(over), plugin.MaxRecvMsgSize, err)
	}
	// The connection is still served.
	if _, err := client.GetDevicePluginOptions(waitCtx(t), &pluginapi.Empty{}); err != nil {
		t.Errorf("GetDevicePluginOptions after the refusal: %v", err)
	}

	// A raw client: a valid call whose length prefix claims 4 GiB, then
	// nothing. The call is ended at once, not left waiting for the body.
	c := dialRaw(t, srv.SocketPath())
	handshake(c)
	if !served(t, c) {
		t.Fatal("a raw connection was refused")
	}
	_, _ = c.Write(frame(frameHeaders, flagEndHeaders, 1, hpackLiteral(
		":method", "POST", ":scheme", "http", ":path", "/v1beta1.DevicePlugin/Allocate",
		":authority", "localhost", "content-type", "application/grpc", "te", "trailers")))
	_, _ = c.Write(frame(frameData, 0, 1, []byte{0, 0xff, 0xff, 0xff, 0xff}))
	for ended := false; !ended; {
		typ, flags, stream, _, err := readFrame(c, waitTimeout)
		if err != nil {
			t.Fatalf("a call claiming a 4 GiB request is not ended: %v", err)
		}
		ended = stream == 1 && (typ == frameRSTStream || typ == frameHeaders && flags&flagEndStream != 0)
	}

	// The kubelet's stream still follows changes.
	two := []plugin.Device{{ID: "0", Healthy: true}, {ID: "1", Healthy: true}}
	srv.Update(ttySnapshot(two...))
	waitDevices(t, k, two)
}

// conf10k is conf.MaxCount: the most IDs one rule advertises.
const conf10k = 10000

// Bytes that are not HTTP/2, and frames that break it, close their own
// connection at once; the kubelet's is not affected.
func TestMalformedFramesCloseTheirConnection(t *testing.T) {
	_, k, srv := startRegistered(t, ttySnapshot(plugin.Device{ID: "0", Healthy: true}))
	for _, tc := range []struct {
		name  string
		bytes func() []byte
	}{
		{"garbage instead of the preface", func() []byte { return []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n") }},
		{"headers that do not decode", func() []byte {
			return append([]byte(h2Preface), slices.Concat(frame(frameSettings, 0, 0, nil),
				frame(frameHeaders, flagEndHeaders|flagEndStream, 1, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}))...)
		}},
		{"a frame far over the frame size", func() []byte {
			f := frame(frameData, 0, 1, nil)
			f[0], f[1], f[2] = 0xff, 0xff, 0xff // 16 MiB announced, none sent
			return append([]byte(h2Preface), slices.Concat(frame(frameSettings, 0, 0, nil), f)...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, srv.SocketPath())
			_, _ = c.Write(tc.bytes())
			took, frames := waitClosed(t, c, plugin.HandshakeTimeout/2)
			t.Logf("closed after %v; frames from the server: %v", took, frames)
		})
	}
	two := []plugin.Device{{ID: "0", Healthy: true}, {ID: "1", Healthy: true}}
	srv.Update(ttySnapshot(two...))
	waitDevices(t, k, two)
}

// A connection that never completes the HTTP/2 handshake is closed after
// HandshakeTimeout; one that completes it and makes no call is sent away
// (GOAWAY) after IdleTimeout and closed a few seconds later (gRPC lets a
// client finish what it started).
func TestSilentAndIdleConnectionsClosed(t *testing.T) {
	_, _, srv := startRegistered(t, ttySnapshot(plugin.Device{ID: "0", Healthy: true}))
	t.Run("silent", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, srv.SocketPath())
		took, _ := waitClosed(t, c, plugin.HandshakeTimeout+5*time.Second)
		t.Logf("a silent connection was closed after %v", took)
	})
	t.Run("preface only", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, srv.SocketPath())
		_, _ = c.Write([]byte(h2Preface))
		took, _ := waitClosed(t, c, plugin.HandshakeTimeout+5*time.Second)
		t.Logf("a connection that sent only the preface was closed after %v", took)
	})
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, srv.SocketPath())
		handshake(c)
		took, frames := waitClosed(t, c, plugin.IdleTimeout+15*time.Second)
		t.Logf("an idle connection was closed after %v; frames from the server: %v", took, frames)
		if took < plugin.IdleTimeout/2 {
			t.Errorf("an idle connection was closed after %v, long before the idle timeout %v", took, plugin.IdleTimeout)
		}
		if !slices.Contains(frames, frameGoAway) {
			t.Errorf("an idle connection was closed without a GOAWAY (frames %v)", frames)
		}
	})
}

// One connection has at most MaxStreams calls open; a gRPC client's next
// call waits for one to end.
func TestStreamsPerConnectionBounded(t *testing.T) {
	_, _, srv := startRegistered(t, ttySnapshot(plugin.Device{ID: "0", Healthy: true}))
	conn, err := grpc.NewClient("unix:"+srv.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pluginapi.NewDevicePluginClient(conn)
	cancels := make([]context.CancelFunc, plugin.MaxStreams)
	for i := range cancels {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cancels[i] = cancel
		stream, err := client.ListAndWatch(ctx, &pluginapi.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	waitStatus(t, srv.Server, "every stream open", func(st plugin.Status) bool { return st.Streams == plugin.MaxStreams+1 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := client.GetDevicePluginOptions(ctx, &pluginapi.Empty{}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a call beyond %d streams: %v; want it to wait (DeadlineExceeded)", plugin.MaxStreams, err)
	}
	cancels[0]()
	if _, err := client.GetDevicePluginOptions(waitCtx(t), &pluginapi.Empty{}); err != nil {
		t.Errorf("a call once a stream ended: %v", err)
	}
}

// Flooders hold every free connection of a socket, each with every stream
// it may open a ListAndWatch that it never reads, while 100 updates of a
// 1,000-device list are pushed: each Update returns at once, the kubelet's
// stream sees the last, and what the server holds for the stalled streams
// stays within what the flow-control windows allow.
func TestStalledStreamsBounded(t *testing.T) {
	_, k, srv := startRegistered(t, bigSnapshot(1000, true))
	waitDevices(t, k, bigSnapshot(1000, true).Devices)
	base := heapInUse()

	conns := plugin.MaxConnsPerSocket - 1 // the kubelet holds one
	for range conns {
		conn, err := grpc.NewClient("unix:"+srv.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for range plugin.MaxStreams {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stream, err := pluginapi.NewDevicePluginClient(conn).ListAndWatch(ctx, &pluginapi.Empty{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil { // open; never read again
				t.Fatal(err)
			}
		}
	}
	stalled := conns * plugin.MaxStreams
	waitStatus(t, srv.Server, "every stalled stream open", func(st plugin.Status) bool { return st.Streams == stalled+1 })

	const updates = 100
	var slowest time.Duration
	for i := range updates {
		snap := bigSnapshot(1000, i%2 == 1)
		start := time.Now()
		srv.Update(snap)
		slowest = max(slowest, time.Since(start))
	}
	// A hang detector: an Update that waited on a stream would take
	// forever, not a second.
	if slowest > time.Second {
		t.Errorf("the slowest of %d Updates took %v", updates, slowest)
	}
	last := bigSnapshot(1000, (updates-1)%2 == 1).Devices
	waitDevices(t, k, last)

	// Per stalled stream the server holds up to three encoded lists (gRPC's
	// write quota lets two through; the third waits) and the list being
	// sent, and the client (in this process too) its receive window: eight
	// lists per stream is the bound, with 8 MiB for the rest. gRPC's own
	// codec held each list in a pooled 1 MiB buffer: 90 MiB here.
	held := heapInUse() - base
	bound := int64(stalled)*8*listSize + 8<<20
	t.Logf("%d stalled streams, %d updates (slowest %v): heap in use grew by %.1f MiB, %.0f KiB per stream (bound %.1f MiB)",
		stalled, updates, slowest, float64(held)/(1<<20), float64(held)/float64(stalled)/(1<<10), float64(bound)/(1<<20))
	if held > bound {
		t.Errorf("heap in use grew by %d bytes with %d stalled streams; bound %d", held, stalled, bound)
	}
}

// listSize is the encoded size of bigSnapshot(1000, ...)'s device list:
// per device a 40-byte ID and "Healthy" or "Unhealthy", with their tags
// and lengths.
const listSize = 1000 * (2 + 2 + 40 + 2 + 9)

// heapInUse is the Go heap in use after a collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// Another client opens ListAndWatch streams of its own and ends them while
// the kubelet's stream stays open: that is no sign the kubelet went, and
// must not make the server register again (a kubelet still connected
// refuses it: "device plugin already connected").
func TestForeignStreamsEndingKeepTheRegistration(t *testing.T) {
	_, k, srv := startRegistered(t, ttySnapshot(plugin.Device{ID: "0", Healthy: true}))
	conn, err := grpc.NewClient("unix:"+srv.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := pluginapi.NewDevicePluginClient(conn).ListAndWatch(ctx, &pluginapi.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		waitStatus(t, srv.Server, "the foreign stream ended", func(st plugin.Status) bool { return st.Streams == 1 })
	}
	// A re-registration would follow within a millisecond or so (the
	// minimum backoff): a quarter second without one is telling.
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	if err := k.Wait(ctx, func() bool { return k.Attempts(resourceName) > 1 }); err == nil {
		t.Fatalf("registered again (%d attempts) after another client's streams ended", k.Attempts(resourceName))
	}
	if st, _ := srv.Status(); !st.Registered || st.Registrations != 1 {
		t.Errorf("status after another client's streams ended: %+v; want registered once", st)
	}
}
