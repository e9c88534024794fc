package main

import (
	"fmt"
	"strings"
)

// attackBench runs the e2e module's attack tests (TestAttack*: the metrics
// port and a device-plugin socket attacked while the daemon serves the
// real kubelet device manager) on the daemon built as `make build` builds
// it, and returns the report's section, in Markdown, from their ATTACK
// lines. The tests assert the bounds; this only records the figures.
func attackBench(c *config) (string, error) {
	out, err := runE2E(c, "TestAttack.*", "SDM_E2E_RELEASE_DAEMON="+c.binary)
	if err != nil {
		return "", err
	}
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "ATTACK "); ok {
			lines = append(lines, rest)
		}
	}
	if len(lines) == 0 {
		return "", fmt.Errorf("e2e TestAttack* printed no ATTACK line:\n%s", out)
	}
	var b strings.Builder
	b.WriteString("## Attacks\n\n")
	b.WriteString("The e2e module's `TestAttack*`: the metrics port (`/healthz` probed every 100 ms on a new connection with a\n")
	b.WriteString("1 s timeout, as the kubelet's liveness probe) and two device-plugin sockets attacked, beside the real kubelet\n")
	b.WriteString("device manager; VmHWM growth over the attack (each test fails past 16 MiB). What each attack is:\n")
	b.WriteString("[docs/operations.md](docs/operations.md#security).\n\n```\n")
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	b.WriteString("```\n")
	return b.String(), nil
}
