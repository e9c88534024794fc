package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// kubeletLatency runs the e2e module's TestKubeletHotplugLatency: the same
// measurement, to the real kubelet device manager's GetCapacity.
func kubeletLatency(c *config) ([]series, error) {
	return e2eSeries(c, "TestKubeletHotplugLatency")
}

// kubeletAllocate runs the e2e module's TestKubeletAllocateLatency: the real
// kubelet device manager's Allocate of a pod over the old daemon's default
// rules, c.cycles pods.
func kubeletAllocate(c *config) ([]series, error) {
	return e2eSeries(c, "TestKubeletAllocateLatency")
}

// e2eSeries runs one benchmark test of the e2e module and reads the
// LATENCY lines it prints.
func e2eSeries(c *config, test string) ([]series, error) {
	out, err := runE2E(c, test)
	if err != nil {
		return nil, err
	}
	ss, err := parseSeries(out)
	if err == nil && len(ss) == 0 {
		err = fmt.Errorf("e2e %s printed no figures (skipped?):\n%s", test, out)
	}
	return ss, err
}

// runE2E runs one benchmark test of the e2e module with env added and
// returns what it printed.
func runE2E(c *config, test string, env ...string) (string, error) {
	cmd := exec.Command("go", "test", "-count=1", "-timeout=60m", "-run", "^"+test+"$", "-v", ".")
	cmd.Dir = "e2e"
	cmd.Env = append(append(os.Environ(), "SDM_BENCH_CYCLES="+strconv.Itoa(c.cycles)), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("e2e %s: %w\n%s", test, err, out.String())
	}
	return out.String(), nil
}

// parseSeries reads the LATENCY lines of an e2e benchmark's output.
func parseSeries(out string) ([]series, error) {
	var ss []series
	for _, text := range strings.Split(out, "\n") {
		line, ok := strings.CutPrefix(text, "LATENCY ")
		if !ok {
			continue
		}
		var name string
		var n int
		var p50, p90, p99, mx float64
		if _, err := fmt.Sscanf(line, "series=%q n=%d p50=%f p90=%f p99=%f max=%f", &name, &n, &p50, &p90, &p99, &mx); err != nil {
			return nil, fmt.Errorf("LATENCY line %q: %w", line, err)
		}
		msd := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
		ss = append(ss, series{name: name, n: n, fixed: []time.Duration{msd(p50), msd(p90), msd(p99), msd(mx)}})
	}
	return ss, nil
}

// micro runs the Go micro-benchmarks and returns their result lines.
func micro() ([]string, error) {
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-count", "1",
		"./conf", "./hotplug", "./daemon")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test -bench: %w\n%s", err, out.String())
	}
	var lines []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Benchmark") {
			lines = append(lines, sc.Text())
		}
	}
	return lines, sc.Err()
}

// kvLines are the lines of out that begin with prefix, each read as
// space-separated key=value fields.
func kvLines(out, prefix string) []map[string]string {
	var rows []map[string]string
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		rows = append(rows, kv)
	}
	return rows
}
