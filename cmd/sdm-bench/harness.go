package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/hotplug"
	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
	"github.com/smarter-project/smarter-device-manager/plugin/plugintest"
)

// daemonProc is the daemon binary under measurement.
type daemonProc struct {
	cmd   *exec.Cmd
	done  chan error
	debug string // host:port of --debug-addr
	log   *os.File
}

// startDaemon runs the binary with args and --debug-addr on a free port.
func startDaemon(c *config, args ...string) (*daemonProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	logf, err := os.CreateTemp(c.workDir, "daemon-*.log")
	if err != nil {
		return nil, err
	}
	p := &daemonProc{done: make(chan error, 1), debug: addr, log: logf}
	p.cmd = exec.Command(c.binary, append(args, "--debug-addr", addr, "--log-level", "warn")...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p, nil
}

// stop ends the daemon with SIGTERM (by its own PID) and waits.
func (p *daemonProc) stop() error {
	defer p.log.Close()
	if p.cmd.Process.Pid <= 1 {
		return errors.New("no daemon PID")
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("daemon did not stop within 30s of SIGTERM")
	}
}

type debugVars struct {
	Memstats struct {
		HeapInuse, HeapAlloc, Sys uint64
	}
	Goroutines int
	Stats      struct {
		Events, Relevant, Lost, Rescans, RescanNanos uint64 `json:",omitempty"`
		Resources                                    int64
	} `json:"smarter_device_manager"`
}

// vars reads the daemon's /debug/vars; gc first collects garbage so heap
// figures are what is live.
func (p *daemonProc) vars(gc bool) (debugVars, error) {
	var v debugVars
	url := "http://" + p.debug + "/debug/vars"
	if gc {
		url += "?gc=1"
	}
	var resp *http.Response
	var err error
	for range 50 { // the endpoint starts with the daemon
		if resp, err = http.Get(url); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	var raw struct {
		Memstats   json.RawMessage
		Goroutines int
		Stats      map[string]float64 `json:"smarter_device_manager"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return v, err
	}
	if err := json.Unmarshal(raw.Memstats, &v.Memstats); err != nil {
		return v, err
	}
	v.Goroutines = raw.Goroutines
	v.Stats.Events = uint64(raw.Stats["events"])
	v.Stats.Relevant = uint64(raw.Stats["relevant"])
	v.Stats.Lost = uint64(raw.Stats["lost"])
	v.Stats.Rescans = uint64(raw.Stats["rescans"])
	v.Stats.RescanNanos = uint64(raw.Stats["rescan_nanos"])
	v.Stats.Resources = int64(raw.Stats["resources"])
	return v, nil
}

// memStatus is what /proc/PID/status says of a process's memory, in bytes.
type memStatus struct {
	rss, hwm, anon, file int64
}

// procStatus reads VmRSS, VmHWM, RssAnon and RssFile of pid.
func procStatus(pid int) (m memStatus, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			m.rss = kb << 10
		case "VmHWM:":
			m.hwm = kb << 10
		case "RssAnon:":
			m.anon = kb << 10
		case "RssFile:":
			m.file = kb << 10
		}
	}
	return m, sc.Err()
}

// cpuTime is the user+system CPU time pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command; utime and stime are the 14th
	// and 15th fields of the line, in clock ticks (100 Hz on Linux).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	fields := strings.Fields(s[i+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// listener is the independent netlink listener: it timestamps each kernel
// uevent on receipt, apart from the daemon's own monitor.
type listener struct {
	events chan stamped
	cancel context.CancelFunc
	done   chan struct{}
}

type stamped struct {
	ev hotplug.Event
	at time.Time
}

func listen(ctx context.Context) (*listener, error) {
	ctx, cancel := context.WithCancel(ctx)
	l := &listener{events: make(chan stamped, 1<<16), cancel: cancel, done: make(chan struct{})}
	m := hotplug.NewMonitor(hotplug.MonitorOptions{Source: hotplug.SourceKernel})
	ready := make(chan struct{})
	go func() {
		defer close(l.done)
		var once bool
		_ = m.Run(ctx, func(ev hotplug.Event) {
			at := time.Now()
			if ev.Lost {
				if ev.Connected && !once {
					once = true
					close(ready)
				}
				return
			}
			select {
			case l.events <- stamped{ev, at}:
			default: // the benchmark reads far faster than this fills
			}
		})
	}()
	select {
	case <-ready:
		return l, nil
	case <-time.After(10 * time.Second):
		cancel()
		<-l.done
		return nil, errors.New("netlink listener did not start")
	}
}

func (l *listener) close() {
	l.cancel()
	<-l.done
}

// drain forgets the events received so far.
func (l *listener) drain() {
	for {
		select {
		case <-l.events:
		default:
			return
		}
	}
}

// await waits for the event for devname with action and returns the
// receipt time of the first event since the last drain: a device's first
// uevent (zram sends bdi's before the block device's) is the one the daemon
// can first react to.
func (l *listener) await(action, devname string, limit time.Duration) (time.Time, error) {
	deadline := time.After(limit)
	var first time.Time
	for {
		select {
		case s := <-l.events:
			if first.IsZero() {
				first = s.at
			}
			if s.ev.Action == action && s.ev.DevName == devname {
				return first, nil
			}
		case <-deadline:
			return time.Time{}, fmt.Errorf("no %s uevent for %s within %v", action, devname, limit)
		}
	}
}

func zramAdd() (int, error) {
	b, err := os.ReadFile("/sys/class/zram-control/hot_add")
	if err != nil {
		return 0, fmt.Errorf("zram hot_add: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// zramRemove removes zramN, retrying while it is busy: right after an add,
// udevd's rules (blkid) may hold the device open for a moment.
func zramRemove(n int) error {
	return testkernel.ZramRemove(n)
}

func allHealth(health string) func([]*pluginapi.Device) bool {
	return func(devs []*pluginapi.Device) bool {
		if len(devs) == 0 {
			return false
		}
		for _, d := range devs {
			if d.Health != health {
				return false
			}
		}
		return true
	}
}

// waitHealth returns the moment the kubelet side saw resource in health.
func waitHealth(k *plugintest.FakeKubelet, resource, health string, limit time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := k.WaitFor(ctx, resource, allHealth(health)); err != nil {
		return time.Time{}, fmt.Errorf("%s never %s: %w", resource, health, err)
	}
	return time.Now(), nil
}

// mountDevRoot mounts a tmpfs at dir and makes n character device nodes
// named bd0 … bd<n-1> (all 1:3, like /dev/null) in it.
func mountDevRoot(dir string, n int) (unmount func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16m,mode=755"); err != nil {
		return nil, fmt.Errorf("mount tmpfs at %s: %w", dir, err)
	}
	unmount = func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) }
	dev := int((1 << 8) | 3)
	for i := range n {
		if err := syscall.Mknod(filepath.Join(dir, "bd"+strconv.Itoa(i)), syscall.S_IFCHR|0o600, dev); err != nil {
			unmount()
			return nil, fmt.Errorf("mknod: %w", err)
		}
	}
	return unmount, nil
}

// zramRules are the rules of the hotplug benchmarks: one resource per zram
// device, in the old daemon's format.
const zramRules = "- devicematch: ^zram[0-9]+$\n  nummaxdevices: 1\n"

// newRun makes a directory below the work directory for one daemon run:
// its rule file (holding rules) and its plugin directory, served by a
// fake kubelet the caller stops.
func newRun(c *config, prefix, rules string) (dir, rulesFile string, k *plugintest.FakeKubelet, err error) {
	if dir, err = os.MkdirTemp(c.workDir, prefix); err != nil {
		return "", "", nil, err
	}
	rulesFile = filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(rules), 0o644); err != nil {
		return "", "", nil, err
	}
	k, err = plugintest.StartFakeKubelet(dir)
	return dir, rulesFile, k, err
}

// newZramRun is newRun with zramRules and an independent uevent listener,
// which the caller closes too.
func newZramRun(ctx context.Context, c *config, prefix string) (dir, rulesFile string, k *plugintest.FakeKubelet, l *listener, err error) {
	if dir, rulesFile, k, err = newRun(c, prefix, zramRules); err != nil {
		return "", "", nil, nil, err
	}
	if l, err = listen(ctx); err != nil {
		k.Stop()
		return "", "", nil, nil, err
	}
	return dir, rulesFile, k, l, nil
}
