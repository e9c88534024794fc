package plugin

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// The registrar's one connection to the kubelet is kept across calls and
// across a refusal (the kubelet answered: one rejected resource must not
// cut the others' registrations), and dropped when the kubelet is
// Unavailable, so the next call dials afresh. (make mutate: either test
// could be inverted with every other test green.)
func TestRegistrarKeepsItsConnectionUnlessTheKubeletIsUnavailable(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k, err := plugintest.StartFakeKubelet(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Stop()
	reg := NewRegistrar()
	defer reg.Close()
	conn := func() *grpc.ClientConn {
		reg.mu.Lock()
		defer reg.mu.Unlock()
		return reg.conn
	}
	register := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// A version the kubelet refuses (InvalidArgument): an answer.
		req := &pluginapi.RegisterRequest{Version: "v0", Endpoint: "x.sock", ResourceName: "smarter-devices/x"}
		if _, err := reg.Register(ctx, k.Socket(), req); err == nil {
			t.Fatal("Register with version v0 succeeded")
		}
	}
	register()
	first := conn()
	if first == nil {
		t.Fatal("no connection after a refused registration; want it kept")
	}
	register()
	if c := conn(); c != first {
		t.Errorf("a second call to the same kubelet dialled anew (%p, was %p)", c, first)
	}
	k.SetRejectRegistrations(true) // Unavailable
	register()
	if c := conn(); c == first {
		t.Errorf("the connection was kept after Unavailable; want it dropped")
	}
}
