package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// kubernetesVersion is the k8s.io/kubernetes release whose unexported
// newManagerImpl signature kubelet_test.go links to.
const kubernetesVersion = "v1.37.2"

// daemonBinary is built once by TestMain; empty when the suite cannot run
// here (each test then skips and says why).
var daemonBinary string

// skipReason is why daemonBinary was not built.
var skipReason string

func TestMain(m *testing.M) {
	code := testMain(m)
	// The container tests' probe, built by the first of them, and the
	// release daemon of the attack tests (11 MB left in /tmp each run
	// before).
	if probeBin.dir != "" {
		os.RemoveAll(probeBin.dir)
	}
	if releaseBin.path != "" {
		os.RemoveAll(filepath.Dir(releaseBin.path))
	}
	os.Exit(code)
}

func testMain(m *testing.M) int {
	// The kubelet's gRPC handlers log through klog's global logger: send it
	// to the running test's kubelet log, not stderr. ContextualLogger makes
	// klog.FromContext return it (else klog's own, at -v=0).
	klog.SetLoggerWithOptions(textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(4), textlogger.Output(&kubeletLog))), klog.ContextualLogger(true))

	if os.Geteuid() != 0 {
		skipReason = "needs root (the daemon reads netlink uevents, /dev and /sys, and the tests make zram devices)"
		// Building as a normal user would only cost time: every test skips.
		return m.Run()
	}
	if err := checkKubernetesVersion(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	// A prebuilt daemon (a release, or a CI artefact) may be tested instead.
	if bin := os.Getenv("SDM_E2E_DAEMON"); bin != "" {
		daemonBinary = bin
		return m.Run()
	}

	dir, err := os.MkdirTemp("", "sdm-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	daemonBinary = filepath.Join(dir, "smarter-device-manager")
	args := []string{"build", "-o", daemonBinary}
	if daemonRace() {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/smarter-device-manager")
	cmd := exec.Command(goTool(), args...)
	// The daemon is built in its own module, the parent directory.
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the daemon: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// checkKubernetesVersion refuses to run against a k8s.io/kubernetes other
// than the one newManagerImpl's signature was checked against: a changed
// signature behind go:linkname would not fail to compile, it would corrupt
// memory. Test binaries carry no dependency versions in their build info,
// so go.mod (go test runs in the package directory, the module root) is
// read instead.
func checkKubernetesVersion() error {
	b, err := os.ReadFile("go.mod")
	if err != nil {
		return fmt.Errorf("checking the k8s.io/kubernetes version: %w", err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?k8s\.io/kubernetes\s+(\S+)`).FindSubmatch(b)
	if m == nil {
		return fmt.Errorf("go.mod does not require k8s.io/kubernetes")
	}
	if v := string(m[1]); v != kubernetesVersion {
		return fmt.Errorf("go.mod requires k8s.io/kubernetes %s; kubelet_test.go links to newManagerImpl as of %s: check its signature, then update kubernetesVersion", v, kubernetesVersion)
	}
	return nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// daemonRace says whether the daemon (and the DRA binary) is built with
// the race detector: always, unless SDM_E2E_DAEMON_RACE=0. The test binary
// itself need not be: it only drives the daemon, a separate process, and
// the Kubernetes code it links (the kubelet's device and DRA managers, the
// API server) is the slowest part of the suite to compile, twice as slow
// with -race.
func daemonRace() bool { return os.Getenv("SDM_E2E_DAEMON_RACE") != "0" }

// requireSuite skips the test when TestMain found it cannot run here.
func requireSuite(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		testutil.SkipEnv(t, "%s", "skipping: "+skipReason)
	}
}
