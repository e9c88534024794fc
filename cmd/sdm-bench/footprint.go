package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// footprint is one device count's start-up and memory figures.
type footprint struct {
	devices     int
	startup     []time.Duration // process start → every resource registered and its first ListAndWatch received
	startupCPU  []time.Duration // the daemon's own CPU time over the same span
	mem         memStatus
	heapInuse   uint64
	heapAlloc   uint64
	goroutines  int
	idleCPU     time.Duration
	idleWindow  time.Duration
	idleRescans uint64
}

func (f footprint) medianStartup() time.Duration {
	return series{samples: f.startup}.pct(0.5)
}

// startupAndFootprint starts the daemon three times on a tmpfs device root
// holding n matching nodes, timing each start; after the last it lets the
// daemon idle and reads its memory and the CPU it used while idle.
func startupAndFootprint(ctx context.Context, c *config, n int) (footprint, error) {
	f := footprint{devices: n, idleWindow: c.idle}
	devRoot := filepath.Join(c.workDir, "dev"+strconv.Itoa(n))
	unmount, err := mountDevRoot(devRoot, n)
	if err != nil {
		return f, err
	}
	defer unmount()
	for run := range 3 {
		dir, rules, k, err := newRun(c, "up", "- devicematch: ^bd[0-9]+$\n  nummaxdevices: 1\n")
		if err != nil {
			return f, err
		}
		start := time.Now()
		d, err := startDaemon(c, "--config", rules, "--plugin-dir", dir, "--dev-root", devRoot,
			"--uevent-source", "kernel", "--sys-root", dir)
		if err != nil {
			k.Stop()
			return f, err
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err = k.Wait(wctx, func() bool { return k.Listed() >= n })
		cancel()
		if err != nil {
			d.stop()
			k.Stop()
			return f, fmt.Errorf("%d resources not all registered: %w", n, err)
		}
		f.startup = append(f.startup, time.Since(start))
		if cpu, err := cpuTime(d.cmd.Process.Pid); err == nil {
			f.startupCPU = append(f.startupCPU, cpu)
		}
		if run == 2 {
			err = idle(c, d, &f)
		}
		if serr := d.stop(); err == nil && serr != nil {
			err = serr
		}
		k.Stop()
		if err != nil {
			return f, err
		}
	}
	return f, nil
}

func idle(c *config, d *daemonProc, f *footprint) error {
	// Let start-up garbage and the first gRPC buffers settle.
	time.Sleep(2 * time.Second)
	pid := d.cmd.Process.Pid
	before, err := d.vars(false)
	if err != nil {
		return err
	}
	cpu0, err := cpuTime(pid)
	if err != nil {
		return err
	}
	time.Sleep(c.idle)
	cpu1, err := cpuTime(pid)
	if err != nil {
		return err
	}
	after, err := d.vars(true)
	if err != nil {
		return err
	}
	f.idleCPU = cpu1 - cpu0
	f.idleRescans = after.Stats.Rescans - before.Stats.Rescans
	f.heapInuse, f.heapAlloc, f.goroutines = after.Memstats.HeapInuse, after.Memstats.HeapAlloc, after.Goroutines
	f.mem, err = procStatus(pid)
	return err
}
