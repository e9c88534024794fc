package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// What the .deb installs (packaging/nfpm.yaml).
const (
	sdmPkg        = "smarter-device-manager"
	sdmUnit       = "smarter-device-manager.service"
	sdmUnitPath   = "/lib/systemd/system/smarter-device-manager.service"
	sdmConf       = "/etc/smarter-device-manager/rules.toml"
	sdmConfDir    = "/etc/smarter-device-manager"
	sdmWants      = "/etc/systemd/system/multi-user.target.wants/smarter-device-manager.service"
	nodePluginDir = "/var/lib/kubelet/device-plugins"
)

var sdmBins = []string{"/usr/bin/smarter-device-manager", "/usr/bin/smarter-device-manager-dra"}

// TestNodeSystemdService installs the project's .deb (built here as make
// packages builds it) on a node whose PID 1 is the real systemd, and checks
// the shipped unit through systemd's own state: the postinst enabled and
// started it, it serves its device-plugin socket, systemd restarts it after
// a SIGKILL within RestartSec, a stop is a clean exit, its JSON log reaches
// the journal, and a purge leaves nothing behind.
func TestNodeSystemdService(t *testing.T) {
	skipUnlessDocker(t)
	checkNoNodesLeft(t)
	removeStaleNodes(t)
	image, deb := imageAndDeb(t, t.TempDir())

	// The node's plugin directory is a directory here, as the kubelet's is
	// on a real node's disk, so this test can dial the daemon's socket.
	plugins := t.TempDir()
	begin := time.Now()
	n := startNode(t, image, "-v", plugins+":"+nodePluginDir)
	t.Logf("node %.12s booted (systemd: running) in %.1f s", n.id, time.Since(begin).Seconds())

	// A serial port for the shipped rules (^ttyS[0-9]*$) to find: docker's
	// /dev has none. 4:64 is ttyS0's number in the kernel's device list;
	// the container's device cgroup still refuses to open it, and the
	// daemon never opens a node.
	n.must("mknod", "-m", "0660", "/dev/ttyS0", "c", "4", "64")

	// Install: the postinst enables and starts the unit.
	n.must("mkdir", "-p", "/root/deb")
	if _, err := dockerCmd(time.Minute, "cp", deb, n.id+":/root/deb/sdm.deb"); err != nil {
		t.Fatal(err)
	}
	begin = time.Now()
	n.must("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i", "/root/deb/sdm.deb")
	files := n.must("dpkg", "-L", sdmPkg)
	for _, p := range append([]string{sdmUnitPath, sdmConf}, sdmBins...) {
		if !containsLine(files, p) {
			t.Errorf("dpkg -L %s does not list %s:\n%s", sdmPkg, p, files)
		}
	}
	first := n.waitUnit("active (running) after dpkg -i", 30*time.Second, func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["SubState"] == "running" && atoi(p["MainPID"]) > 0
	})
	t.Logf("unit active (running), MainPID %s, %.1f s after dpkg -i began", first["MainPID"], time.Since(begin).Seconds())
	for k, want := range map[string]string{"UnitFileState": "enabled", "FragmentPath": sdmUnitPath, "LoadState": "loaded"} {
		if first[k] != want {
			t.Errorf("%s: %s=%q, want %q", sdmUnit, k, first[k], want)
		}
	}
	if !slices.Contains(strings.Fields(first["Before"]), "kubelet.service") {
		t.Errorf("%s: Before=%q, want it to hold kubelet.service", sdmUnit, first["Before"])
	}
	// No unit failed (the daemon's start among them).
	if st := strings.TrimSpace(n.must("systemctl", "is-system-running")); st != "running" {
		t.Errorf("after install the node is %q, want running; failed units:\n%s", st, n.must("systemctl", "--failed", "--no-legend"))
	}

	// It serves under the unit's sandbox (ProtectSystem=strict and the
	// rest), and logs JSON to the journal. (No kubelet runs in the node yet:
	// it waits to register, which later steps of issue 21 check.)
	sock := filepath.Join(plugins, "smarter-ttyS0.sock")
	checkServes(t, sock, "after install")
	start := n.waitRecord("the daemon's start-up record", first["MainPID"], "starting smarter-device-manager")
	for k, want := range map[string]string{"level": "info", "rules": sdmConf, "plugin_dir": nodePluginDir, "mode": "device-plugin"} {
		if got := fmt.Sprint(start[k]); got != want {
			t.Errorf("start-up record: %s=%q, want %q (record %v)", k, got, want, start)
		}
	}

	// SIGKILL: Restart=always brings it back after RestartSec.
	restartSec, err := time.ParseDuration(first["RestartUSec"])
	if err != nil {
		t.Fatalf("RestartUSec=%q: %v", first["RestartUSec"], err)
	}
	begin = time.Now()
	n.must("systemctl", "kill", "-s", "KILL", sdmUnit)
	again := n.waitUnit("a restart after SIGKILL", restartSec+15*time.Second, func(p map[string]string) bool {
		return atoi(p["NRestarts"]) == atoi(first["NRestarts"])+1 && p["ActiveState"] == "active" &&
			p["SubState"] == "running" && atoi(p["MainPID"]) > 0 && p["MainPID"] != first["MainPID"]
	})
	took := time.Since(begin)
	t.Logf("restarted after SIGKILL in %.1f s (RestartSec %v): MainPID %s -> %s, NRestarts %s",
		took.Seconds(), restartSec, first["MainPID"], again["MainPID"], again["NRestarts"])
	// (begin came before the kill, so this holds whenever RestartSec does.)
	if took < restartSec {
		t.Errorf("restarted %v after the kill, sooner than RestartSec %v", took, restartSec)
	}
	checkServes(t, sock, "after the restart")
	n.waitRecord("the restarted daemon's start-up record", again["MainPID"], "starting smarter-device-manager")

	// A stop is SIGTERM to the main process (KillMode=mixed): a clean exit
	// that removes its socket.
	n.must("systemctl", "stop", sdmUnit)
	stopped := n.unit()
	for k, want := range map[string]string{"ActiveState": "inactive", "SubState": "dead", "Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0"} {
		if stopped[k] != want {
			t.Errorf("after systemctl stop: %s=%q, want %q (1: exited)", k, stopped[k], want)
		}
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("after systemctl stop, %s is still there", sock)
	}
	n.waitRecord("the daemon's last record", again["MainPID"], "stopped")

	// Purge, with the daemon running: the prerm stops and disables it, and
	// nothing of the package is left.
	n.must("systemctl", "start", sdmUnit)
	n.waitUnit("active again", 30*time.Second, func(p map[string]string) bool { return p["ActiveState"] == "active" })
	n.must("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "--purge", sdmPkg)
	left := n.must("sh", "-c", `for p; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done`, "sh",
		sdmUnitPath, sdmConf, sdmConfDir, sdmWants, sdmBins[0], sdmBins[1])
	if strings.TrimSpace(left) != "" {
		t.Errorf("after dpkg --purge these are left:\n%s", left)
	}
	if out, _ := n.exec("systemctl", "list-unit-files", "--no-legend", sdmUnit); strings.TrimSpace(out) != "" {
		t.Errorf("after dpkg --purge, systemctl list-unit-files still lists it:\n%s", out)
	}
	if p := n.unit(); p["ActiveState"] != "inactive" || p["LoadState"] != "not-found" {
		t.Errorf("after dpkg --purge: ActiveState=%q LoadState=%q, want inactive, not-found", p["ActiveState"], p["LoadState"])
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("after dpkg --purge, %s is still there", sock)
	}
	if out, _ := n.exec("dpkg-query", "-W", "-f=${db:Status-Status}", sdmPkg); strings.TrimSpace(out) == "installed" || strings.Contains(out, "config-files") {
		t.Errorf("after dpkg --purge, dpkg-query says %q", out)
	}
}

// buildDeb builds the release binaries for this architecture with make
// release's flags, then the .deb with scripts/package.sh, under dir.
func buildDeb(dir string) (string, error) { return buildDebVersion(dir, "") }

// buildDebVersion is buildDeb with the package's version given (empty:
// scripts/package.sh's default, from git describe).
func buildDebVersion(dir, version string) (string, error) {
	root, err := filepath.Abs("..")
	if err != nil {
		return "", fmt.Errorf("build deb: %w", err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	dist, out := filepath.Join(dir, "dist"), filepath.Join(dir, "out")
	// make release's BUILDTAGS and DRATAGS: the build the packaging test
	// and make e2e-cluster make too, so the build cache has it.
	for name, tags := range map[string]string{sdmPkg: "grpcnotrace,nethttpomithttp2", sdmPkg + "-dra": "grpcnotrace,dra"} {
		cmd := exec.Command(goTool, "build", "-C", root, "-trimpath", "-tags="+tags, "-ldflags=-s -w",
			"-o", filepath.Join(dist, "linux-"+runtime.GOARCH, name), "./cmd/smarter-device-manager")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOARM=7")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %w\n%s", name, err, b)
		}
	}
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "package.sh"))
	cmd.Env = append(os.Environ(), "ARCHS="+runtime.GOARCH, "OUT="+out, "DIST="+dist)
	if version != "" {
		cmd.Env = append(cmd.Env, "VERSION="+version)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("scripts/package.sh: %w\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("scripts/package.sh: want one .deb in %s, got %q", out, debs)
	}
	return debs[0], nil
}

// unitProps are the properties of the unit the test reads.
const unitProps = "ActiveState,SubState,Result,LoadState,UnitFileState,FragmentPath,MainPID,NRestarts,RestartUSec,ExecMainCode,ExecMainStatus,Before"

// unit is systemctl show's view of the unit.
func (n *node) unit() map[string]string {
	n.t.Helper()
	p := map[string]string{}
	for _, line := range strings.Split(n.must("systemctl", "show", "-p", unitProps, sdmUnit), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			p[k] = v
		}
	}
	return p
}

// waitUnit polls the unit's properties until ok holds, and returns them.
func (n *node) waitUnit(what string, timeout time.Duration, ok func(map[string]string) bool) map[string]string {
	n.t.Helper()
	var p map[string]string
	waitFor(n.t, what, timeout, func() (bool, string) {
		p = n.unit()
		return ok(p), fmt.Sprint(p)
	})
	return p
}

// waitRecord waits until the journal holds a record of the unit from
// process pid whose message (the daemon's JSON log line, decoded) is msg,
// and returns that log line's fields.
func (n *node) waitRecord(what, pid, msg string) map[string]any {
	n.t.Helper()
	var rec map[string]any
	waitFor(n.t, what, 30*time.Second, func() (bool, string) {
		out, err := n.exec("journalctl", "-u", sdmUnit, "-o", "json", "--no-pager")
		if err != nil {
			return false, err.Error()
		}
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(nil, 1<<20)
		var last string
		for sc.Scan() {
			var entry struct {
				PID     string `json:"_PID"`
				Message any    `json:"MESSAGE"` // a string, or bytes when not UTF-8
			}
			if err := json.Unmarshal(sc.Bytes(), &entry); err != nil {
				n.t.Fatalf("journalctl -o json: %v: %s", err, sc.Text())
			}
			s, _ := entry.Message.(string)
			if entry.PID != pid || !strings.HasPrefix(s, "{") {
				continue
			}
			last = s
			var fields map[string]any
			if err := json.Unmarshal([]byte(s), &fields); err != nil {
				n.t.Errorf("a log line of the daemon is not JSON: %v: %s", err, s)
				continue
			}
			if fields["message"] == msg {
				rec = fields
				return true, ""
			}
		}
		return false, "last record of PID " + pid + ": " + last
	})
	return rec
}

// checkServes dials the daemon's device-plugin socket and checks its first
// ListAndWatch answer: the one serial port, healthy. Polled: after a
// restart the socket may still be the killed daemon's.
func checkServes(t *testing.T, sock, when string) {
	t.Helper()
	waitFor(t, "ListAndWatch on "+sock+" "+when, 30*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return false, err.Error()
		}
		defer conn.Close()
		stream, err := pluginapi.NewDevicePluginClient(conn).ListAndWatch(ctx, &pluginapi.Empty{})
		if err != nil {
			return false, err.Error()
		}
		resp, err := stream.Recv()
		if err != nil {
			return false, err.Error()
		}
		if len(resp.Devices) != 1 || resp.Devices[0].Health != pluginapi.Healthy {
			t.Fatalf("ListAndWatch %s: want one healthy device, got %v", when, resp.Devices)
		}
		return true, ""
	})
}

func containsLine(s, line string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
