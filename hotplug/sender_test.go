package hotplug

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
)

// These tests forge uevents from a socket of the test process, as any
// process with CAP_NET_ADMIN in the host network namespace can, and check
// that the monitor trusts a sender as libudev does.

// sendForged sends raw from a fresh netlink socket to to; cred, when set, is
// attached as SCM_CREDENTIALS (root may claim any uid; without it the kernel
// attaches the caller's own).
func sendForged(t *testing.T, to *unix.SockaddrNetlink, raw []byte, cred *unix.Ucred) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var oob []byte
	if cred != nil {
		oob = unix.UnixCredentials(cred)
	}
	to.Family = unix.AF_NETLINK
	if err := unix.Sendmsg(fd, raw, oob, to, 0); err != nil {
		t.Fatalf("sendmsg to port %d groups %#x: %v", to.Pid, to.Groups, err)
	}
}

// monitorPort returns the netlink port id of this process's uevent socket
// bound to group src: the address a unicast spoofer would send to.
// /proc/net/netlink lists every netlink socket with its port and inode;
// /proc/self/fd says which inodes are ours.
func monitorPort(t *testing.T, src Source) uint32 {
	t.Helper()
	ports, err := testkernel.UeventPorts(os.Getpid(), uint32(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 1 {
		t.Fatalf("want one uevent socket bound to group %v in this process, found ports %v", src, ports)
	}
	return ports[0]
}

// forgedName is a device name no real device has, unique to this process.
func forgedName(tag string) string {
	return fmt.Sprintf("sdm-forged-%d-%s", os.Getpid(), tag)
}

func forgedUdev(tag string) []byte {
	name := forgedName(tag)
	return udevMsg("ACTION=add", "DEVPATH=/devices/virtual/misc/"+name, "SUBSYSTEM=misc", "DEVNAME=/dev/"+name)
}

// waitForged waits for the forged event tagged want; any other forged
// event of this process arriving first fails the test. Messages on one
// socket are read in the order they were queued, so when want arrives every
// message sent before it has been read (and dropped, if it did not arrive).
func (r *running) waitForged(t *testing.T, want string) Event {
	t.Helper()
	prefix := forgedName("")
	return r.waitFor(t, "forged event "+want, func(e Event) bool {
		if strings.HasPrefix(e.DevName, prefix) && e.DevName != forgedName(want) {
			t.Fatalf("untrusted message delivered: %+v", e)
		}
		return e.DevName == forgedName(want)
	})
}

// TestMonitorUdevSenderChecks: on the udev group only a root sender is
// believed, and only when it multicasts, as udevd does.
func TestMonitorUdevSenderChecks(t *testing.T) {
	requireRoot(t)
	var dropped atomic.Uint64
	m := NewMonitor(MonitorOptions{Source: SourceUdev, Logger: testLogger(t), Dropped: &dropped})
	r := startMonitor(t, m, 64)
	r.waitFor(t, "connect event", isConnected)
	port := monitorPort(t, SourceUdev)
	pid := int32(os.Getpid())
	group := func() *unix.SockaddrNetlink { return &unix.SockaddrNetlink{Groups: uint32(SourceUdev)} }

	// (a) A well-formed message claiming uid 1000, as a non-root container
	// with hostNetwork and NET_ADMIN would send it.
	sendForged(t, group(), forgedUdev("uid1000"), &unix.Ucred{Pid: pid, Uid: 1000, Gid: 1000})
	// (c) Unicast to the monitor's own port, even from root.
	sendForged(t, &unix.SockaddrNetlink{Pid: port}, forgedUdev("unicast"), &unix.Ucred{Pid: pid})
	// A message with a broken libudev header from root: unparsable.
	sendForged(t, group(), []byte("libudev\x00garbage"), nil)
	// (b) The same message from uid 0 is believed, explicit or implied.
	sendForged(t, group(), forgedUdev("root"), &unix.Ucred{Pid: pid})
	e := r.waitForged(t, "root")
	if e.Action != "add" || e.Source != SourceUdev || e.Subsystem != "misc" {
		t.Errorf("root's message delivered as %+v", e)
	}
	// Another process's forgery may count here too: at least ours.
	if n := dropped.Load(); n < 3 {
		t.Errorf("Dropped = %d after a uid-1000, a unicast and a garbage message; want at least 3", n)
	}
	sendForged(t, group(), forgedUdev("implied-root"), nil)
	r.waitForged(t, "implied-root")
}

// TestMonitorKernelSenderChecks: on the kernel group only the kernel (port
// id 0) is believed, whatever uid a sender has or claims.
func TestMonitorKernelSenderChecks(t *testing.T) {
	requireRoot(t)
	var dropped atomic.Uint64
	m := NewMonitor(MonitorOptions{Source: SourceKernel, Logger: testLogger(t), Dropped: &dropped})
	r := startMonitor(t, m, 64)
	r.waitFor(t, "connect event", isConnected)
	port := monitorPort(t, SourceKernel)
	name := forgedName("kernel")
	raw := kernelMsg("add", "/devices/virtual/misc/"+name, name)
	// (d) Multicast to group 1 from a userspace port, as root with uid 0.
	sendForged(t, &unix.SockaddrNetlink{Groups: uint32(SourceKernel)}, raw, &unix.Ucred{Pid: int32(os.Getpid())})
	// (c) Unicast to the monitor's port.
	sendForged(t, &unix.SockaddrNetlink{Pid: port}, raw, nil)
	// Both were queued before the kernel's own change event.
	triggerChange(t)
	r.waitFor(t, "the kernel's change event", func(e Event) bool {
		if e.DevName == name {
			t.Fatalf("forged kernel event delivered: %+v", e)
		}
		return e.DevName == "null"
	})
	if n := dropped.Load(); n < 2 {
		t.Errorf("Dropped = %d after a forged multicast and a unicast; want at least 2", n)
	}
}

// TestCheckSender is the decision alone, on addresses and control
// messages as recvmsg returns them; it needs no root.
func TestCheckSender(t *testing.T) {
	cred := func(uid uint32) []byte { return unix.UnixCredentials(&unix.Ucred{Pid: 1, Uid: uid}) }
	nl := func(port, groups uint32) unix.Sockaddr {
		return &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: port, Groups: groups}
	}
	for _, tc := range []struct {
		name  string
		src   Source
		from  unix.Sockaddr
		oob   []byte
		flags int
		ok    bool
	}{
		{"kernel from the kernel", SourceKernel, nl(0, 1), cred(0), 0, true},
		{"kernel without credentials", SourceKernel, nl(0, 1), nil, 0, true}, // port 0 is proof enough
		{"kernel group from a process", SourceKernel, nl(4242, 1), cred(0), 0, false},
		{"kernel unicast", SourceKernel, nl(4242, 0), cred(0), 0, false},
		{"kernel unicast from port 0", SourceKernel, nl(0, 0), cred(0), 0, false},
		{"udev group on a kernel monitor", SourceKernel, nl(0, 2), cred(0), 0, false},
		{"udevd", SourceUdev, nl(777, 2), cred(0), 0, true},
		{"udev from uid 1000", SourceUdev, nl(777, 2), cred(1000), 0, false},
		{"udev without credentials", SourceUdev, nl(777, 2), nil, 0, false},
		{"udev credentials cut off", SourceUdev, nl(777, 2), cred(0), unix.MSG_CTRUNC, false},
		{"udev garbage control data", SourceUdev, nl(777, 2), []byte{1, 2, 3}, 0, false},
		{"udev unicast from root", SourceUdev, nl(777, 0), cred(0), 0, false},
		{"kernel group on a udev monitor", SourceUdev, nl(0, 1), cred(0), 0, false},
		{"not netlink", SourceUdev, &unix.SockaddrUnix{Name: "@x"}, cred(0), 0, false},
		{"no address", SourceKernel, nil, cred(0), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkSender(tc.src, tc.from, tc.oob, tc.flags)
			if (err == nil) != tc.ok {
				t.Errorf("checkSender = %v, want ok %v", err, tc.ok)
			}
		})
	}
}
