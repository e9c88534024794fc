package plugin

import (
	"context"
	"fmt"
	"os"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Registrar is what the servers of one kubelet share. It sends their
// Register requests over one gRPC connection: with hundreds of resources, a
// connection per registration was most of the start-up time (connection
// set-up and its tracing, for one small request each). And it passes the
// plugin-directory watch ([Registrar.WatchDir]) and [Registrar.Kick] on to
// every server running with it. Safe for concurrent use; Close releases the
// connection.
type Registrar struct {
	mu   sync.Mutex
	path string
	id   fileID // the kubelet socket conn was dialled for
	conn *grpc.ClientConn

	fan fanOut
	// dirMu makes the servers' sockets one at a time (Server.listen).
	dirMu sync.Mutex

	// hub serves every socket of the servers running with this registrar
	// (hub.go); it runs while sockets > 0.
	hubMu   sync.Mutex
	hub     *hub
	sockets int
}

// NewRegistrar returns a registrar with no connection yet.
func NewRegistrar() *Registrar { return &Registrar{} }

// Register sends req to the kubelet socket at path and returns the identity
// of the socket it went to. A socket replaced since the last call (kubelet
// restarted) gets a new connection.
func (r *Registrar) Register(ctx context.Context, path string, req *pluginapi.RegisterRequest) (fileID, error) {
	// Stat before dialing: if the socket is replaced in between, the next
	// check sees a new identity and registers once more, which is harmless.
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, fmt.Errorf("kubelet socket: %w", err)
	}
	conn, err := r.connFor(path, fi)
	if err != nil {
		return fileID{}, err
	}
	if _, err := pluginapi.NewRegistrationClient(conn).Register(ctx, req); err != nil {
		// A kubelet that hangs may have this connection stuck: the next
		// attempt dials afresh. A refusal (kubelet answered) keeps it, so
		// one rejected resource does not cut the others' registrations.
		if c := status.Code(err); c == codes.Unavailable || c == codes.DeadlineExceeded {
			r.drop(conn)
		}
		return fileID{}, fmt.Errorf("register with kubelet at %s: %w", path, err)
	}
	return newFileID(fi), nil
}

func (r *Registrar) connFor(path string, fi os.FileInfo) (*grpc.ClientConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil && r.path == path && r.id.same(fi) {
		return r.conn, nil
	}
	if r.conn != nil {
		r.conn.Close()
		r.conn = nil
	}
	conn, err := grpc.NewClient("unix:"+path, grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Small requests only: no need for gRPC's 32 KiB buffers.
		grpc.WithReadBufferSize(0), grpc.WithWriteBufferSize(0), grpc.WithSharedWriteBuffer(true))
	if err != nil {
		return nil, fmt.Errorf("dial kubelet at %s: %w", path, err)
	}
	r.conn, r.path, r.id = conn, path, newFileID(fi)
	return conn, nil
}

func (r *Registrar) drop(conn *grpc.ClientConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == conn {
		r.conn.Close()
		r.conn = nil
	}
}

// Close closes the shared connection; a later Register dials again.
func (r *Registrar) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		r.conn.Close()
		r.conn = nil
	}
}
