package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/smarter-project/smarter-device-manager/e2e/probe"
	"golang.org/x/sys/unix"
)

// Case 3: a directory resource (a sound card's /dev/snd) hands the
// container every node inside, each usable. The directory is a device root
// of the test's (--dev-root), its nodes made with mknod for real zram
// devices, so that the host can check what the container wrote to each.
func TestContainerDirectory(t *testing.T) {
	requireContainers(t)
	requireZram(t)
	devRoot := mkdirTemp(t)
	if err := os.Mkdir(filepath.Join(devRoot, "snd"), 0o755); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]string{} // name in snd/ → the zram device it is
	for _, name := range []string{"controlC0", "pcmC0D0c", "pcmC0D0p"} {
		dev := zramDisk(t, zramAdd(t))
		host := hostNode(t, dev)
		if err := unix.Mknod(filepath.Join(devRoot, "snd", name), unix.S_IFBLK|0o660, int(unix.Mkdev(host.Major, host.Minor))); err != nil {
			t.Fatalf("mknod snd/%s: %v", name, err)
		}
		nodes[name] = dev
	}
	n := newNode(t, "version: v1\nrules:\n  - match: ^snd$\n")
	n.daemonArgs = []string{"--dev-root", devRoot}
	n.startKubelet()
	n.startDaemon()
	const res = "smarter-devices/snd"
	n.waitCapacity("snd registered", map[string]counts{res: {1, 1}})
	pod := n.newPod("snd", map[string]int64{res: 1})
	if err := n.allocate(pod); err != nil {
		t.Fatal(err)
	}
	c := n.runContainer(pod, podSecurity{})
	r := newReport(t, "3 directory /dev/snd")
	ls := c.do(t, probe.Request{Op: "list", Path: "/dev/snd"})
	r.saw("/dev/snd holds %v", ls.Names)
	if want := []string{"controlC0", "pcmC0D0c", "pcmC0D0p"}; !slices.Equal(ls.Names, want) {
		t.Errorf("the container's /dev/snd holds %v (%s); want %v", ls.Names, ls.Error, want)
	}
	for _, name := range []string{"controlC0", "pcmC0D0c", "pcmC0D0p"} {
		path := "/dev/snd/" + name
		r.stat(c, path, hostNode(t, nodes[name]))
		r.roundTrip(c, path, path, nodes[name])
	}
	if code := c.exit(t); code != 0 {
		t.Errorf("container exit status %d", code)
	}
}
