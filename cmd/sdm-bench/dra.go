package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// buildDRA builds the DRA binary beside c.binary as `make build` does
// (where --mode=dra looks for it).
func buildDRA(c *config) error {
	dra := filepath.Join(filepath.Dir(c.binary), "smarter-device-manager-dra")
	build := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace,dra", "-ldflags=-s -w", "-o", dra, "./cmd/smarter-device-manager")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the DRA binary: %w", err)
	}
	return nil
}

// draFootprint is one DRAFOOTPRINT line of the e2e module's TestDRABench:
// the daemon idle in one mode, with the same rules.
type draFootprint struct {
	mode                          string
	vmrss, vmhwm, anon, file, bin int64
	idle                          time.Duration
}

// draBench builds the DRA binary beside c.binary as `make build` does
// (where --mode=dra looks for it), runs the e2e module's TestDRABench
// (the daemon in DRA mode against an in-process kube-apiserver and the
// kubelet's DRA manager, then in device-plugin mode against the kubelet's
// device manager) and returns the report's DRA section, in Markdown.
func draBench(c *config) (string, error) {
	if err := buildDRA(c); err != nil {
		return "", err
	}
	out, err := runE2E(c, "TestDRABench", "SDM_E2E_DAEMON="+c.binary, "SDM_BENCH_IDLE="+c.kubeletIdle.String())
	if err != nil {
		return "", err
	}
	ss, err := parseSeries(out)
	if err != nil {
		return "", err
	}
	var fps []draFootprint
	for _, kv := range kvLines(out, "DRAFOOTPRINT ") {
		num := func(k string) int64 { v, _ := strconv.ParseInt(kv[k], 10, 64); return v }
		idle, _ := strconv.ParseFloat(kv["idle_s"], 64)
		fps = append(fps, draFootprint{mode: kv["mode"], vmrss: num("vmrss"), vmhwm: num("vmhwm"), anon: num("rssanon"),
			file: num("rssfile"), bin: num("binary"), idle: time.Duration(idle * float64(time.Second))})
	}
	if len(fps) != 2 || len(ss) != 4 {
		return "", fmt.Errorf("e2e TestDRABench printed %d DRAFOOTPRINT and %d LATENCY lines; want 2 and 4:\n%s", len(fps), len(ss), out)
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## DRA mode\n\n")
	w("The daemon in DRA mode against kube-apiserver v1.37.2 with an embedded etcd and the kubelet's DRA manager, in one\n")
	w("process (the e2e module's `TestDRABench`, %d cycles); latency from the kernel's first uevent, stamped on receipt, to\n", c.cycles)
	w("the API server's watch event with the slice changed; prepare and unprepare as the kubelet's DRA client times them.\n\n")
	w("| series | n | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n")
	for _, s := range ss {
		w("| %s | %d | %s | %s | %s | %s |\n", s.name, s.count(), ms(s.pct(0.5)), ms(s.pct(0.9)), ms(s.pct(0.99)), ms(s.pct(1)))
	}
	w("\n| mode (same rules, idle %v) | VmRSS | VmHWM | RssAnon | RssFile | binary |\n|---|---:|---:|---:|---:|---:|\n", fps[0].idle)
	for _, f := range fps {
		w("| %s | %s | %s | %s | %s | %s |\n", f.mode, mib(f.vmrss), mib(f.vmhwm), mib(f.anon), mib(f.file), mib(f.bin))
	}
	return b.String(), nil
}
