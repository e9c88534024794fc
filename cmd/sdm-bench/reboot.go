package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// rebootBench runs the node suite's TestNodeReboot and TestNodeDeviceFollows*
// (cluster/: two node
// containers whose PID 1 is systemd, running the kubelet and containerd as
// units, one with the daemon as the .deb's service, one with the DaemonSet,
// each rebooted cleanly and by a power cut) and returns the report's
// section, in Markdown, from their REBOOT, TIMELINE and FOLLOW lines. The test
// asserts what must hold; this only records the figures. It needs the
// cluster suite's binaries (scripts/cluster-build.sh builds them once).
func rebootBench(c *config) (string, error) {
	build := exec.Command("bash", "scripts/cluster-build.sh")
	build.Stderr = os.Stderr
	b, err := build.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/cluster-build.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	cmd := exec.Command("go", "test", "-count=1", "-timeout=45m", "-run", "^TestNode(Reboot|DeviceFollows.*)$", "-v", ".")
	cmd.Dir = "cluster"
	cmd.Env = append(os.Environ(), "SDM_CLUSTER_BIN="+lines[len(lines)-1])
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cluster TestNodeReboot, TestNodeDeviceFollows*: %w\n%s", err, out.String())
	}
	var reboots, timelines, follows []string
	for _, line := range strings.Split(out.String(), "\n") {
		// t.Logf's lines: "    file.go:NNN: REBOOT ...".
		if _, rest, ok := strings.Cut(line, ": REBOOT "); ok {
			reboots = append(reboots, rest)
		} else if _, rest, ok := strings.Cut(line, ": TIMELINE "); ok {
			timelines = append(timelines, rest)
		} else if _, rest, ok := strings.Cut(line, ": FOLLOW "); ok {
			follows = append(follows, rest)
		}
	}
	if len(reboots) == 0 {
		return "", fmt.Errorf("cluster TestNodeReboot printed no REBOOT line:\n%s", out.String())
	}
	var s strings.Builder
	s.WriteString("## Node reboots\n\n")
	s.WriteString("The node suite's `TestNodeReboot` (`make e2e-nodes`): two worker nodes, containers whose PID 1 is systemd with\n")
	s.WriteString("containerd and the kubelet as units, joined to a real control plane; node A runs the daemon as the `.deb`'s\n")
	s.WriteString("service (ordered before the kubelet), node B as the DaemonSet. On each node a bare pod and a Deployment's pod hold\n")
	s.WriteString("the node's zram device. Each node is stopped cleanly (`docker stop`: systemd shuts down) or by a power cut (`docker\n")
	s.WriteString("kill`), its cgroups removed, and started. Per pod: the time from the reboot to a new container of it running with its device\n")
	s.WriteString("(its log read through the API server), and the pods the kubelet refused with `UnexpectedAdmissionError`.\n")
	s.WriteString("Why: [docs/deployment.md](docs/deployment.md#after-a-node-reboot-daemonset-or-systemd-service).\n\n```\n")
	for _, l := range reboots {
		s.WriteString(strings.TrimRight(l, " ") + "\n")
	}
	s.WriteString("```\n")
	if len(timelines) > 0 {
		s.WriteString("\nEach boot, from the node's own journal (seconds after the reboot began):\n\n```\n")
		for _, l := range timelines {
			s.WriteString(l + "\n")
		}
		s.WriteString("```\n")
	}
	if len(follows) > 0 {
		s.WriteString("\nA pod following its device from node A to node B (`TestNodeDeviceFollows`, DRA with `evict_on_unplug`; and\n")
		s.WriteString("`TestNodeDeviceFollowsDevicePlugin`, where the old pod is deleted by hand: the API has no eviction), from the plug\n")
		s.WriteString("into node B to the new pod running there with the device open:\n\n```\n")
		for _, l := range follows {
			s.WriteString(l + "\n")
		}
		s.WriteString("```\n")
	}
	return s.String(), nil
}
