package plugintest_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

func TestWipeSockets(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k, err := plugintest.StartFakeKubelet(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Stop()
	lis, err := net.Listen("unix", filepath.Join(dir, "plugin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if err := os.WriteFile(filepath.Join(dir, "checkpoint"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	if err := plugintest.WipeSockets(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"plugin.sock": false, "kubelet.sock": true, "checkpoint": true} {
		_, err := os.Lstat(filepath.Join(dir, name))
		if exists := err == nil; exists != want {
			t.Errorf("%s exists = %v, want %v (%v)", name, exists, want, err)
		}
	}
}

func TestRegisterUnservedEndpointFails(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k, err := plugintest.StartFakeKubelet(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Like the kubelet, the fake dials the endpoint while handling Register.
	if err := register(ctx, k.Socket(), "nobody.sock"); err == nil {
		t.Error("registering an endpoint nobody serves succeeded")
	}
	if got := k.Attempts("example.com/x"); got != 1 {
		t.Errorf("attempts = %d, want 1", got)
	}
	if got := k.Registrations("example.com/x"); got != 0 {
		t.Errorf("registrations = %d, want 0", got)
	}
	k.Stop()
	k.Stop() // idempotent
	if _, err := os.Lstat(k.Socket()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("kubelet.sock after Stop: %v", err)
	}
}

func register(ctx context.Context, kubeletSock, endpoint string) error {
	conn, err := grpcClient(kubeletSock)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: endpoint, ResourceName: "example.com/x",
	})
	return err
}

func grpcClient(path string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix:"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
}
