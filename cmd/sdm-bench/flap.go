package main

import (
	"fmt"
	"strconv"
	"strings"
)

// flapSeconds is how long each flap run lasts (issue 22: 60 s).
const flapSeconds = 60

// flapBench runs the e2e module's TestFlapBench (a real zram device
// removed and added back at 10, 100 and 1,000 changes a second, alone and
// beside 99 quiet devices, with flap damping off and on, in device-plugin
// mode against the real kubelet device manager and in DRA mode against
// the real API server) and returns the report's section, in Markdown, from
// its FLAP lines.
func flapBench(c *config) (string, error) {
	if err := buildDRA(c); err != nil {
		return "", err
	}
	out, err := runE2E(c, "TestFlapBench", "SDM_E2E_DAEMON="+c.binary, "SDM_BENCH_FLAP_SECONDS="+strconv.Itoa(flapSeconds))
	if err != nil {
		return "", err
	}
	rows := kvLines(out, "FLAP ")
	if len(rows) != 16 {
		return "", fmt.Errorf("e2e TestFlapBench printed %d FLAP lines, want 16:\n%s", len(rows), out)
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## A flapping device\n\n")
	w("A real zram device removed and added back (real uevents) as fast as the rate asks, for %d s per run (the e2e\n", flapSeconds)
	w("module's `TestFlapBench`), with flap damping off (`--flap-half-life 0`: every change pushed, as before damping) and\n")
	w("at its defaults (10 s half-life, held at a penalty of 6, released at most 2 min after the last change). Writes:\n")
	w("in device-plugin mode the real kubelet device manager's checkpoint writes (it rewrites its checkpoint after every\n")
	w("update a plugin sends; counted by inotify), in DRA mode the ResourceSlice writes of the real API server (a watch's\n")
	w("events). A clean plug of another, new device during the flap (5 per run) is timed from its hot_add to the manager's\n")
	w("capacity showing it allocatable (polled every ms) or to the watch's slice with it untainted; each also adds a write\n")
	w("or two. \"Changes made\" is what this machine's zram add/remove achieved, which tops out near 100 a second.\n\n")
	w("| mode | damping | asked /s | beside | changes made /s | writes | writes /s | daemon CPU | other plug p50 | max |\n")
	w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		damping := "off"
		if r["damped"] == "true" {
			damping = "on"
		}
		w("| %s | %s | %s | %s quiet | %s | %s | %s | %s s | %s ms | %s ms |\n", r["mode"], damping, r["rate"], r["quiet"], r["achieved"],
			r["writes"], r["writes_per_s"], r["daemon_cpu_s"], r["plug_p50_ms"], r["plug_max_ms"])
	}
	return b.String(), nil
}
