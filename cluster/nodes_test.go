package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The node suite (make e2e-nodes, TestNode*): Debian containers whose PID 1
// is the real systemd, made by scripts/node-image.sh, standing in for the
// machines a package is installed on.

// nodeLabel marks every node container; its value is the PID of the test
// process that started it, so a later run can tell a killed run's leftover
// from a container a run still going owns.
const nodeLabel = "smarter-device-manager-e2e-node"

// node is one node container, removed by its ID when the test ends.
type node struct {
	t  *testing.T
	id string
}

// dockerCmd runs docker and returns its stdout; an error carries stderr.
func dockerCmd(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), errors.Join(err, ctx.Err()), bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

// skipUnlessDocker skips unless the test runs as root on Linux with a
// Docker engine it can reach.
func skipUnlessDocker(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: node suite: runs systemd in Docker containers: needs root on Linux")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("SKIPPED: node suite: no docker command")
	}
	if _, err := dockerCmd(time.Minute, "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("SKIPPED: node suite: no Docker engine: %v", err)
	}
}

// removeStaleNodes removes the node containers of earlier runs whose test
// process is gone (killed before its cleanup ran); a running test's are
// left alone.
func removeStaleNodes(t *testing.T) {
	t.Helper()
	out, err := dockerCmd(time.Minute, "ps", "-a", "--filter", "label="+nodeLabel, "--format", `{{.ID}} {{.Label "`+nodeLabel+`"}}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		id, owner, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if pid, err := strconv.Atoi(owner); err == nil && pid > 0 {
			if _, err := os.Stat(filepath.Join("/proc", owner)); err == nil {
				continue
			}
		}
		t.Logf("removing node container %s left by a killed run (PID %s)", id, owner)
		if _, err := dockerCmd(time.Minute, "rm", "-f", id); err != nil {
			t.Fatal(err)
		}
	}
}

// nodeImage builds (or finds in its cache) the node image with
// scripts/node-image.sh and returns its name.
func nodeImage() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join("..", "scripts", "node-image.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/node-image.sh: %w: %s", err, lastLines(stderr.String(), 20))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

// startNode starts a node container of image, labelled with this test's
// PID and removed by its ID when the test ends, and waits until systemd
// has booted it to "running" (a failed unit fails the test). Extra docker
// run arguments go in extra.
func startNode(t *testing.T, image string, extra ...string) *node {
	t.Helper()
	return startNodeNamed(t, image, "sdm-e2e-node-"+strconv.Itoa(os.Getpid()), extra...)
}

// startNodeNamed is startNode with the container's name given.
func startNodeNamed(t *testing.T, image, name string, extra ...string) *node {
	t.Helper()
	pid := strconv.Itoa(os.Getpid())
	// The ID is written once the container exists, so a container whose
	// start fails is still removed by its ID.
	cidFile := filepath.Join(t.TempDir(), "cid")
	args := []string{"run", "-d", "--cidfile", cidFile,
		"--label", nodeLabel + "=" + pid, "--name", name,
		// What systemd needs as PID 1 without --privileged (refused where
		// CAP_SYS_RESOURCE is outside the bounding set): every other
		// capability, its own seccomp filters (the unit's sandboxing), a
		// writable cgroup tree, and /run as a tmpfs.
		"--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
		"--security-opt", "seccomp=unconfined", "--cgroupns=host",
		"-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock"}
	args = append(args, extra...)
	_, runErr := dockerCmd(2*time.Minute, append(args, image)...)
	if b, err := os.ReadFile(cidFile); err == nil && len(b) > 0 {
		id := strings.TrimSpace(string(b))
		t.Cleanup(func() {
			if _, err := dockerCmd(time.Minute, "rm", "-f", id); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		if runErr == nil {
			n := &node{t: t, id: id}
			n.waitBooted()
			return n
		}
	}
	t.Fatal(runErr)
	return nil
}

// exec runs a command in the node and returns its combined output.
func (n *node) exec(args ...string) (string, error) {
	out, err := dockerCmd(2*time.Minute, append([]string{"exec", n.id, "sh", "-c", `exec "$@" 2>&1`, "sh"}, args...)...)
	return out, err
}

// must runs a command in the node, failing the test if it fails.
func (n *node) must(args ...string) string {
	n.t.Helper()
	out, err := n.exec(args...)
	if err != nil {
		n.t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// waitBooted waits until systemd in the node says "running".
func (n *node) waitBooted() {
	n.t.Helper()
	waitFor(n.t, "systemd to boot the node", 3*time.Minute, func() (bool, string) {
		// --wait returns once start-up is over; before systemd has made its
		// socket it fails at once ("Failed to connect to bus"): poll.
		out, _ := n.exec("systemctl", "is-system-running", "--wait")
		switch st := strings.TrimSpace(out); st {
		case "running":
			return true, st
		case "degraded", "maintenance", "stopping":
			failed, _ := n.exec("systemctl", "--failed", "--no-legend", "--no-pager")
			n.t.Fatalf("node booted %s; failed units:\n%s", st, failed)
		}
		return false, strings.TrimSpace(out)
	})
}

// waitFor polls f every 100 ms until it is done or timeout passes; the
// failure shows f's last word.
func waitFor(t *testing.T, what string, timeout time.Duration, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting %v for %s; last: %s", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lastLines is the end of s, for a failure message.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkNoNodesLeft fails the test if a node container it started is still
// there once every other cleanup has run (it is registered first).
func checkNoNodesLeft(t *testing.T) {
	t.Helper()
	pid := strconv.Itoa(os.Getpid())
	t.Cleanup(func() {
		out, err := dockerCmd(time.Minute, "ps", "-aq", "--filter", "label="+nodeLabel+"="+pid)
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("node containers left behind: %q %v", out, err)
		}
	})
}

// imageAndDeb builds the node image (or finds it cached) and, meanwhile,
// the .deb under debDir (one is compiling, the other mostly downloading
// and dpkg); no image is a skip, a failed .deb a failure.
func imageAndDeb(t *testing.T, debDir string) (image, deb string) {
	t.Helper()
	begin := time.Now()
	type built struct {
		deb string
		err error
	}
	debc := make(chan built, 1)
	go func() {
		deb, err := buildDeb(debDir)
		debc <- built{deb, err}
	}()
	image, err := nodeImage()
	b := <-debc
	if err != nil {
		t.Skipf("SKIPPED: no node image: %v", err)
	}
	if b.err != nil {
		t.Fatal(b.err)
	}
	t.Logf("image %s and %s ready in %.1f s", image, filepath.Base(b.deb), time.Since(begin).Seconds())
	return image, b.deb
}
