package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// --mode takes device-plugin or dra, from the command line or the
// environment; anything else is a usage error.
func TestModeFlag(t *testing.T) {
	f, err := parseFlags(nil, &bytes.Buffer{})
	if err != nil || f.mode != defaultMode || f.driverName != defaultDriverName {
		t.Fatalf("defaults: %+v, %v", f, err)
	}
	t.Setenv("SMARTER_DEVICE_MANAGER_MODE", "dra")
	t.Setenv("SMARTER_DEVICE_MANAGER_NODE_NAME", "node-a")
	if f, err := parseFlags(nil, &bytes.Buffer{}); err != nil || f.mode != modeDRA || f.nodeName != "node-a" {
		t.Errorf("from the environment: %+v, %v", f, err)
	}
	// (parseFlags, not run: a regression must not start a daemon here.)
	if _, err := parseFlags([]string{"--mode", "both"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--mode") {
		t.Errorf("--mode both: %v; want an error naming --mode", err)
	}
}

// The device-plugin binary in DRA mode becomes the DRA binary beside it,
// given the same arguments and environment (the mode among them); with
// none beside it, it stops saying what is missing.
func TestDRAModeExecsTheDRABinary(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	self := filepath.Join(dir, "smarter-device-manager")
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(self, data, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"--kubelet-dir", "/var/snap/microk8s/common/var/lib/kubelet", "--log-format=console"}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "SMARTER_DEVICE_MANAGER_MODE=dra")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), draBinary) {
		t.Errorf("with no DRA binary beside it: %v\n%s\nwant a failure naming %s", err, out, draBinary)
	}

	// A stand-in DRA binary that says what it was given.
	got := filepath.Join(dir, "got")
	script := "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" \"mode=$SMARTER_DEVICE_MANAGER_MODE\" > " + got + "\n"
	if err := os.WriteFile(filepath.Join(dir, draBinary), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	run := exec.Command(self, args...)
	run.Env = cmd.Env
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	said, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join(append(append([]string{filepath.Join(dir, draBinary)}, args...), "mode=dra"), "\n") + "\n"
	if string(said) != want {
		t.Errorf("the DRA binary was given\n%s\nwant\n%s", said, want)
	}
}

// The image holds the DRA binary beside the daemon's: the image run with
// SMARTER_DEVICE_MANAGER_MODE=dra (as a DaemonSet sets it) is the DRA
// driver, which, with no API server to reach, says so.
func TestImageRunsDRAMode(t *testing.T) {
	testutil.SkipShort(t, "builds and runs a Docker image")
	if err := exec.Command("docker", "info").Run(); err != nil {
		testutil.SkipEnv(t, "skipping: no Docker engine here (docker info: %v)", err)
	}
	tag := buildImage(t)
	out, err := exec.Command("docker", "run", "--rm", "-e", "SMARTER_DEVICE_MANAGER_MODE=dra", tag,
		"--kubeconfig=/nonexistent/kubeconfig").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "handing over to the DRA binary") || !strings.Contains(string(out), "DRA mode: the API server") {
		t.Errorf("docker run %s in DRA mode: %v, want the DRA binary's error about the API server:\n%s", tag, err, out)
	}
}
