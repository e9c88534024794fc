// Command sdm-bench measures smarter-device-manager on this machine and
// writes BENCHMARKS.md: hotplug latency from the kernel's uevent to the
// kubelet side, Allocate through the real kubelet, start-up time, footprint, idle CPU, uevent-storm
// throughput, and the Go micro-benchmarks. It prints figures; it asserts
// nothing about time. Run it as root (`make bench`): it creates zram
// devices, mounts a tmpfs device root and runs the daemon binary against a
// fake kubelet, and removes all of it afterwards.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

type config struct {
	out      string
	cycles   int
	sizes    []int
	idle     time.Duration
	storm    int
	skipUdev bool
	only     map[string]bool
	workDir  string
	binary   string

	kubeletIdle time.Duration // the idle window of the real-kubelet runs by size
}

func main() {
	os.Exit(run())
}

func run() int {
	var c config
	var sizes string
	quick := flag.Bool("quick", false, "small counts, for a smoke test of the tool itself")
	flag.StringVar(&c.out, "out", "BENCHMARKS.md", "where to write the report")
	flag.IntVar(&c.cycles, "cycles", 200, "hot_add/hot_remove cycles per latency series")
	flag.StringVar(&sizes, "sizes", "10,100,1000", "device counts for start-up and footprint")
	flag.DurationVar(&c.idle, "idle", 60*time.Second, "idle window for CPU time")
	flag.IntVar(&c.storm, "storm", 20000, "uevents in the storm")
	flag.DurationVar(&c.kubeletIdle, "kubelet-idle", 20*time.Second, "idle window of the real-kubelet runs by size")
	flag.BoolVar(&c.skipUdev, "skip-udev", false, "skip the udev-mode latency series")
	only := flag.String("only", "", "comma-separated parts to run (latency,kubelet,allocate,sizes,startup,dra,attack,reboot,flap,fleet,storm,micro); all when empty")
	flag.Parse()
	if *only != "" {
		c.only = map[string]bool{}
		for _, p := range strings.Split(*only, ",") {
			c.only[p] = true
		}
	}
	if *quick {
		c.cycles, sizes, c.idle, c.storm, c.kubeletIdle = 10, "10,50", 3*time.Second, 500, 2*time.Second
	}
	for _, f := range strings.Split(sizes, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "sdm-bench: -sizes: %q\n", f)
			return 2
		}
		c.sizes = append(c.sizes, n)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "sdm-bench: needs root (zram devices, a tmpfs device root, netlink)")
		return 1
	}
	if err := bench(&c); err != nil {
		fmt.Fprintf(os.Stderr, "sdm-bench: %v\n", err)
		return 1
	}
	return 0
}

func bench(c *config) error {
	work, err := os.MkdirTemp("", "sdmb")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	c.workDir = work
	c.binary = filepath.Join(work, "smarter-device-manager")
	// The same build as `make build`.
	build := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace,nethttpomithttp2", "-ldflags=-s -w", "-o", c.binary, "./cmd/smarter-device-manager")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the daemon: %w", err)
	}

	ctx := context.Background()
	r := &report{started: time.Now(), kubeletIdle: c.kubeletIdle, sizes: map[string][]sizeRun{}}
	r.machine = describeMachine()
	if fi, err := os.Stat(c.binary); err == nil {
		r.binarySize = fi.Size()
	}

	// The measurements in report order; "only" picks by part.
	type stepT struct {
		part, name string
		run        func() error
	}
	var steps []stepT
	sources := []string{"kernel", "udev"}
	if c.skipUdev {
		sources = sources[:1]
	}
	for _, src := range sources {
		for _, fresh := range []bool{false, true} {
			steps = append(steps, stepT{"latency", fmt.Sprintf("hotplug latency (%s, new resource %v)", src, fresh), func() error {
				s, err := latency(ctx, c, src, fresh)
				r.latency = append(r.latency, s...)
				return err
			}})
		}
	}
	steps = append(steps,
		stepT{"kubelet", "hotplug latency to the real kubelet (e2e module)", func() (err error) {
			var s []series
			s, err = kubeletLatency(c)
			r.latency = append(r.latency, s...)
			return err
		}},
		stepT{"allocate", "Allocate through the real kubelet (e2e module)", func() (err error) {
			r.allocate, err = kubeletAllocate(c)
			return err
		}})
	for _, fsType := range []string{"tmpfs", "disk"} {
		steps = append(steps, stepT{"sizes", "footprint, start-up and hotplug by size against the real kubelet, plugin directory on " + fsType, func() error {
			runs, ss, err := kubeletSizes(c, fsType)
			r.sizes[fsType] = runs
			r.sizeLatency = append(r.sizeLatency, ss...)
			return err
		}})
	}
	for _, n := range c.sizes {
		steps = append(steps, stepT{"startup", fmt.Sprintf("start-up and footprint with %d devices", n), func() error {
			f, err := startupAndFootprint(ctx, c, n)
			if err == nil {
				r.footprint = append(r.footprint, f)
			}
			return err
		}})
	}
	steps = append(steps,
		stepT{"dra", "DRA mode (e2e module)", func() (err error) { r.dra, err = draBench(c); return err }},
		stepT{"attack", "attacks on the metrics port and a plugin socket (e2e module)", func() (err error) { r.attacks, err = attackBench(c); return err }},
		stepT{"reboot", "node reboots (cluster module, Docker)", func() (err error) { r.reboots, err = rebootBench(c); return err }},
		stepT{"flap", "a flapping device against the real kubelet (e2e module)", func() (err error) { r.flap, err = flapBench(c); return err }},
		stepT{"fleet", "a fleet of simulated nodes in DRA mode against the real API server (e2e module)", func() (err error) { r.fleet, err = fleetBench(c); return err }},
		stepT{"storm", "uevent storm", func() (err error) { r.storm, err = storm(ctx, c); return err }},
		stepT{"micro", "Go micro-benchmarks", func() (err error) { r.micro, err = micro(); return err }})
	// A part that fails is named in the report and the others still run:
	// a whole run takes a quarter of an hour.
	var failed []error
	for _, st := range steps {
		if c.only != nil && !c.only[st.part] {
			continue
		}
		fmt.Fprintf(os.Stderr, "sdm-bench: %s…\n", st.name)
		if err := st.run(); err != nil {
			err = fmt.Errorf("%s: %w", st.name, err)
			fmt.Fprintf(os.Stderr, "sdm-bench: %v\n", err)
			failed = append(failed, err)
			r.failed = append(r.failed, st.name)
		}
	}
	r.finished = time.Now()
	r.command = "make bench  (go run ./cmd/sdm-bench " + strings.Join(os.Args[1:], " ") + ")"
	if err := os.WriteFile(c.out, []byte(r.markdown()), 0o644); err != nil {
		return errors.Join(append(failed, err)...)
	}
	fmt.Fprintf(os.Stderr, "sdm-bench: wrote %s\n", c.out)
	return errors.Join(failed...)
}
