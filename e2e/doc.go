// Package e2e runs the smarter-device-manager binary against the real
// kubelet device manager and the real kernel.
//
// The kubelet side is k8s.io/kubernetes' own devicemanager.ManagerImpl
// (v1.37.2), the code a kubelet runs: its registration server listens on
// kubelet.sock in a temporary plugin directory, it dials our sockets, runs
// ListAndWatch, writes its checkpoint, and answers GetCapacity, Allocate and
// GetDeviceRunContainerOptions as it would for the node status and for a
// container start. A "kubelet restart" is a Stop and a new ManagerImpl on the
// same directory, whose Start wipes every socket there (kubelet does this on
// start) and reads the checkpoint back. The device side is the kernel: zram
// hot_add and hot_remove give real add and remove uevents, and /dev/null,
// /dev/zero and /dev/full are on every machine.
//
// The daemon runs as a child process built by TestMain from
// ../cmd/smarter-device-manager (with -race when the suite runs with -race),
// so a SIGKILL is a real crash. Its log and the manager's are printed when a
// test fails.
//
// The suite is a module of its own so that the daemon's go.mod does not grow
// k8s.io/kubernetes and its dependencies. It needs root and
// /sys/class/zram-control, and skips with a message otherwise. Tests wait by
// polling the manager within a bound (it has no change channel), never by
// sleeping, and remove every device, socket, directory and process they make.
//
// The container suite (container_*_test.go) goes one step further: what
// GetDeviceRunContainerOptions hands the runtime becomes an OCI spec built
// by containerd's own pkg/oci and pkg/cdi, run by runc under the device
// cgroup, with the static program in probe/ as the whole root filesystem;
// the tests assert what that process could open, read and write.
package e2e
