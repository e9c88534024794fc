package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/plugin"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

const (
	resourceName = "smarter-devices/ttyUSB0"
	socketName   = "smarter-ttyUSB0.sock"
	// waitTimeout bounds every wait; it is a failure bound, not a timing
	// assertion.
	waitTimeout = 20 * time.Second
)

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger()
}

func waitCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func startKubelet(t *testing.T, dir string, opts ...plugintest.Option) *plugintest.FakeKubelet {
	t.Helper()
	k, err := plugintest.StartFakeKubelet(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	return k
}

func options(t *testing.T, dir string) plugin.Options {
	return plugin.Options{
		ResourceName:  resourceName,
		Socket:        socketName,
		Dir:           dir,
		Logger:        testLogger(t),
		MinBackoff:    time.Millisecond,
		MaxBackoff:    20 * time.Millisecond,
		CheckInterval: -1, // only Kick (and lost streams) trigger re-checks
	}
}

// running is a Server whose Run goroutine the test owns.
type running struct {
	*plugin.Server
	cancel context.CancelFunc
	done   chan error
}

// run starts srv.Run; the cleanup stops it and waits for it, so that
// nothing logs after the test ends.
func run(t *testing.T, srv *plugin.Server) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and returns its result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after its context ended")
		return nil
	}
}

// watch runs WatchDir on dir, kicking srv on every change, and returns
// once the watch is known to be in place, with the names of the changes
// from then on (after srv was kicked for each).
func watch(t *testing.T, dir string, srv *plugin.Server) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	names := make(chan string, 64)
	done := make(chan error, 1)
	go func() {
		done <- plugin.WatchDir(ctx, dir, testLogger(t), func(name string) {
			srv.Kick()
			select {
			case names <- name:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchDir: %v", err)
		}
	})
	waitName(t, names, "") // the watch is in place
	return names
}

func waitName(t *testing.T, names <-chan string, want string) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case got := <-names:
			if got == want {
				return
			}
		case <-timeout:
			t.Fatalf("no change named %q", want)
		}
	}
}

// waitStatus waits until cond holds for srv's status.
func waitStatus(t *testing.T, srv *plugin.Server, what string, cond func(plugin.Status) bool) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		st, changed := srv.Status()
		if cond(st) {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("server status never became %s; now %+v", what, st)
		}
	}
}

// waitRegistered waits until the fake kubelet has n registrations and a
// live stream of the latest one.
func waitRegistered(t *testing.T, k *plugintest.FakeKubelet, n int) {
	t.Helper()
	err := k.Wait(waitCtx(t), func() bool {
		return k.Registrations(resourceName) == n && k.Streaming(resourceName)
	})
	if err != nil {
		t.Fatalf("want %d registrations with an open stream, have %d (streaming %v): %v",
			n, k.Registrations(resourceName), k.Streaming(resourceName), err)
	}
}

func pluginDevices(devs []*pluginapi.Device) []plugin.Device {
	out := make([]plugin.Device, 0, len(devs))
	for _, d := range devs {
		out = append(out, plugin.Device{ID: d.GetID(), Healthy: d.GetHealth() == pluginapi.Healthy})
	}
	return out
}

// waitDevices waits until the fake kubelet's latest list equals want.
func waitDevices(t *testing.T, k *plugintest.FakeKubelet, want []plugin.Device) {
	t.Helper()
	err := k.WaitFor(waitCtx(t), resourceName, func(got []*pluginapi.Device) bool {
		return got != nil && slices.Equal(pluginDevices(got), want)
	})
	if err != nil {
		t.Fatalf("want devices %v: %v", want, err)
	}
}

func ttySnapshot(devs ...plugin.Device) plugin.Snapshot {
	return plugin.Snapshot{
		Devices: devs,
		Specs: []plugin.DeviceSpec{
			{HostPath: "/dev/ttyUSB0", ContainerPath: "/dev/ttyUSB0", Permissions: "rw"},
			{HostPath: "/dev/serial/by-id/x", ContainerPath: "/dev/serial/by-id/x", Permissions: "rw"},
		},
		Envs: map[string]string{"SMARTER_DEVICE": "ttyUSB0"},
	}
}

func TestRegister(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	srv := run(t, plugin.NewServer(options(t, dir), ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
	waitRegistered(t, k, 1)
	waitStatus(t, srv.Server, "registered", func(st plugin.Status) bool {
		return st.Serving && st.Registered && st.Registrations == 1
	})

	req := k.Request(resourceName)
	if req.GetVersion() != pluginapi.Version || req.GetEndpoint() != socketName || req.GetResourceName() != resourceName {
		t.Errorf("register request = %v", req)
	}
	// GetPreferredAllocation is not offered unless asked for.
	if o := req.GetOptions(); o == nil || o.GetGetPreferredAllocationAvailable() || o.GetPreStartRequired() {
		t.Errorf("register options = %v", o)
	}
	if got := k.Resources(); !slices.Equal(got, []string{resourceName}) {
		t.Errorf("resources = %v", got)
	}

	c, err := k.Client(resourceName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PreStartContainer(waitCtx(t), &pluginapi.PreStartContainerRequest{DevicesIds: []string{"0"}}); err != nil {
		t.Errorf("PreStartContainer: %v", err)
	}
}

// Options.PreferredAllocation decides whether the kubelet is offered
// GetPreferredAllocation; the registration and GetDevicePluginOptions (which
// the kubelet calls while handling Register) say the same.
func TestPreferredAllocationOption(t *testing.T) {
	for _, want := range []bool{false, true} {
		t.Run(fmt.Sprint("PreferredAllocation=", want), func(t *testing.T) {
			dir := testutil.ShortTempDir(t)
			k := startKubelet(t, dir)
			opts := options(t, dir)
			opts.PreferredAllocation = want
			run(t, plugin.NewServer(opts, ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
			waitRegistered(t, k, 1)
			reg, answered := k.Request(resourceName).GetOptions(), k.PluginOptions(resourceName)
			if reg == nil || reg.GetGetPreferredAllocationAvailable() != want || reg.GetPreStartRequired() {
				t.Errorf("RegisterRequest options = %v; want GetPreferredAllocationAvailable %v", reg, want)
			}
			if answered == nil || answered.GetGetPreferredAllocationAvailable() != want || answered.GetPreStartRequired() {
				t.Errorf("GetDevicePluginOptions = %v; want GetPreferredAllocationAvailable %v", answered, want)
			}
		})
	}
}

func TestListAndWatch(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	a, b, c := plugin.Device{ID: "a", Healthy: true}, plugin.Device{ID: "b", Healthy: true}, plugin.Device{ID: "c", Healthy: true}
	srv := run(t, plugin.NewServer(options(t, dir), ttySnapshot(a, b)))
	waitRegistered(t, k, 1)

	waitDevices(t, k, []plugin.Device{a, b})

	srv.Update(ttySnapshot(a, b, c))
	waitDevices(t, k, []plugin.Device{a, b, c})

	sick := plugin.Device{ID: "b", Healthy: false}
	srv.Update(ttySnapshot(a, sick, c))
	waitDevices(t, k, []plugin.Device{a, sick, c})

	srv.Update(ttySnapshot(a, b, c))
	waitDevices(t, k, []plugin.Device{a, b, c})

	// An identical snapshot sends nothing: the next message is the next
	// real change.
	before := k.Messages(resourceName)
	srv.Update(ttySnapshot(a, b, c))
	srv.Update(ttySnapshot(a))
	waitDevices(t, k, []plugin.Device{a})
	if got := k.Messages(resourceName); got != before+1 {
		t.Errorf("messages after an identical and a real update = %d, want %d", got, before+1)
	}

	// The whole list may become empty.
	srv.Update(plugin.Snapshot{})
	err := k.WaitFor(waitCtx(t), resourceName, func(d []*pluginapi.Device) bool { return d != nil && len(d) == 0 })
	if err != nil {
		t.Fatal(err)
	}
}

// bigSnapshot has n devices with long IDs, so that each ListAndWatch
// message is about n*50 bytes; the first is healthy or not.
func bigSnapshot(n int, firstHealthy bool) plugin.Snapshot {
	snap := ttySnapshot()
	for i := range n {
		snap.Devices = append(snap.Devices, plugin.Device{ID: fmt.Sprintf("%040d", i), Healthy: i > 0 || firstHealthy})
	}
	return snap
}

// A kubelet that opens ListAndWatch and stops reading: HTTP/2 flow control
// fills (its stream window is gRPC's minimum, 64 KiB, and each message is
// about 50 KiB), and the server's Send blocks. Update must not care: each
// of many Updates returns, the stream's end (its context cancelled) still
// ends ListAndWatch, a new stream gets the latest list, and Run stops
// cleanly. (An Update that sent on the streams itself would hang here.)
func TestUpdateNeverBlocksOnAStalledStream(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	opts := options(t, dir)
	opts.Logger = zerolog.Nop() // a line per Update would only be noise
	srv := run(t, plugin.NewServer(opts, bigSnapshot(1000, true)))
	waitStatus(t, srv.Server, "serving", func(st plugin.Status) bool { return st.Serving })

	conn, err := grpc.NewClient("unix:"+srv.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, stopStream := context.WithCancel(context.Background())
	defer stopStream()
	stream, err := pluginapi.NewDevicePluginClient(conn).ListAndWatch(sctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the stream is open; no more reading
		t.Fatal(err)
	}
	waitStatus(t, srv.Server, "one stream open", func(st plugin.Status) bool { return st.Streams == 1 })

	const updates = 200 // 10 MB of messages: far beyond any window or buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range updates {
			srv.Update(bigSnapshot(1000, i%2 == 1))
		}
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout): // a hang detector, not a timing
		t.Fatalf("Update blocked on a stream that stopped reading")
	}

	stopStream()
	waitStatus(t, srv.Server, "the stalled stream ended with its context", func(st plugin.Status) bool { return st.Streams == 0 })

	// The server still serves the newest list to the next reader.
	conn2, err := grpc.NewClient("unix:"+srv.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel2()
	stream2, err := pluginapi.NewDevicePluginClient(conn2).ListAndWatch(ctx2, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream2.Recv()
	if err != nil {
		t.Fatal(err)
	}
	last := bigSnapshot(1000, (updates-1)%2 == 1).Devices
	if got := pluginDevices(resp.GetDevices()); !slices.Equal(got, last) {
		t.Errorf("a new stream got a list of %d devices, first %+v; want the last update's (first %+v)", len(got), got[:1], last[:1])
	}
	cancel2()

	if err := srv.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(srv.SocketPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestUpdateCopiesSnapshot(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	snap := ttySnapshot(plugin.Device{ID: "a", Healthy: true})
	srv := run(t, plugin.NewServer(options(t, dir), plugin.Snapshot{}))
	srv.Update(snap)
	// The caller reuses its slices and map.
	snap.Devices[0].ID = "changed"
	snap.Specs[0].HostPath = "/dev/changed"
	snap.Envs["SMARTER_DEVICE"] = "changed"

	waitRegistered(t, k, 1)
	waitDevices(t, k, []plugin.Device{{ID: "a", Healthy: true}})
	c, err := k.Client(resourceName)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Allocate(waitCtx(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"a"}}}})
	if err != nil {
		t.Fatal(err)
	}
	cr := resp.GetContainerResponses()[0]
	if cr.GetDevices()[0].GetHostPath() != "/dev/ttyUSB0" || cr.GetEnvs()["SMARTER_DEVICE"] != "ttyUSB0" {
		t.Errorf("Allocate saw the caller's later changes: %v", cr)
	}
}

func TestAllocate(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	snap := ttySnapshot(plugin.Device{ID: "0", Healthy: true}, plugin.Device{ID: "1", Healthy: true}, plugin.Device{ID: "2", Healthy: false})
	srv := run(t, plugin.NewServer(options(t, dir), snap))
	waitRegistered(t, k, 1)
	c, err := k.Client(resourceName)
	if err != nil {
		t.Fatal(err)
	}

	resp, err := c.Allocate(waitCtx(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"0"}},
		{DevicesIds: []string{"1"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetContainerResponses()); n != 2 {
		t.Fatalf("%d container responses, want 2", n)
	}
	for i, cr := range resp.GetContainerResponses() {
		var got []plugin.DeviceSpec
		for _, d := range cr.GetDevices() {
			got = append(got, plugin.DeviceSpec{HostPath: d.GetHostPath(), ContainerPath: d.GetContainerPath(), Permissions: d.GetPermissions()})
		}
		if !slices.Equal(got, snap.Specs) {
			t.Errorf("container %d: devices %v, want %v", i, got, snap.Specs)
		}
		if len(cr.GetEnvs()) != 1 || cr.GetEnvs()["SMARTER_DEVICE"] != "ttyUSB0" {
			t.Errorf("container %d: envs %v", i, cr.GetEnvs())
		}
	}
	// One call answered (the daemon's allocations_total counts these);
	// the refused ones below count nothing.
	countsOne := func(when string) {
		t.Helper()
		if st, _ := srv.Status(); st.Allocations != 1 {
			t.Errorf("%s: Status().Allocations = %d, want 1", when, st.Allocations)
		}
	}
	countsOne("after one Allocate")

	for _, tc := range []struct {
		id   string
		code codes.Code
	}{
		{"nope", codes.NotFound},
		{"2", codes.FailedPrecondition},
	} {
		_, err := c.Allocate(waitCtx(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
			{DevicesIds: []string{"0", tc.id}},
		}})
		if status.Code(err) != tc.code {
			t.Errorf("Allocate(%q): %v, want code %v", tc.id, err, tc.code)
		}
		if st, _ := status.FromError(err); !strings.Contains(st.Message(), tc.id) {
			t.Errorf("Allocate(%q): message %q does not name the device", tc.id, st.Message())
		}
	}
	_, err = c.Allocate(waitCtx(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"nope"}}}})
	if st, _ := status.FromError(err); !strings.Contains(st.Message(), resourceName) {
		t.Errorf("NotFound message %q does not name the resource", st.Message())
	}
	countsOne("after three refused")
}

func TestGetPreferredAllocation(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	srv := run(t, plugin.NewServer(options(t, dir), ttySnapshot(
		plugin.Device{ID: "ttyUSB10", Healthy: true},
		plugin.Device{ID: "ttyUSB2", Healthy: true},
		plugin.Device{ID: "ttyUSB1", Healthy: true},
		plugin.Device{ID: "ttyUSB3", Healthy: false},
		plugin.Device{ID: "ttyUSB0", Healthy: true},
	)))
	waitRegistered(t, k, 1)
	c, err := k.Client(resourceName)
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"ttyUSB10", "ttyUSB3", "ttyUSB2", "ttyUSB1", "ttyUSB0", "unknown"}
	resp, err := c.GetPreferredAllocation(waitCtx(t), &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: all, MustIncludeDeviceIDs: []string{"ttyUSB10"}, AllocationSize: 3},
		{AvailableDeviceIDs: all, AllocationSize: 2},
		{AvailableDeviceIDs: all, AllocationSize: 10},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"ttyUSB10", "ttyUSB0", "ttyUSB1"},
		{"ttyUSB0", "ttyUSB1"},
		{"ttyUSB0", "ttyUSB1", "ttyUSB2", "ttyUSB10"},
	}
	for i, cr := range resp.GetContainerResponses() {
		if !slices.Equal(cr.GetDeviceIDs(), want[i]) {
			t.Errorf("container %d: %v, want %v", i, cr.GetDeviceIDs(), want[i])
		}
	}
	if st, _ := srv.Status(); st.PreferredAllocations != 1 {
		t.Errorf("Status.PreferredAllocations = %d after one call; want 1", st.PreferredAllocations)
	}
}

func TestReregisterAfterWipe(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	srv := run(t, plugin.NewServer(options(t, dir), ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
	watch(t, dir, srv.Server)
	waitRegistered(t, k, 1)

	// The kubelet removes plugin sockets when it starts.
	if err := plugintest.WipeSockets(dir); err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, k, 2)
	waitDevices(t, k, []plugin.Device{{ID: "0", Healthy: true}})
	if _, err := os.Stat(filepath.Join(dir, plugintest.KubeletSocket)); err != nil {
		t.Errorf("WipeSockets removed kubelet.sock: %v", err)
	}
	fi, err := os.Stat(srv.SocketPath())
	if err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Errorf("our socket after the wipe: %v, %v", fi, err)
	}
}

func TestReregisterWithNewKubelet(t *testing.T) {
	for _, tc := range []struct {
		name  string
		watch bool
	}{
		{"kicked by WatchDir", true},
		// Without directory events, the kubelet closing our stream and the
		// periodic check (the safety net while no kubelet socket is
		// there) are enough.
		{"stream closed and periodic check", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testutil.ShortTempDir(t)
			k1 := startKubelet(t, dir)
			opts := options(t, dir)
			if !tc.watch {
				opts.CheckInterval = 10 * time.Millisecond
			}
			srv := run(t, plugin.NewServer(opts, ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
			if tc.watch {
				watch(t, dir, srv.Server)
			}
			waitRegistered(t, k1, 1)
			// The kubelet counts the registration before its reply reaches
			// the server: stopping it in between would fail the first one.
			waitStatus(t, srv.Server, "registered once", func(st plugin.Status) bool { return st.Registrations >= 1 })

			k1.Stop()
			k2 := startKubelet(t, dir)
			waitRegistered(t, k2, 1)
			waitDevices(t, k2, []plugin.Device{{ID: "0", Healthy: true}})
			waitStatus(t, srv.Server, "registered twice", func(st plugin.Status) bool {
				return st.Registered && st.Registrations >= 2
			})
		})
	}
}

// With no kubelet socket, a server serves, says it waits for the kubelet,
// and makes no registration attempt, however often it is kicked: there is
// nothing to retry until kubelet.sock appears. Its appearance is a change
// in the plugin directory, and that kick alone (no timer, no periodic
// check) makes it register.
func TestKubeletAbsentAtStart(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	opts := options(t, dir)
	// A server that retried while waiting would do so every millisecond.
	opts.MinBackoff, opts.MaxBackoff = time.Millisecond, time.Millisecond
	srv := run(t, plugin.NewServer(opts, ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
	names := watch(t, dir, srv.Server)
	// Serving comes first, whether or not a kubelet is there.
	waitStatus(t, srv.Server, "serving, waiting for the kubelet", func(st plugin.Status) bool {
		return st.Serving && st.WaitingForKubelet
	})
	// Changes in the directory that are not the kubelet's each kick it.
	for i := range 20 {
		name := fmt.Sprintf("other-%d", i)
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		waitName(t, names, name)
	}
	if st, _ := srv.Status(); st.Attempts != 0 || st.Registered || !st.WaitingForKubelet {
		t.Fatalf("status with no kubelet socket, after 20 kicks = %+v; want no registration attempt, waiting", st)
	}

	k := startKubelet(t, dir)
	waitRegistered(t, k, 1)
	waitDevices(t, k, []plugin.Device{{ID: "0", Healthy: true}})
	waitStatus(t, srv.Server, "registered, not waiting", func(st plugin.Status) bool {
		return st.Registered && !st.WaitingForKubelet && st.Attempts >= 1
	})
}

// A kubelet that goes away (its socket removed) puts a registered server
// back to waiting, with no attempt until the next kubelet's socket appears.
func TestKubeletGoneWaitsForTheNext(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	opts := options(t, dir)
	opts.MinBackoff, opts.MaxBackoff = time.Millisecond, time.Millisecond
	k1 := startKubelet(t, dir)
	srv := run(t, plugin.NewServer(opts, ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
	names := watch(t, dir, srv.Server)
	waitRegistered(t, k1, 1)
	waitStatus(t, srv.Server, "registered", func(st plugin.Status) bool { return st.Registered })

	k1.Stop() // removes kubelet.sock and ends the stream
	waitStatus(t, srv.Server, "waiting for the next kubelet", func(st plugin.Status) bool {
		return !st.Registered && st.WaitingForKubelet
	})
	before, _ := srv.Status()
	for i := range 20 {
		name := fmt.Sprintf("other-%d", i)
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		waitName(t, names, name)
	}
	if st, _ := srv.Status(); st.Attempts != before.Attempts {
		t.Fatalf("%d registration attempts with no kubelet socket; want none", st.Attempts-before.Attempts)
	}
	k2 := startKubelet(t, dir)
	waitRegistered(t, k2, 1)
	waitDevices(t, k2, []plugin.Device{{ID: "0", Healthy: true}})
}

func TestRegistrationRejected(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir, plugintest.RejectRegistrations())
	srv := run(t, plugin.NewServer(options(t, dir), ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
	if err := k.Wait(waitCtx(t), func() bool { return k.Attempts(resourceName) >= 3 }); err != nil {
		t.Fatal(err)
	}
	if srv.Registered() || k.Registrations(resourceName) != 0 {
		t.Fatal("registered while the kubelet rejects")
	}
	k.SetRejectRegistrations(false)
	waitRegistered(t, k, 1)
	waitStatus(t, srv.Server, "registered", func(st plugin.Status) bool { return st.Registered })
}

func TestRunStopsWithOpenStream(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	srv := run(t, plugin.NewServer(options(t, dir), ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
	waitRegistered(t, k, 1)

	if err := srv.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(srv.SocketPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if err := k.Wait(waitCtx(t), func() bool { return !k.Streaming(resourceName) }); err != nil {
		t.Errorf("stream still open: %v", err)
	}
	if st, _ := srv.Status(); st.Serving || st.Registered {
		t.Errorf("status after Run returned: %+v", st)
	}
}

func TestStaleFileReplaced(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	stale := filepath.Join(dir, socketName)
	if err := os.WriteFile(stale, []byte("left by a crashed run"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := run(t, plugin.NewServer(options(t, dir), ttySnapshot(plugin.Device{ID: "0", Healthy: true})))
	waitRegistered(t, k, 1)
	fi, err := os.Lstat(srv.SocketPath())
	if err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Errorf("socket path: %v, %v", fi, err)
	}
}

func TestRunInvalidOptions(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	for _, o := range []plugin.Options{
		{Socket: socketName, Dir: dir},
		{ResourceName: resourceName, Socket: "a/b.sock", Dir: dir},
		{ResourceName: resourceName, Socket: "kubelet.sock", Dir: dir},
		{ResourceName: resourceName, Socket: socketName},
		{ResourceName: resourceName, Socket: socketName, Dir: "/" + string(make([]byte, 120))},
	} {
		if err := plugin.NewServer(o, plugin.Snapshot{}).Run(context.Background()); err == nil {
			t.Errorf("Run(%+v) = nil, want an error", o)
		}
	}
}

func TestRunTwice(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	k := startKubelet(t, dir)
	srv := run(t, plugin.NewServer(options(t, dir), plugin.Snapshot{}))
	waitRegistered(t, k, 1)
	if err := srv.Run(context.Background()); err == nil {
		t.Error("a second concurrent Run succeeded")
	}
}

func TestWatchDirSurvivesRecreation(t *testing.T) {
	dir := filepath.Join(testutil.ShortTempDir(t), "plugins")
	ctx, cancel := context.WithCancel(context.Background())
	names := make(chan string, 64)
	done := make(chan error, 1)
	go func() {
		done <- plugin.WatchDir(ctx, dir, testLogger(t), func(name string) {
			select {
			case names <- name:
			default:
			}
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchDir: %v", err)
		}
	}()

	create := func(name string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// WatchDir creates the directory and says when it watches it.
	waitName(t, names, "")
	create("one")
	waitName(t, names, "one")
	if err := os.Remove(filepath.Join(dir, "one")); err != nil {
		t.Fatal(err)
	}
	waitName(t, names, "one")

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	waitName(t, names, "") // removed
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	waitName(t, names, "") // watched again
	create("two")
	waitName(t, names, "two")
}

// A server stopped right after an update still delivers it: gRPC writes a
// ListAndWatch's last message and the end of its stream after the call
// has returned, and a stop that cut the connection as soon as no call was
// in progress lost them (d0c8f05: with --remove-after=1ms the kubelet
// never saw the device turn unhealthy before its resource went). Many
// rounds, since the loss is a race the fix closes.
func TestStopDeliversTheLastList(t *testing.T) {
	for round := range 20 {
		dir := testutil.ShortTempDir(t)
		k := startKubelet(t, dir)
		well, sick := plugin.Device{ID: "0", Healthy: true}, plugin.Device{ID: "0", Healthy: false}
		srv := run(t, plugin.NewServer(options(t, dir), ttySnapshot(well)))
		waitRegistered(t, k, 1)
		waitDevices(t, k, []plugin.Device{well})
		srv.Update(ttySnapshot(sick))
		if err := srv.stop(t); err != nil {
			t.Fatalf("round %d: Run: %v", round, err)
		}
		if err := k.Wait(waitCtx(t), func() bool { return !k.Streaming(resourceName) }); err != nil {
			t.Fatalf("round %d: stream still open: %v", round, err)
		}
		if got := pluginDevices(k.Devices(resourceName)); !slices.Equal(got, []plugin.Device{sick}) {
			t.Fatalf("round %d: the kubelet's last list %v once the server stopped; want %v (the update before the stop)", round, got, []plugin.Device{sick})
		}
		k.Stop()
	}
}
