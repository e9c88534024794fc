package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

func TestBadCommandLine(t *testing.T) {
	for _, args := range [][]string{
		{"--log-format", "xml"},
		{"--uevent-source", "both"},
		{"--log-level", "loud"},
		{"--remove-after", "-1s"},
		{"--resource-prefix", "Not_A_Domain"},
		{"stray-argument"},
		{"--no-such-flag"},
	} {
		var stderr bytes.Buffer
		if code := run(args, &stderr); code != exitUsage {
			t.Errorf("run(%q) = %d, want %d; stderr:\n%s", args, code, exitUsage, stderr.String())
		}
	}
}

func TestHelpExitsZero(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"--help"}, &stderr); code != exitOK {
		t.Errorf("--help exit status %d, want 0", code)
	}
	for _, want := range []string{"--config", "--dev-root", "--plugin-dir", "--uevent-source", "--remove-after"} {
		if !strings.Contains(stderr.String(), want[2:]) {
			t.Errorf("--help does not mention %s:\n%s", want, stderr.String())
		}
	}
}

// A broken rule file at start-up stops the daemon with a non-zero status and
// every error, each naming file and line.
func TestBrokenConfigAtStartup(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rules.yaml")
	broken := "- devicematch: ^video[0-9*$\n  nummaxdevices: 2\n- devicematch: ^ttyUSB[0-9]+$\n  nummaxdevices: -1\n  colour: blue\n"
	if err := os.WriteFile(file, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := run([]string{"--config", file, "--plugin-dir", t.TempDir()}, &stderr); code != exitError {
		t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitError, stderr.String())
	}
	for _, want := range []string{file + ":1:", file + ":4:", file + ":5:"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks an error at %s:\n%s", want, stderr.String())
		}
	}
}

// SIGHUP: a new rule starts its resource, the untouched one keeps its
// registration, a broken file changes nothing. Uses nodes every Linux /dev
// has, so it needs no root. The rule file watch is off: every reload here
// must come from the signal.
func TestReloadOnSIGHUP(t *testing.T) {
	for _, n := range []string{"/dev/null", "/dev/zero"} {
		if _, err := os.Stat(n); err != nil {
			testutil.SkipEnv(t, "skipping: %s missing", n)
		}
	}
	dir := testutil.ShortTempDir(t)
	rules := filepath.Join(dir, "rules.toml")
	write := func(s string) { t.Helper(); renameIn(t, rules, s) }
	write("version = \"v1\"\n[[rule]]\nmatch = \"^null$\"\ncount = 3\n")
	k, err := plugintest.StartFakeKubelet(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	d := startDaemon(t, "--config", rules, "--plugin-dir", dir, "--uevent-source", "kernel", "--resync", "1h",
		"--watch-config=false", "--debug-addr", "127.0.0.1:0")
	addr := d.listenAddr(t, "debug endpoints")
	waitFor(t, k, "smarter-devices/null", "3 healthy IDs", allHealth(3, pluginapi.Healthy))

	write("version = \"v1\"\n[[rule]]\nmatch = \"^null$\"\ncount = 3\n[[rule]]\nmatch = \"^zero$\"\ncount = 1\n")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, k, "smarter-devices/zero", "the new rule's resource", allHealth(1, pluginapi.Healthy))

	write("version = \"v1\"\n[[rule]]\nmatch = \"^null$\"\ncount = many\n")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the broken file read", func() bool { return debugStats(t, addr)["reload_failures"] == 1 })
	// Then a good reload proves the loop is alive and that nothing was
	// dropped in between.
	write("version = \"v1\"\n[[rule]]\nmatch = \"^null$\"\ncount = 3\n[[rule]]\nmatch = \"^zero$\"\ncount = 2\n")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, k, "smarter-devices/zero", "count raised to 2 by reload", allHealth(2, pluginapi.Healthy))
	if st := debugStats(t, addr); st["reloads"] != 3 || st["reload_failures"] != 1 {
		t.Errorf("counters %v; want 3 reloads (one per SIGHUP), one of them failed", st)
	}
	for _, res := range []string{"smarter-devices/null", "smarter-devices/zero"} {
		if got := k.Registrations(res); got != 1 {
			t.Errorf("%s registered %d times; a reload must leave unchanged resources alone", res, got)
		}
	}
	if !allHealth(3, pluginapi.Healthy)(k.Devices("smarter-devices/null")) {
		t.Errorf("null lost its devices across reloads: %v", k.Devices("smarter-devices/null"))
	}
	if code := d.stop(t); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
}

// debugStats reads the daemon's counters from --debug-addr's /debug/vars.
func debugStats(t *testing.T, addr string) map[string]uint64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/debug/vars")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Stats map[string]uint64 `json:"smarter_device_manager"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v.Stats
}

// A typo in the rule file and one SIGHUP, with the daemon's log beside the
// rule file as in `smarter-device-manager --config ./rules.yaml > ./sdm.log
// 2>&1`: the failure is logged once, and writing that line (a change in
// the rule file's directory) does not set off another reload. It used to:
// every logged failure triggered the next reload, thousands a second.
func TestBrokenRuleFileDoesNotLoop(t *testing.T) {
	if _, err := os.Stat("/dev/null"); err != nil {
		testutil.SkipEnv(t, "skipping: /dev/null missing: %v", err)
	}
	dir := testutil.ShortTempDir(t) // the rule file and the log
	pluginDir := testutil.ShortTempDir(t)
	rules := filepath.Join(dir, "rules.yaml")
	// One rename is one change of rules.yaml; writing the temporary file
	// beside it is none.
	replace := func(s string) { t.Helper(); renameIn(t, rules, s) }
	replace("version: v1\nrules:\n  - match: ^null$\n")
	k, err := plugintest.StartFakeKubelet(pluginDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	logFile := filepath.Join(dir, "sdm.log")
	d := startDaemonLogTo(t, logFile, "--config", rules, "--plugin-dir", pluginDir, "--uevent-source", "kernel", "--resync", "1h",
		"--debug-addr", "127.0.0.1:0")
	addr := d.listenAddr(t, "debug endpoints")
	waitFor(t, k, "smarter-devices/null", "served", allHealth(1, pluginapi.Healthy))
	// The daemon has logged into dir since it started watching: none of
	// that is a reason to read the rules.
	if st := debugStats(t, addr); st["reloads"] != 0 {
		t.Fatalf("%d reloads before the rule file changed; counters %v", st["reloads"], st)
	}

	// The watch sees the typo (one reload), then SIGHUP asks again (one
	// more, of the same content).
	replace("version: v1\nrules:\n  - match: ^null$\n    count: many\n")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the watch's and the SIGHUP's reloads", func() bool { return debugStats(t, addr)["reloads"] >= 2 })
	// Settle: a loop would show here as reloads climbing. (A slow machine
	// makes this check weaker, never wrong.)
	for range 20 {
		if st := debugStats(t, addr); st["reloads"] != 2 {
			t.Fatalf("%d reloads after one change and one SIGHUP, want 2; counters %v", st["reloads"], st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := debugStats(t, addr); st["reload_failures"] != 1 || st["reloads_unchanged"] != 1 {
		t.Errorf("counters %v; want one failure (the new content) and one unchanged read (the same content again)", st)
	}
	// What the user reads: the failure once, not once per read.
	if n := strings.Count(d.logText(), "reload failed"); n != 1 {
		t.Errorf("%s has %d \"reload failed\" lines, want 1", logFile, n)
	}

	// Fixed: the change applies, and the failure count stays.
	replace("version: v1\nrules:\n  - match: ^null$\n    count: 2\n")
	waitFor(t, k, "smarter-devices/null", "count 2 after the fix", allHealth(2, pluginapi.Healthy))
	if st := debugStats(t, addr); st["reload_failures"] != 1 {
		t.Errorf("counters %v after the fix; want still one failure", st)
	}
	if code := d.stop(t); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
}

// --debug-addr serves the counters and pprof; the benchmarks read Go heap
// figures from it.
func TestDebugEndpoints(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	d := startDaemon(t, "--plugin-dir", dir, "--uevent-source", "kernel", "--debug-addr", "127.0.0.1:0")
	addr := d.listenAddr(t, "debug endpoints")
	type vars struct {
		Memstats struct{ HeapInuse uint64 }
		Stats    map[string]uint64 `json:"smarter_device_manager"`
	}
	get := func() (v vars) {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/debug/vars?gc=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	// The start-up read is counted when it completes.
	testutil.Eventually(t, 20*time.Second, "the start-up rescan counted", func() bool { return get().Stats["rescans"] > 0 })
	if v := get(); v.Memstats.HeapInuse == 0 {
		t.Errorf("/debug/vars = %+v; want heap figures", v)
	}
	if code := d.stop(t); code != 0 {
		t.Errorf("exit status %d", code)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("version = \"v1\"\n[[rule]]\nmatch = \"^ttyUSB[0-9]+$\"\n"), 0o644)
	os.WriteFile(bad, []byte("- devicematch: ^video[0-9*$\n- devicematch: ^a$\n  nummaxdevices: -1\n"), 0o644)
	var out, errOut bytes.Buffer
	if code := check([]string{"--config", good}, &out, &errOut); code != exitOK || !strings.Contains(out.String(), "1 rules, toml-v1: OK") {
		t.Errorf("check good: %d %q %q", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := check([]string{"--config", bad}, &out, &errOut); code != exitError ||
		!strings.Contains(errOut.String(), bad+":1: [0].devicematch") || !strings.Contains(errOut.String(), bad+":3: [1].nummaxdevices") {
		t.Errorf("check bad: %d, stderr:\n%s", code, errOut.String())
	}
	if code := check(nil, &out, &errOut); code != exitOK {
		t.Errorf("check of the embedded default: %d", code)
	}
	// Through the environment, as in a DaemonSet.
	t.Setenv("SMARTER_DEVICE_MANAGER_CONFIG", bad)
	if code := check(nil, &out, &errOut); code != exitError {
		t.Errorf("check with SMARTER_DEVICE_MANAGER_CONFIG set to a broken file: %d", code)
	}
}

// Every flag can be set from the environment; the command line wins.
func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("SMARTER_DEVICE_MANAGER_PLUGIN_DIR", "/env/plugins")
	t.Setenv("SMARTER_DEVICE_MANAGER_REMOVE_AFTER", "90s")
	f, err := parseFlags([]string{"--plugin-dir", "/cli/plugins"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f.pluginDir != "/cli/plugins" || f.removeAfter != 90*time.Second {
		t.Errorf("plugin dir %q (want the command line's), remove-after %v (want the environment's 90s)", f.pluginDir, f.removeAfter)
	}
	t.Setenv("SMARTER_DEVICE_MANAGER_RESYNC", "soon")
	var stderr bytes.Buffer
	if code := run(nil, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "SMARTER_DEVICE_MANAGER_RESYNC") {
		t.Errorf("a bad environment value: exit %d, %q; want 2 naming the variable", code, stderr.String())
	}
}

func TestVersion(t *testing.T) {
	if v := version(); !strings.HasPrefix(v, "smarter-device-manager ") || !strings.Contains(v, "go1.") {
		t.Errorf("version() = %q", v)
	}
}

// systemd/smarter-device-manager.service passes systemd-analyze verify with
// no complaint at all (it reports a misspelt key only as a message).
func TestSystemdUnitVerifies(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		testutil.SkipEnv(t, "skipping: no systemd-analyze here")
	}
	unit, err := os.ReadFile("../../systemd/smarter-device-manager.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that ExecStart exists: point it at the built binary.
	dir := t.TempDir()
	file := filepath.Join(dir, "smarter-device-manager.service")
	text := strings.ReplaceAll(string(unit), "/usr/bin/smarter-device-manager", binary)
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", file).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// list is how a user finds out that ^tty[0-15]*$ does not match tty2.
func TestListDryRun(t *testing.T) {
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(rules, []byte("- devicematch: ^tty[0-15]*$\n  nummaxdevices: 1\n- devicematch: ^nu.*$\n  nummaxdevices: 2\n- devicematch: ^null$\n  nummaxdevices: 1\n"), 0o644)
	var out, errOut bytes.Buffer
	if code := list([]string{"--config", rules, "--output", "json"}, &out, &errOut); code != exitOK {
		t.Fatalf("list: %d %s", code, errOut.String())
	}
	var entries []struct {
		Device, Rule, Resource, Note string
		IDs                          []string
	}
	if err := json.Unmarshal(out.Bytes(), &entries); err != nil {
		t.Fatal(err)
	}
	byDev := map[string]int{}
	for i, e := range entries {
		byDev[e.Device] = i
	}
	null := entries[byDev["null"]]
	if null.Resource != "smarter-devices/null" || !slices.Equal(null.IDs, []string{"0", "1"}) ||
		!strings.HasSuffix(null.Rule, ":3 (^nu.*$)") || !strings.Contains(null.Note, "also matches rule") {
		t.Errorf("null: %+v", null)
	}
	if _, err := os.Stat("/dev/tty2"); err == nil {
		if tty2 := entries[byDev["tty2"]]; tty2.Resource != "" || tty2.Note != "no rule matches" {
			t.Errorf("tty2: %+v; want no rule (the class [0-15] is 0, 1 or 5)", tty2)
		}
	}
	out.Reset()
	if code := list([]string{"--config", rules, "--matched"}, &out, &errOut); code != exitOK || !strings.HasPrefix(out.String(), "DEVICE") ||
		!strings.Contains(out.String(), "smarter-devices/null") || strings.Contains(out.String(), "no rule matches") {
		t.Errorf("table --matched:\n%s", out.String())
	}
}

// Where the rules come from: --config (or its environment variable) when
// set, else the first default file that exists, else the embedded rules.
func TestResolveRules(t *testing.T) {
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc-rules.toml")
	old := filepath.Join(dir, "root-config-conf.yaml")
	candidates := []string{etc, old}

	src, err := resolveRules("", candidates)
	if err != nil || src.file != "" || src.String() != "embedded default" {
		t.Errorf("no files: %+v %v, want the embedded default", src, err)
	}
	os.WriteFile(old, []byte("- devicematch: ^zram[0-9]+$\n  nummaxdevices: 2\n"), 0o644)
	cfg, src, err := loadRules("", candidates)
	if err != nil || src.file != old || cfg.Source != old || len(cfg.Rules) != 1 {
		t.Errorf("only the old daemon's file: %+v %v, want it loaded", src, err)
	}
	os.WriteFile(etc, []byte("version = \"v1\"\n[[rule]]\nmatch = \"^ttyUSB[0-9]+$\"\n"), 0o644)
	src, err = resolveRules("", candidates)
	if err != nil || src.file != etc || !slices.Equal(src.ignored, []string{old}) {
		t.Errorf("both files: %+v %v, want %s first and %s reported as ignored", src, err, etc, old)
	}
	src, err = resolveRules(old, candidates)
	if err != nil || src.file != old || src.why != "--config" {
		t.Errorf("--config: %+v %v, want the flag to win", src, err)
	}
	// An explicit file that is missing is an error, never a silent
	// fallback to other rules.
	if _, _, err := loadRules(filepath.Join(dir, "missing.yaml"), candidates); err == nil {
		t.Error("a missing --config file loaded")
	}
	// A default file that is present but broken stops the daemon too.
	os.WriteFile(etc, []byte("version = \"v1\"\n[[rule]]\nmatch = \"^tty[\"\n"), 0o644)
	if _, _, err := loadRules("", candidates); err == nil || !strings.Contains(err.Error(), etc) {
		t.Errorf("broken default file: %v, want an error naming %s", err, etc)
	}
}

// --plugin-dir follows --kubelet-dir (microk8s, old k3s) unless given.
func TestKubeletDir(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "/var/lib/kubelet/device-plugins"},
		{[]string{"--kubelet-dir", "/var/snap/microk8s/common/var/lib/kubelet"}, "/var/snap/microk8s/common/var/lib/kubelet/device-plugins"},
		{[]string{"--kubelet-dir", "/var/lib/rancher/k3s/agent/kubelet", "--plugin-dir", "/x"}, "/x"},
	} {
		f, err := parseFlags(c.args, io.Discard)
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
		} else if f.pluginDir != c.want {
			t.Errorf("%q: plugin dir %q, want %q", c.args, f.pluginDir, c.want)
		}
	}
}

// renameIn replaces file the way a ConfigMap update or an editor does: a
// new file written beside it and renamed over it.
func renameIn(t *testing.T, file, content string) {
	t.Helper()
	tmp := file + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}
