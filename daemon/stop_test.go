package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin"
)

// HTTP/2 frame types and flags a holder uses (RFC 9113 §6).
const (
	frameHeaders   = 0x1
	frameSettings  = 0x4
	framePing      = 0x6
	flagAck        = 0x1
	flagEndHeaders = 0x4
)

// holder is a kubelet connection to a plugin socket that never lets go:
// it speaks just enough HTTP/2 to be a live gRPC client connection and
// starts an Allocate call whose request it never sends. A stopping server
// lets calls in progress finish within its grace period, then cuts their
// connections: each stop is as slow as the plugin allows.
type holder struct {
	conn   net.Conn
	live   chan struct{} // closed when the server acknowledged our PING: it has our call
	closed chan struct{} // closed when the server closed the connection
}

// hold connects to a plugin socket and returns once the server has the
// held call.
func hold(t *testing.T, socket string) *holder {
	t.Helper()
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h := &holder{conn: conn, live: make(chan struct{}), closed: make(chan struct{})}
	frame := func(typ, flags byte, stream uint32, payload []byte) []byte {
		f := make([]byte, 9, 9+len(payload))
		f[0], f[1], f[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
		f[3], f[4] = typ, flags
		f[5], f[6], f[7], f[8] = byte(stream>>24), byte(stream>>16), byte(stream>>8), byte(stream)
		return append(f, payload...)
	}
	// The call's headers as HPACK literals without indexing (RFC 7541
	// §6.2.2), no END_STREAM: the request body never comes.
	var headers []byte
	for _, kv := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", "/v1beta1.DevicePlugin/Allocate"},
		{":authority", "localhost"}, {"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		headers = append(headers, 0, byte(len(kv[0])))
		headers = append(headers, kv[0]...)
		headers = append(headers, byte(len(kv[1])))
		headers = append(headers, kv[1]...)
	}
	var out []byte
	out = append(out, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"...)
	out = append(out, frame(frameSettings, 0, 0, nil)...)
	out = append(out, frame(frameHeaders, flagEndHeaders, 1, headers)...)
	// The server reads frames in order: its PING acknowledgement means it
	// has taken the call.
	out = append(out, frame(framePing, 0, 0, []byte("holder!!"))...)
	if _, err := conn.Write(out); err != nil {
		t.Fatal(err)
	}
	go h.read()
	select {
	case <-h.live:
	case <-h.closed:
		t.Fatalf("%s: the server closed the connection before serving it", socket)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no PING acknowledgement", socket)
	}
	return h
}

func (h *holder) read() {
	defer close(h.closed)
	head := make([]byte, 9)
	for {
		if _, err := io.ReadFull(h.conn, head); err != nil {
			return
		}
		n := int(head[0])<<16 | int(head[1])<<8 | int(head[2])
		payload := make([]byte, n)
		if _, err := io.ReadFull(h.conn, payload); err != nil {
			return
		}
		if typ, flags := head[3], head[4]; typ == framePing && flags&flagAck != 0 && string(payload) == "holder!!" {
			close(h.live)
		}
	}
}

// cut reports whether the server closed the connection (waiting a while:
// the close reaches us after the server's stop returned).
func (h *holder) cut() bool {
	select {
	case <-h.closed:
		return true
	case <-time.After(20 * time.Second):
		return false
	}
}

// A reload that drops many resources while the kubelet keeps its
// connections to them open: each server's stop lasts its whole grace
// period, and the event loop must not wait for them one after another
// (50 × 2 s would leave it, and /healthz, unanswered for 100 s). It
// stops them all at once and keeps answering the probe while they stop.
func TestReloadDroppingManyResourcesKeepsTheLoopAnswering(t *testing.T) {
	const n = 50
	h := newHarness(t, "- devicematch: ^ttyS[0-9]+$\n  nummaxdevices: 1\n", nil)
	for i := range n {
		h.dev.Set(fmt.Sprintf("ttyS%d", i), charDev)
	}
	h.events.fire("add", "ttyS0")
	for i := range n {
		h.waitFor(fmt.Sprintf("smarter-devices/ttyS%d", i), "served", health(1, pluginapi.Healthy))
	}
	socks := sockets(t, h.dir)
	if len(socks) != n {
		t.Fatalf("%d sockets, want %d", len(socks), n)
	}
	holders := make([]*holder, 0, n)
	for _, s := range socks {
		holders = append(holders, hold(t, s))
	}

	h.rewrite(filepath.Join(h.dir, "rules.yaml"), "- devicematch: ^nothing$\n  nummaxdevices: 1\n")
	h.waitReloads(1) // the probe answered after the reload's reconcile
	if rep := h.report(); len(rep.Resources) != 0 {
		t.Errorf("resources %v still reported after their rule was dropped", rep.Resources)
	}
	testutil.Eventually(t, 20*time.Second, "every server stopped and reaped", func() bool {
		return h.report().Stopping == 0 && len(sockets(t, h.dir)) == 0
	})
	for i, hd := range holders {
		if !hd.cut() {
			t.Errorf("%s: the held connection is still open; want the server to have cut it (else this test held nothing)", socks[i])
		}
	}
}

// A resource asked for again while its previous server still stops (a
// reload that drops its rule and one that brings it back, within the
// plugin's grace period) starts only once that server has returned: the
// old server's clean-up, its CDI spec's removal, must not undo the new
// one's.
func TestStartWaitsForTheStoppingServer(t *testing.T) {
	cdiDir := filepath.Join(testutil.ShortTempDir(t), "cdi")
	opts := Options{
		Config:    parseRules(t, "rules.yaml", "version: v1\nrules:\n  - match: ^ttyS0$\n    cdi: true\n"),
		PluginDir: testutil.ShortTempDir(t),
		CDIDir:    cdiDir,
		Logger:    zerolog.New(zerolog.NewTestWriter(t)),
	}
	if err := opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	d := newDaemon(opts)
	d.reg = plugin.NewRegistrar()
	defer d.reg.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer func() {
		cancel()
		d.serveWG.Wait()
	}()

	r := plainRes("smarter-devices/ttyS0", "ttyS0", 1)
	r.socket, r.cdiKind = "smarter-ttyS0.sock", "smarter-devices/ttyS0"
	spec := cdiFile(cdiDir, r.cdiKind)
	// The previous server of that name: cancelled, its Run not returned.
	old := &running{cancel: func() {}, done: make(chan struct{}), snap: plugin.Snapshot{CDIKind: r.cdiKind}}
	d.stopping[r.name] = old
	start := []action{{op: opStart, name: r.name, res: r, changes: []unitChange{{device: "ttyS0", what: unitAdded}}}}

	d.apply(ctx, start)
	if _, started := d.servers[r.name]; started {
		t.Fatalf("started while the previous server of %s still stops", r.name)
	}
	if _, running := d.resources[r.name]; running {
		t.Errorf("the plan's view has %s running, though it did not start", r.name)
	}
	if _, err := os.Stat(spec); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CDI spec written before the previous server stopped: %v", err)
	}
	if d.reap() {
		t.Errorf("reap asked for a reconcile with nothing reaped")
	}

	close(old.done) // the previous server returned
	if !d.reap() {
		t.Fatalf("reap did not ask for a reconcile to start what waited")
	}
	if len(d.stopping) != 0 {
		t.Errorf("stopping %v after the reap", d.stopping)
	}
	d.apply(ctx, start) // the reconcile's plan asks again
	if _, started := d.servers[r.name]; !started {
		t.Fatalf("%s not started once its previous server stopped", r.name)
	}
	if _, err := os.Stat(spec); err != nil {
		t.Errorf("the new server's CDI spec: %v", err)
	}
}
