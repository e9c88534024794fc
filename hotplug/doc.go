// Package hotplug owns the kernel side of device discovery: it lists device
// nodes under /dev and GPUs under /sys, reads what the kernel and udev know
// of a device, and listens for uevents on the NETLINK_KOBJECT_UEVENT socket
// (kernel group 1 or udevd group 2).
//
// Every read goes through an fs.FS rooted at /dev, /sys, /run or /proc, so
// tests run on in-memory trees (internal/hwfixture) and --sys-root is
// honoured: a node's device number and owning group come from its inode
// (Rdev, NodeGID); a device's identity, attributes and physical unit from
// sysfs and udev's database (Reader: Info, MatchAttrs, NUMANode, Unit); and
// whether a block device is in use, mounted or held by a stacked device,
// from sysfs and the mount table (Reader.BlockUse).
//
// Events are hints, not the truth: a consumer should treat every relevant
// Event (see Event.Relevant), including a Lost one, as "rescan now" and read
// the device state again with ScanDev. A lost burst (ENOBUFS), a malformed or
// spoofed message, or a difference between kernel and udev properties then
// costs nothing. A Lost event that is also Connected says the socket has
// just been bound: from then on no event is missed. Even so, the Monitor
// believes only the senders libudev believes (the kernel on group 1, root on
// group 2, nobody by unicast), so a forger cannot make it wake anyone.
//
// The package knows nothing of configuration rules or of the kubelet; it
// neither filters devices by name nor keeps any device state of its own.
//
// Netlink access is built on github.com/pilebones/go-udev (UEventConn.Connect
// and ParseUEvent), but the read loop is our own: go-udev's Monitor cannot be
// stopped while blocked in recvfrom and ends on any read error, ENOBUFS
// included, and its parser rejects values containing '=', panics on a kernel
// message without a terminating NUL, and ignores the libudev properties
// length. See ParseEvent and Monitor.
package hotplug
