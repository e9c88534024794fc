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
	cmd := exec.Command("go", "test", "-count=1", "-run", "^"+test+"$", "-v", ".")
	cmd.Dir = "e2e"
	cmd.Env = append(os.Environ(), "SDM_BENCH_CYCLES="+strconv.Itoa(c.cycles))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("e2e %s: %w\n%s", test, err, out.String())
	}
	var ss []series
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "LATENCY ")
		if !ok {
			continue
		}
		var name string
		var n int
		var p50, p90, p99, mx float64
		if _, err := fmt.Sscanf(line, "series=%q n=%d p50=%f p90=%f p99=%f max=%f", &name, &n, &p50, &p90, &p99, &mx); err != nil {
			return nil, fmt.Errorf("e2e %s line %q: %w", test, line, err)
		}
		msd := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
		ss = append(ss, series{name: name, n: n, fixed: []time.Duration{msd(p50), msd(p90), msd(p99), msd(mx)}})
	}
	if len(ss) == 0 {
		return nil, fmt.Errorf("e2e %s printed no figures (skipped?):\n%s", test, out.String())
	}
	return ss, sc.Err()
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
