package dra

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	drahealthv1 "k8s.io/kubelet/pkg/apis/dra-health/v1"
	drapbv1 "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
)

// dial connects to one of the driver's sockets, as the kubelet does.
func dial(t *testing.T, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// The kubelet's side, over the driver's own sockets: the plugin watcher
// asks the registration socket who is there and says it registered the
// driver (the daemon is ready from then on); the DRA manager prepares a
// claim it reads from the API server, watches the health of its device
// (unhealthy once unplugged), and unprepares it.
func TestKubeletPath(t *testing.T) {
	h, gps := pluggedGPS(t, harnessOpts{removeAfter: time.Hour})
	ctx := t.Context()

	reg := registerapi.NewRegistrationClient(dial(t, filepath.Join(h.dir, "reg", testDriver+"-reg.sock")))
	info, err := reg.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	endpoint := filepath.Join(h.dir, "plugin", "dra.sock")
	if info.Type != registerapi.DRAPlugin || info.Name != testDriver || info.Endpoint != endpoint ||
		!slices.Contains(info.SupportedVersions, drapbv1.DRAPluginService) || !slices.Contains(info.SupportedVersions, drahealthv1.DRAResourceHealthService) {
		t.Errorf("GetInfo %+v; want a DRA plugin %s at %s with the v1 DRA and health services", info, testDriver, endpoint)
	}
	if rep, _ := h.probe.Check(ctx); !rep.WaitingForKubelet || h.drv.Registered() {
		t.Errorf("before the kubelet registered it: registered %v, report %+v", h.drv.Registered(), rep)
	}
	if _, err := reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if rep, _ := h.probe.Check(ctx); rep.WaitingForKubelet || !h.drv.Registered() || !rep.Resources["smarter-devices/gps"].Registered {
		t.Errorf("after the kubelet registered it: registered %v, report %+v", h.drv.Registered(), rep)
	}

	c := allocated("uid-k", []string{gpsDevice})
	if _, err := h.client.ResourceV1().ResourceClaims(c.Namespace).Create(ctx, c, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, endpoint)
	node := drapbv1.NewDRAPluginClient(conn)
	claims := []*drapbv1.Claim{{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}}
	resp, err := node.NodePrepareResources(ctx, &drapbv1.NodePrepareResourcesRequest{Claims: claims})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.Claims[string(c.UID)]
	if got == nil || got.Error != "" || len(got.Devices) != 1 || !slices.Equal(got.Devices[0].CdiDeviceIds, []string{testDriver + "/claim=uid-k-" + gpsDevice}) {
		t.Fatalf("NodePrepareResources: %v", got)
	}

	watch, cancel := context.WithTimeout(ctx, 20*time.Second) // each report comes at once: no resend is waited for
	defer cancel()
	stream, err := drahealthv1.NewDRAResourceHealthClient(conn).NodeWatchResources(watch, &drahealthv1.NodeWatchResourcesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	health := func(what string, want drahealthv1.HealthStatus, message string) {
		t.Helper()
		for {
			r, err := stream.Recv()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			for _, d := range r.Devices {
				if d.GetDevice().GetDeviceName() == gpsDevice && d.GetDevice().GetPoolName() == testNode && d.GetHealth() == want && d.GetMessage() == message {
					return
				}
			}
		}
	}
	health("plugged", drahealthv1.HealthStatus_HEALTHY, "")
	h.m.Unplug(gps)
	h.fire("remove", "ttyUSB0")
	health("unplugged", drahealthv1.HealthStatus_UNHEALTHY, "ttyUSB0 unplugged")

	if resp, err := node.NodeUnprepareResources(ctx, &drapbv1.NodeUnprepareResourcesRequest{Claims: claims}); err != nil || resp.Claims[string(c.UID)].Error != "" {
		t.Fatalf("NodeUnprepareResources: %v %v", resp, err)
	}
	if _, err := h.spec(c.UID); err == nil {
		t.Error("the claim's spec is still there after NodeUnprepareResources")
	}
}

// A fatal error met in the background stops the daemon, which returns
// it; a recoverable one before it did not.
func TestFatalErrorStops(t *testing.T) {
	h := newHarness(t, hwfixture.New(false), "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n", harnessOpts{})
	h.waitSlices("published", func(s []resourceapi.ResourceSlice) bool { return len(s) == 1 })
	recoverable := errors.New("the API server refused a slice")
	h.drv.HandleError(context.Background(), errors.Join(recoverable, kubeletplugin.ErrRecoverable), "publishing")
	fatal := errors.New("the registration server failed")
	h.drv.HandleError(context.Background(), fatal, "registrar gRPC server failed")
	select {
	case err := <-h.done:
		h.cancel = nil
		if !errors.Is(err, fatal) {
			t.Errorf("daemon.Run = %v, want the fatal error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon still runs after a fatal error")
	}
}
