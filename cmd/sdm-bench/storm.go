package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// stormResult is what the daemon did with a uevent storm.
type stormResult struct {
	written, heard      int           // change events written; events the independent listener heard
	daemonEvents        uint64        // events the daemon received
	rescans, lost       uint64        // its state reads, and lost-event notices
	cpu, wall           time.Duration // its CPU time, and the time until it had absorbed the storm
	rescanTime          time.Duration
	added, removed      int
	exact               bool
	advertised, present []string
}

// storm writes c.storm "change" uevents for /dev/null as fast as it can,
// with real zram adds and removes in the middle, and reports how the daemon
// absorbed them and whether its final advertised state is exactly the
// devices present.
func storm(ctx context.Context, c *config) (stormResult, error) {
	var r stormResult
	dir, rules, k, l, err := newZramRun(ctx, c, "storm")
	if err != nil {
		return r, err
	}
	defer k.Stop()
	defer l.close()
	d, err := startDaemon(c, "--config", rules, "--plugin-dir", dir, "--uevent-source", "kernel",
		"--remove-after", "0", "--resync", "1h")
	if err != nil {
		return r, err
	}
	defer d.stop()
	v0, err := d.vars(false)
	if err != nil {
		return r, err
	}
	cpu0, err := cpuTime(d.cmd.Process.Pid)
	if err != nil {
		return r, err
	}
	uevent, err := os.OpenFile("/sys/class/mem/null/uevent", os.O_WRONLY, 0)
	if err != nil {
		return r, err
	}
	var zrams []int
	defer func() {
		for _, n := range zrams {
			_ = zramRemove(n)
		}
	}()
	start := time.Now()
	for i := range c.storm {
		if _, err := uevent.Write([]byte("change")); err != nil {
			uevent.Close()
			return r, err
		}
		r.written++
		switch i {
		case c.storm / 4, c.storm / 2, 3 * c.storm / 4:
			n, err := zramAdd()
			if err != nil {
				uevent.Close()
				return r, err
			}
			zrams = append(zrams, n)
			r.added++
		case 5 * c.storm / 8:
			if err := zramRemove(zrams[0]); err != nil {
				uevent.Close()
				return r, err
			}
			r.removed++
		}
	}
	uevent.Close()
	// Absorbed: the daemon has counted as many events as the kernel sent
	// (or stopped counting: a lost burst is a rescan, not a count).
	var last uint64
	var v debugVars
	for still := 0; still < 10; {
		time.Sleep(50 * time.Millisecond)
		if v, err = d.vars(false); err != nil {
			return r, err
		}
		if v.Stats.Events == last {
			still++
		} else {
			still, last = 0, v.Stats.Events
		}
	}
	r.wall = time.Since(start)
	cpu1, err := cpuTime(d.cmd.Process.Pid)
	if err != nil {
		return r, err
	}
	r.cpu = cpu1 - cpu0
	r.daemonEvents = v.Stats.Events - v0.Stats.Events
	r.rescans = v.Stats.Rescans - v0.Stats.Rescans
	r.lost = v.Stats.Lost - v0.Stats.Lost
	r.rescanTime = time.Duration(v.Stats.RescanNanos - v0.Stats.RescanNanos)
	for drained := false; !drained; {
		select {
		case <-l.events:
			r.heard++
		default:
			drained = true
		}
	}

	// Exact: healthy resources are exactly the zram nodes present now.
	present, _ := filepath.Glob("/dev/zram*")
	for _, p := range present {
		r.present = append(r.present, "smarter-devices/"+filepath.Base(p))
	}
	slices.Sort(r.present)
	wctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	_ = k.Wait(wctx, func() bool {
		return slices.Equal(healthyResources(k), r.present)
	})
	r.advertised = healthyResources(k)
	r.exact = slices.Equal(r.advertised, r.present)
	return r, nil
}

func healthyResources(k *plugintest.FakeKubelet) []string {
	var out []string
	for _, res := range k.Resources() {
		if allHealth(pluginapi.Healthy)(k.Devices(res)) {
			out = append(out, res)
		}
	}
	slices.Sort(out)
	return out
}
