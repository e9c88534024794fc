package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/smarter-project/smarter-device-manager/e2e/probe"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
)

// container is one running container: runc in the foreground with the
// probe's stdin and stdout on pipes.
type container struct {
	t      *testing.T // the test that started it; cleanup reports there
	id     string
	bundle string
	state  string // runc's --root
	spec   *oci.Spec
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // the probe's answers
	stderr *syncBuffer
	done   chan struct{} // closed when runc has exited
	err    error         // runc's exit, set before done is closed
}

// runContainer starts the pod's container under runc with the devices,
// environment and mounts the kubelet gives it. Cleanup stops it and
// removes the container, its cgroup and its bundle.
func (n *node) runContainer(pod *v1.Pod, sec podSecurity) *container {
	n.t.Helper()
	return n.runContainerOpts(pod, n.runOptions(pod), sec)
}

// runContainerOpts starts the pod's container with the run options opts
// (the DRA cases take theirs from the kubelet's DRA manager).
func (n *node) runContainerOpts(pod *v1.Pod, opts *devicemanager.DeviceRunContainerOptions, sec podSecurity) *container {
	n.t.Helper()
	t := n.t
	id := fmt.Sprintf("sdm-e2e-%d-%d", os.Getpid(), ctrSeq.Add(1))
	c := &container{t: t, id: id, bundle: mkdirTemp(t), state: mkdirTemp(t), lines: make(chan string, 16), stderr: &syncBuffer{}, done: make(chan struct{})}
	// The root filesystem first: the user options read its /etc/passwd,
	// as containerd's do from the image's.
	if err := c.writeRootfs(); err != nil {
		t.Fatal(err)
	}
	spec, err := ctrSpec(id, c.bundle, opts, sec, n.cdiDir)
	if err != nil {
		t.Fatalf("container spec for pod %s: %v", pod.Name, err)
	}
	c.spec = spec
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.bundle, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(runcPath, "--root", c.state, "run", "--bundle", c.bundle, id)
	c.cmd.Stderr = c.stderr
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("runc run: %v", err)
	}
	t.Cleanup(c.remove)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c
}

// writeRootfs writes the bundle's root filesystem: the probe alone.
func (c *container) writeRootfs() error {
	rootfs := filepath.Join(c.bundle, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	// The bundle directory is private to root by default; the process may
	// run as another user.
	if err := os.Chmod(c.bundle, 0o755); err != nil {
		return err
	}
	bin, err := os.ReadFile(probeBin.path)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(rootfs, "probe"), bin, 0o755)
}

// do sends the probe one request and returns its answer.
func (c *container) do(t *testing.T, req probe.Request) probe.Reply {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.stdin.Write(append(b, '\n')); err != nil {
		t.Fatalf("writing to the probe: %v; runc: %s", err, c.stderr.String())
	}
	select {
	case line, ok := <-c.lines:
		if !ok {
			<-c.done
			t.Fatalf("the container ended (%v) before answering %s; runc: %s", c.err, b, c.stderr.String())
		}
		var rep probe.Reply
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			t.Fatalf("probe answered %q: %v", line, err)
		}
		return rep
	case <-time.After(waitLimit):
		t.Fatalf("no answer to %s within %v; runc: %s", b, waitLimit, c.stderr.String())
	}
	return probe.Reply{}
}

// status reports runc's view of the container's status ("running",
// "stopped", ...).
func (c *container) status() string {
	out, err := exec.Command(runcPath, "--root", c.state, "state", c.id).Output()
	if err != nil {
		return "unknown: " + err.Error()
	}
	var st struct{ Status string }
	if err := json.Unmarshal(out, &st); err != nil {
		return "unknown: " + err.Error()
	}
	return st.Status
}

// exit ends the probe's input and waits for the container to exit; it
// returns the container's exit status.
func (c *container) exit(t *testing.T) int {
	t.Helper()
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(waitLimit):
		t.Fatalf("container %s still running %v after its input ended", c.id, waitLimit)
	}
	return c.cmd.ProcessState.ExitCode()
}

// remove stops the container if it still runs (runc kill, by its id),
// deletes it, and removes its cgroup, which runc normally removes itself.
func (c *container) remove() {
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(waitLimit):
		_ = exec.Command(runcPath, "--root", c.state, "kill", c.id, "KILL").Run()
		<-c.done
	}
	if out, err := exec.Command(runcPath, "--root", c.state, "delete", "--force", c.id).CombinedOutput(); err != nil && !strings.Contains(string(out), "does not exist") {
		c.t.Errorf("runc delete %s: %v: %s", c.id, err, out)
	}
	for _, dir := range cgroupDirs(c.spec.Linux.CgroupsPath) {
		if err := os.Remove(dir); err == nil {
			c.t.Logf("removed cgroup %s that runc left", dir)
		} else if !errors.Is(err, os.ErrNotExist) {
			c.t.Errorf("cleanup: cgroup %s: %v", dir, err)
		}
		// The parent goes once no test's container is left in it.
		_ = os.Remove(filepath.Dir(dir))
	}
	if out := c.stderr.String(); c.t.Failed() && out != "" {
		c.t.Logf("runc stderr of %s:\n%s", c.id, out)
	}
}

// cgroupDirs are the directories of a cgroup path in every hierarchy
// mounted under /sys/fs/cgroup (v1), or in the unified one (v2).
func cgroupDirs(path string) []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{filepath.Join("/sys/fs/cgroup", path)}
	}
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range ents {
		// Co-mounted controllers appear once by their mount, once by
		// symlinks (cpu -> cpu,cpuacct): the mounts only.
		if e.IsDir() {
			out = append(out, filepath.Join("/sys/fs/cgroup", e.Name(), path))
		}
	}
	return out
}

// deviceRules is the container's device cgroup as the kernel holds it
// (v1's devices.list: "b 252:3 r"); nil on cgroup v2.
func (c *container) deviceRules() []string {
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/devices", c.spec.Linux.CgroupsPath, "devices.list"))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// hostNode is a host node as the probe's stat reports one.
func hostNode(t *testing.T, path string) probe.Reply {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	typ := "c"
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		typ = "b"
	}
	return probe.Reply{Op: "stat", Path: path, Type: typ, Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev),
		UID: st.Uid, GID: st.Gid, Mode: fmt.Sprintf("%04o", st.Mode&0o7777)}
}
