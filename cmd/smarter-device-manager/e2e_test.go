package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// These tests run the built binary against the real kernel: zram hot_add and
// hot_remove give real add/remove uevents. A fake kubelet (plugintest) sees
// what a kubelet would: registrations and ListAndWatch streams.

// binary is built once by TestMain for every end-to-end test.
var binary string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sdm-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "smarter-device-manager")
	out, err := exec.Command(goTool(), "build", "-race", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the daemon: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

type daemonProc struct {
	cmd     *exec.Cmd
	log     *testutil.SyncBuffer
	logFile string // where the daemon writes its log itself, if not to log
	done    chan error
}

// startDaemon runs the binary; cleanup stops it (by its own PID) if the test
// did not, and prints its log when the test failed.
func startDaemon(t *testing.T, args ...string) *daemonProc {
	t.Helper()
	return startDaemonLogTo(t, "", args...)
}

// startDaemonLogTo is startDaemon with the daemon's stdout and stderr
// redirected to logFile, as a shell's > does, when it is not "".
func startDaemonLogTo(t *testing.T, logFile string, args ...string) *daemonProc {
	t.Helper()
	p := &daemonProc{log: &testutil.SyncBuffer{}, logFile: logFile, done: make(chan error, 1)}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close() // the daemon has its own copy of the descriptor
		p.cmd.Stdout = f
		p.cmd.Stderr = f
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting the daemon: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil && p.cmd.Process.Pid > 1 {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", p.logText())
		}
	})
	return p
}

// stop sends SIGTERM and returns the exit status.
func (p *daemonProc) stop(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not stop within 20s of SIGTERM")
		return -1
	}
}

// listenAddr waits for the daemon to log that what is listening and
// returns the address it logged (the tests ask for port 0).
func (p *daemonProc) listenAddr(t *testing.T, what string) string {
	t.Helper()
	p.waitLog(t, what)
	for _, line := range strings.Split(p.logText(), "\n") {
		if strings.Contains(line, what) {
			var rec struct{ Addr string }
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatal(err)
			}
			return rec.Addr
		}
	}
	t.Fatalf("no address logged for %s", what)
	return ""
}

// waitLog waits until the daemon has logged want; the log is the only
// outside view of a reload that (rightly) changes nothing.
func (p *daemonProc) waitLog(t *testing.T, want string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, "daemon log "+want, func() bool { return strings.Contains(p.logText(), want) })
}

// logText is what the daemon has logged so far.
func (p *daemonProc) logText() string {
	if p.logFile == "" {
		return p.log.String()
	}
	b, _ := os.ReadFile(p.logFile)
	return string(b)
}

func allHealth(n int, health string) func([]*pluginapi.Device) bool {
	return func(devs []*pluginapi.Device) bool {
		if len(devs) != n {
			return false
		}
		for _, d := range devs {
			if d.Health != health {
				return false
			}
		}
		return true
	}
}

func waitFor(t *testing.T, k *plugintest.FakeKubelet, resource, what string, cond func([]*pluginapi.Device) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.WaitFor(ctx, resource, cond); err != nil {
		t.Fatalf("%s: waiting for %s: %v (last list: %v)", resource, what, err, k.Devices(resource))
	}
}

func TestHotplugKernelEvents(t *testing.T) {
	testkernel.RequireZram(t)
	testHotplug(t, "kernel")
}

func TestHotplugUdevEvents(t *testing.T) {
	testkernel.RequireZram(t)
	testkernel.Udevd(t)
	testHotplug(t, "udev")
}

func testHotplug(t *testing.T, source string) {
	dir := testutil.ShortTempDir(t)
	rules := filepath.Join(dir, "rules.yaml")
	// The old daemon's format, unchanged.
	if err := os.WriteFile(rules, []byte("- devicematch: ^zram[0-9]+$\n  nummaxdevices: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := plugintest.StartFakeKubelet(dir)
	if err != nil {
		t.Fatalf("fake kubelet: %v", err)
	}
	t.Cleanup(k.Stop)

	d := startDaemon(t, "--config", rules, "--plugin-dir", dir, "--uevent-source", source,
		"--log-level", "debug", "--resync", "1h", "--remove-after", "0")

	n := testkernel.ZramAdd(t)
	res := fmt.Sprintf("smarter-devices/zram%d", n)
	waitFor(t, k, res, "2 healthy IDs after hot_add", allHealth(2, pluginapi.Healthy))
	if got := k.Devices(res); got[0].ID != "0" || got[1].ID != "1" {
		t.Errorf("device IDs = %q, %q; want the old daemon's 0, 1", got[0].ID, got[1].ID)
	}

	client, err := k.Client(res)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"1"}}}})
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	node := fmt.Sprintf("/dev/zram%d", n)
	specs := resp.ContainerResponses[0].Devices
	if len(specs) != 1 || specs[0].HostPath != node || specs[0].ContainerPath != node || specs[0].Permissions != "rw" {
		t.Errorf("Allocate specs = %v; want %s rw", specs, node)
	}

	if err := testkernel.ZramRemove(n); err != nil {
		t.Fatalf("hot_remove: %v", err)
	}
	waitFor(t, k, res, "2 unhealthy IDs after hot_remove", allHealth(2, pluginapi.Unhealthy))

	// zram hands out the lowest free number, so the same node comes back
	// unless another test took it in between.
	n2 := testkernel.ZramAdd(t)
	if n2 == n {
		waitFor(t, k, res, "healthy again after re-add", allHealth(2, pluginapi.Healthy))
		if got := k.Registrations(res); got != 1 {
			t.Errorf("%s registered %d times; a device that comes back must not re-register", res, got)
		}
	} else {
		res2 := fmt.Sprintf("smarter-devices/zram%d", n2)
		t.Logf("zram%d came back as zram%d (another test holds the number); checking the new resource", n, n2)
		waitFor(t, k, res2, "2 healthy IDs after hot_add", allHealth(2, pluginapi.Healthy))
	}

	if code := d.stop(t); code != 0 {
		t.Errorf("exit status after SIGTERM = %d, want 0", code)
	}
	socks, _ := filepath.Glob(filepath.Join(dir, "smarter-*.sock"))
	if len(socks) != 0 {
		t.Errorf("sockets left after SIGTERM: %v", socks)
	}
	// The changes came through netlink from the source asked for, not from
	// a resync (set to an hour).
	heard := false
	for _, line := range strings.Split(d.log.String(), "\n") {
		if strings.Contains(line, `"message":"uevent"`) && strings.Contains(line, `"source":"`+source+`"`) {
			heard = true
			break
		}
	}
	if !heard {
		t.Errorf("the daemon logged no uevent from source %s", source)
	}
}

// A rule on identity (subsystem, udev/kernel property, sysfs attribute)
// matches the same device whether it was there at start-up (the scan) or
// plugged in later (a uevent): both read the identity from sysfs.
func TestIdentityScanAndEventAgree(t *testing.T) {
	testkernel.RequireZram(t)
	rules := "version: v1\nrules:\n  - match: ^zram[0-9]+$\n    subsystem: block\n    properties:\n      DEVTYPE: disk\n    attributes:\n      disksize: \"0\"\n"
	start := func() (*daemonProc, *plugintest.FakeKubelet) {
		dir := testutil.ShortTempDir(t)
		file := filepath.Join(dir, "rules.yaml")
		if err := os.WriteFile(file, []byte(rules), 0o644); err != nil {
			t.Fatal(err)
		}
		k, err := plugintest.StartFakeKubelet(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Stop)
		d := startDaemon(t, "--config", file, "--plugin-dir", dir, "--uevent-source", "kernel", "--resync", "1h", "--log-level", "debug")
		// Listening before the device exists: the first daemon learns of it
		// from the kernel's uevent.
		d.waitLog(t, "uevent monitor listening")
		return d, k
	}
	before, kBefore := start() // sees the device through its uevent
	n := testkernel.ZramAdd(t)
	res := fmt.Sprintf("smarter-devices/zram%d", n)
	waitFor(t, kBefore, res, "matched on hotplug", allHealth(1, pluginapi.Healthy))
	after, kAfter := start() // sees it in its start-up scan
	waitFor(t, kAfter, res, "matched at start-up", allHealth(1, pluginapi.Healthy))
	for _, d := range []*daemonProc{before, after} {
		if code := d.stop(t); code != 0 {
			t.Errorf("exit status %d", code)
		}
	}
}

// udevd's symlinks reach the container: a udev rule of the test's own
// (a runtime rule in /run/udev/rules.d, removed afterwards) gives each zram
// device a link; with expose_links the container gets it, pointing at the
// real node, read from udev's database exactly as for a by-id link.
func TestUdevLinksExposed(t *testing.T) {
	testkernel.RequireZram(t)
	testkernel.Udevd(t)
	const rulesDir = "/run/udev/rules.d"
	ruleFile := filepath.Join(rulesDir, "99-smarter-device-manager-test.rules")
	if err := os.MkdirAll(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ruleFile, []byte(`KERNEL=="zram*", SYMLINK+="sdm-test/by-name/%k"`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reload := func() {
		// udevd refuses a request with EAGAIN while busy: retried.
		if err := testkernel.UdevadmControl("--reload"); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() {
		os.Remove(ruleFile)
		reload()
	})
	reload()

	dir := testutil.ShortTempDir(t)
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte("version: v1\nrules:\n  - match: ^zram[0-9]+$\n    expose_links: true\n    describe_env: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := plugintest.StartFakeKubelet(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	d := startDaemon(t, "--config", rules, "--plugin-dir", dir, "--uevent-source", "udev", "--resync", "1h", "--log-level", "debug")
	d.waitLog(t, "uevent monitor listening")
	n := testkernel.ZramAdd(t)
	res := fmt.Sprintf("smarter-devices/zram%d", n)
	waitFor(t, k, res, "healthy", allHealth(1, pluginapi.Healthy))
	client, err := k.Client(res)
	if err != nil {
		t.Fatal(err)
	}
	link := fmt.Sprintf("/dev/sdm-test/by-name/zram%d", n)
	node := fmt.Sprintf("/dev/zram%d", n)
	// The udev event (and so the database entry) may land just after the
	// kernel's: wait for the link in the allocation.
	var got []string
	testutil.Eventually(t, 20*time.Second, "the udev link in the allocation", func() bool {
		resp, err := client.Allocate(t.Context(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0"}}}})
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, s := range resp.ContainerResponses[0].Devices {
			got = append(got, s.HostPath+"→"+s.ContainerPath)
		}
		return slices.Contains(got, node+"→"+link)
	})
	if !slices.Contains(got, node+"→"+node) {
		t.Errorf("specs %v lack the node itself", got)
	}
	if code := d.stop(t); code != 0 {
		t.Errorf("exit status %d", code)
	}
}

// buildImage builds the Dockerfile's image from static builds of this
// package (the device-plugin binary and, with -tags dra, the DRA one) and
// removes it when the test ends; it returns the tag.
func buildImage(t *testing.T) string {
	t.Helper()
	ctxDir := t.TempDir()
	// make image's build (BUILDFLAGS, DRAFLAGS): what ships, and the same
	// build the suite's other static builds make, compiled once.
	for name, tags := range map[string]string{"smarter-device-manager": "grpcnotrace,nethttpomithttp2", draBinary: "grpcnotrace,dra"} {
		bin := filepath.Join(ctxDir, "dist", "linux-"+runtime.GOARCH, name)
		build := exec.Command(goTool(), "build", "-trimpath", "-tags="+tags, "-ldflags=-s -w", "-o", bin, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("static build of %s: %v\n%s", name, err, out)
		}
	}
	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), dockerfile, 0o644); err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("smarter-device-manager:e2e-%d-%s", os.Getpid(), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if out, err := exec.Command("docker", "build", "-q", "--build-arg", "TARGETARCH="+runtime.GOARCH, "-t", tag, ctxDir).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })

	return tag
}

// The FROM scratch image, run the way the DaemonSet runs it (host network
// for netlink, the host's /dev and /sys read-only, the plugin dir and the
// rules mounted), serves the fake kubelet, and a real zram hotplug is seen
// through the container. Skips where there is no Docker engine.
func TestImageServesThroughContainer(t *testing.T) {
	testutil.SkipShort(t, "builds and runs a Docker image")
	testkernel.RequireZram(t)
	if err := exec.Command("docker", "info").Run(); err != nil {
		testutil.SkipEnv(t, "skipping: no Docker engine here (docker info: %v)", err)
	}
	tag := buildImage(t)

	dir := testutil.ShortTempDir(t)
	rules := filepath.Join(dir, "conf.yaml")
	if err := os.WriteFile(rules, []byte("- devicematch: ^zram[0-9]+$\n  nummaxdevices: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := plugintest.StartFakeKubelet(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	state := hotplugThroughContainer(t, k, fmt.Sprintf("sdm-e2e-%d", os.Getpid()), 1, "--network", "host", "--read-only",
		"--cap-drop", "ALL", "--security-opt", "no-new-privileges",
		"-v", "/dev:/dev:ro", "-v", "/sys:/sys:ro", "-v", dir+":"+dir, "-v", rules+":/root/config/conf.yaml:ro",
		tag, "--config", "/root/config/conf.yaml", "--plugin-dir", dir, "--uevent-source", "kernel", "--resync", "1h", "--log-level", "debug")
	if state.exitCode != "0" {
		t.Errorf("container exit code %q, want 0 after SIGTERM", state.exitCode)
	}
	if socks, _ := filepath.Glob(filepath.Join(dir, "smarter-*.sock")); len(socks) != 0 {
		t.Errorf("sockets left after the container stopped: %v", socks)
	}
}

// /healthz and /readyz over HTTP against the running daemon; readiness
// waits for the required hardware and flips when it is hot-removed.
func TestHealthAndReadiness(t *testing.T) {
	testkernel.RequireZram(t)
	dir := testutil.ShortTempDir(t)
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte("- devicematch: ^zram[0-9]+$\n  nummaxdevices: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n := testkernel.ZramAdd(t)
	res := fmt.Sprintf("smarter-devices/zram%d", n)
	d := startDaemon(t, "--config", rules, "--plugin-dir", dir, "--uevent-source", "kernel", "--resync", "1h",
		"--metrics-addr", "127.0.0.1:0", "--require", res)
	addr := d.listenAddr(t, "health endpoints")
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q", code, body)
	}
	// No kubelet yet: the resource is not registered, so not ready, and
	// the daemon says it waits for the kubelet.
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not registered") || !strings.Contains(body, "waiting for the kubelet") {
		t.Errorf("/readyz without a kubelet = %d %q; want 503 naming the unregistered resource and the missing kubelet", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "\nsmarter_device_manager_waiting_for_kubelet 1\n") {
		t.Errorf("/metrics without a kubelet lacks smarter_device_manager_waiting_for_kubelet 1")
	}
	k, err := plugintest.StartFakeKubelet(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	waitFor(t, k, res, "registered", allHealth(1, pluginapi.Healthy))
	testutil.Eventually(t, 20*time.Second, "/readyz 200 with the kubelet and the device", func() bool {
		code, _ := get("/readyz")
		return code == http.StatusOK
	})
	metric := func(line string) bool {
		_, body := get("/metrics")
		return strings.Contains(body, "\n"+line+"\n")
	}
	for _, want := range []string{
		`smarter_device_manager_devices{health="healthy",resource="` + res + `"} 1`,
		`smarter_device_manager_resource_registered{resource="` + res + `"} 1`,
		`smarter_device_manager_event_loop_up 1`,
		`smarter_device_manager_waiting_for_kubelet 0`,
	} {
		if !metric(want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if _, body := get("/metrics"); !strings.Contains(body, "smarter_device_manager_build_info{") || !strings.Contains(body, "smarter_device_manager_uevents_total ") {
		t.Errorf("/metrics lacks build info or the uevent counter")
	}
	if err := testkernel.ZramRemove(n); err != nil {
		t.Fatal(err)
	}
	waitFor(t, k, res, "unhealthy", allHealth(1, pluginapi.Unhealthy))
	if want := `smarter_device_manager_devices{health="unhealthy",resource="` + res + `"} 1`; !metric(want) {
		t.Errorf("/metrics lacks %s after hot_remove", want)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, res+": required") {
		t.Errorf("/readyz with the required device gone = %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz went bad with a device gone: %d", code)
	}
	if code := d.stop(t); code != 0 {
		t.Errorf("exit status %d", code)
	}
}

// A cluster running the old daemon's manifests switches by changing only
// the image: the container gets no arguments, its ConfigMap is mounted as
// the directory /root/config, the plugin dir at kubelet's own path, and
// the old memory limit of 15 MiB. The rules must come from that ConfigMap
// (not the embedded default) and hotplug must work within the limit.
func TestOldManifestSwitchesByImage(t *testing.T) {
	testutil.SkipShort(t, "builds and runs Docker images")
	testkernel.RequireZram(t)
	if err := exec.Command("docker", "info").Run(); err != nil {
		testutil.SkipEnv(t, "skipping: no Docker engine here (docker info: %v)", err)
	}
	tag := buildImage(t)

	dir := testutil.ShortTempDir(t)
	configMap := filepath.Join(dir, "config")
	if err := os.Mkdir(configMap, 0o755); err != nil {
		t.Fatal(err)
	}
	// The old daemon's default rules (the memory limit must hold with
	// them) plus a rule they lack: seeing zram proves the ConfigMap was read.
	oldDefault, err := os.ReadFile("../../conf/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(configMap, "conf.yaml"), append(oldDefault, "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 2\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	plugins := filepath.Join(dir, "plugins")
	k, err := plugintest.StartFakeKubelet(plugins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	// The old DaemonSet's shape: host network, /dev, /sys, the plugin dir
	// and the ConfigMap; no args, no env.
	state := hotplugThroughContainer(t, k, fmt.Sprintf("sdm-e2e-old-%d", os.Getpid()), 2, "--network", "host",
		"--memory", "15m", "--memory-swap", "15m", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
		"-v", "/dev:/dev", "-v", "/sys:/sys", "-v", plugins+":/var/lib/kubelet/device-plugins",
		"-v", configMap+":/root/config:ro", tag)
	if !strings.Contains(state.log, `"rules":"/root/config/conf.yaml"`) {
		t.Errorf("the daemon did not say it took its rules from /root/config/conf.yaml; log:\n%s", state.log)
	}
	if state.exitCode != "0" || state.oomKilled != "false" {
		t.Errorf("container exit code %q, OOM-killed %q; want 0 and false under the old 15 MiB limit", state.exitCode, state.oomKilled)
	}
}

// containerState is how a container ended, and its log.
type containerState struct {
	exitCode, oomKilled, log string
}

// hotplugThroughContainer runs `docker run -d --name NAME args...`, waits
// until the daemon inside listens for uevents, adds a zram device and waits
// for its resource (count IDs) to turn Healthy at the fake kubelet, removes
// it and waits for Unhealthy, then stops the container (SIGTERM) and
// reports how it ended. The container is removed when the test ends.
func hotplugThroughContainer(t *testing.T, k *plugintest.FakeKubelet, name string, count int, args ...string) containerState {
	t.Helper()
	run := exec.Command("docker", append([]string{"run", "-d", "--name", name}, args...)...)
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	logs := func() string {
		out, _ := exec.Command("docker", "logs", name).CombinedOutput()
		return string(out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("container log:\n%s", logs())
		}
		_ = exec.Command("docker", "rm", "-f", name).Run() // our container, by its name
	})
	testutil.Eventually(t, 30*time.Second, "the container listening for uevents", func() bool {
		return strings.Contains(logs(), "uevent monitor listening")
	})

	n := testkernel.ZramAdd(t)
	res := fmt.Sprintf("smarter-devices/zram%d", n)
	waitFor(t, k, res, "healthy through the container", allHealth(count, pluginapi.Healthy))
	if err := testkernel.ZramRemove(n); err != nil {
		t.Fatal(err)
	}
	waitFor(t, k, res, "unhealthy through the container", allHealth(count, pluginapi.Unhealthy))

	if out, err := exec.Command("docker", "stop", "-t", "20", name).CombinedOutput(); err != nil {
		t.Fatalf("docker stop: %v\n%s", err, out)
	}
	out, err := exec.Command("docker", "inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", name).Output()
	if err != nil {
		t.Fatalf("docker inspect: %v", err)
	}
	state := containerState{log: logs()}
	if f := strings.Fields(string(out)); len(f) == 2 {
		state.exitCode, state.oomKilled = f[0], f[1]
	}
	return state
}
