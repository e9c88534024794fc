package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

const waitLimit = 30 * time.Second

// series is one latency distribution.
type series struct {
	name    string
	samples []time.Duration
	// n and fixed (p50, p90, p99, max) hold figures computed elsewhere
	// (the e2e module) instead of samples.
	n     int
	fixed []time.Duration
}

func (s series) count() int {
	if s.fixed != nil {
		return s.n
	}
	return len(s.samples)
}

func (s series) pct(p float64) time.Duration {
	if s.fixed != nil {
		switch p {
		case 0.5:
			return s.fixed[0]
		case 0.9:
			return s.fixed[1]
		case 0.99:
			return s.fixed[2]
		}
		return s.fixed[3]
	}
	if len(s.samples) == 0 {
		return 0
	}
	sorted := slices.Clone(s.samples)
	slices.Sort(sorted)
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// latency measures, over c.cycles zram hot_add/hot_remove cycles, the time
// from the kernel's first uevent of the change (timestamped at receipt by an
// independent netlink listener) to the ListAndWatch message that shows the device
// Healthy / Unhealthy at the fake kubelet. fresh uses --remove-after=1ms,
// so every add starts and registers a new server; otherwise the resource
// stays and only its health flips.
func latency(ctx context.Context, c *config, source string, fresh bool) ([]series, error) {
	if _, err := os.Stat("/sys/class/zram-control"); err != nil {
		return nil, fmt.Errorf("no zram-control (modprobe zram num_devices=0): %w", err)
	}
	if source == "udev" && !testkernel.UdevdAlive() {
		stop, err := testkernel.StartUdevd()
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	dir, rules, k, l, err := newZramRun(ctx, c, "lat")
	if err != nil {
		return nil, err
	}
	defer k.Stop()
	defer l.close()
	removeAfter := "0"
	if fresh {
		removeAfter = "1ms"
	}
	// Damping off: the series cycle one device hundreds of times a minute,
	// which flap damping holds by design; a clean change takes the same path
	// either way (the flap part times clean plugs with damping on).
	d, err := startDaemon(c, "--config", rules, "--plugin-dir", dir, "--uevent-source", source,
		"--remove-after", removeAfter, "--resync", "1h", "--flap-half-life", "0")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	if _, err := d.vars(false); err != nil { // up and listening
		return nil, err
	}

	label := "health flip"
	if fresh {
		label = "new resource"
	}
	add := series{name: fmt.Sprintf("%s, %s: add → Healthy", source, label)}
	rm := series{name: fmt.Sprintf("%s, %s: remove → Unhealthy", source, label)}
	for i := range c.cycles {
		// The next zram number is the lowest free one; the kubelet-side wait
		// starts before the syscall, which returns only after the kernel has
		// sent its uevent (hot_remove in particular takes a while longer).
		next, err := nextZram()
		if err != nil {
			return nil, err
		}
		res := "smarter-devices/zram" + strconv.Itoa(next)
		healthy := waitAsync(k, res, pluginapi.Healthy)
		l.drain()
		n, err := zramAdd()
		if err != nil {
			return nil, err
		}
		name := "zram" + strconv.Itoa(n)
		if n != next {
			_ = zramRemove(n)
			return nil, fmt.Errorf("zram hot_add gave %s, expected zram%d", name, next)
		}
		t0, err := l.await("add", name, waitLimit)
		if err != nil {
			_ = zramRemove(n)
			return nil, err
		}
		t1, err := (<-healthy).get()
		if err != nil {
			_ = zramRemove(n)
			return nil, err
		}
		unhealthy := waitAsync(k, res, pluginapi.Unhealthy)
		l.drain()
		if err := zramRemove(n); err != nil {
			return nil, err
		}
		t2, err := l.await("remove", name, waitLimit)
		if err != nil {
			return nil, err
		}
		t3, err := (<-unhealthy).get()
		if err != nil {
			return nil, err
		}
		// The first add also starts the server; in the health-flip series
		// it is not a flip, so it is left out.
		if fresh || i > 0 {
			add.samples = append(add.samples, t1.Sub(t0))
		}
		rm.samples = append(rm.samples, t3.Sub(t2))
		if fresh {
			// Wait for the resource to be stopped, so the next add is a new one.
			wctx, cancel := context.WithTimeout(ctx, waitLimit)
			err := k.Wait(wctx, func() bool { return !k.Streaming(res) })
			cancel()
			if err != nil {
				return nil, fmt.Errorf("%s not stopped after --remove-after: %w", res, err)
			}
		}
	}
	return []series{add, rm}, nil
}

type stampOrErr struct {
	at  time.Time
	err error
}

func (s stampOrErr) get() (time.Time, error) { return s.at, s.err }

// waitAsync waits in the background for resource to show health and
// delivers the moment the kubelet side saw it.
func waitAsync(k *plugintest.FakeKubelet, resource, health string) <-chan stampOrErr {
	ch := make(chan stampOrErr, 1)
	go func() {
		at, err := waitHealth(k, resource, health, waitLimit)
		ch <- stampOrErr{at, err}
	}()
	return ch
}

// nextZram is the number zram's hot_add will hand out: the lowest free one.
func nextZram() (int, error) {
	for n := 0; ; n++ {
		if _, err := os.Stat("/sys/block/zram" + strconv.Itoa(n)); os.IsNotExist(err) {
			return n, nil
		} else if err != nil {
			return 0, err
		}
	}
}
