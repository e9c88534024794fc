// Command capture records raw uevent netlink messages into files, one
// message per file, for use as test fixtures in package hotplug.
//
// Run it as root while triggering events, for example:
//
//	go run ./cmd/uevent-capture -group 1 -n 4 -out /tmp/uevents &
//	echo $(cat /sys/class/zram-control/hot_add) > /sys/class/zram-control/hot_remove
//
// Each file is named <index>-<group>-<senderport>.bin.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

func main() {
	group := flag.Int("group", 1, "netlink multicast group: 1 kernel, 2 udev")
	n := flag.Int("n", 10, "number of messages to record")
	out := flag.String("out", ".", "output directory")
	flag.Parse()
	if err := run(*group, *n, *out); err != nil {
		fmt.Fprintln(os.Stderr, "capture:", err)
		os.Exit(1)
	}
}

func run(group, n int, out string) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: uint32(group)}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	buf := make([]byte, 1<<16)
	for i := range n {
		m, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("recvfrom: %w", err)
		}
		var port uint32
		if sa, ok := from.(*unix.SockaddrNetlink); ok {
			port = sa.Pid
		}
		name := filepath.Join(out, fmt.Sprintf("%02d-g%d-p%d.bin", i, group, port))
		if err := os.WriteFile(name, buf[:m], 0o644); err != nil {
			return err
		}
		fmt.Println(name, m)
	}
	return nil
}
