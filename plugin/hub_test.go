package plugin_test

import (
	"slices"
	"strconv"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin"
)

// TestSharedServerTellsSocketsApart runs three servers on one registrar,
// which serves all their sockets with one gRPC server: each socket must
// answer for its own resource (Allocate gives that resource's nodes,
// ListAndWatch its devices), also after one of them stops and another
// starts on the same registrar.
func TestSharedServerTellsSocketsApart(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	reg := plugin.NewRegistrar()
	t.Cleanup(reg.Close)
	start := func(i int) *running {
		o := options(t, dir)
		o.ResourceName = "smarter-devices/tty" + strconv.Itoa(i)
		o.Socket = "tty" + strconv.Itoa(i) + ".sock"
		o.Registrar = reg
		return run(t, plugin.NewServer(o, plugin.Snapshot{
			Devices: []plugin.Device{{ID: "id" + strconv.Itoa(i), Healthy: true}},
			Specs:   []plugin.DeviceSpec{{HostPath: "/dev/tty" + strconv.Itoa(i), ContainerPath: "/dev/tty" + strconv.Itoa(i), Permissions: "rw"}},
		}))
	}
	check := func(i int) {
		t.Helper()
		res := "smarter-devices/tty" + strconv.Itoa(i)
		id := "id" + strconv.Itoa(i)
		if err := k.WaitFor(waitCtx(t), res, func(devs []*pluginapi.Device) bool {
			return len(devs) == 1 && devs[0].GetID() == id
		}); err != nil {
			t.Fatalf("%s: ListAndWatch: %v (devices %v)", res, err, k.Devices(res))
		}
		c, err := k.Client(res)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Allocate(waitCtx(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{id}}}})
		if err != nil {
			t.Fatalf("%s: Allocate: %v", res, err)
		}
		var got []string
		for _, d := range resp.GetContainerResponses()[0].GetDevices() {
			got = append(got, d.GetHostPath())
		}
		if want := []string{"/dev/tty" + strconv.Itoa(i)}; !slices.Equal(got, want) {
			t.Errorf("%s: Allocate gave %v, want %v", res, got, want)
		}
	}
	servers := []*running{start(0), start(1), start(2)}
	for i := range servers {
		check(i)
	}
	if err := servers[1].stop(t); err != nil {
		t.Fatal(err)
	}
	start(3)
	for _, i := range []int{0, 2, 3} {
		check(i)
	}
}
