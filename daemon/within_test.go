package daemon

import (
	"path/filepath"
	"testing"
)

// within answers as filepath.Rel does (the path is the directory or below
// it), for the paths the safety check compares: a node's host path against
// the kubelet's plugin directory, both ways.
func TestWithin(t *testing.T) {
	for _, c := range []struct {
		path, dir string
		want      bool
	}{
		{"/var/lib/kubelet/device-plugins", "/var/lib/kubelet/device-plugins", true},
		{"/var/lib/kubelet/device-plugins/x.sock", "/var/lib/kubelet/device-plugins", true},
		{"/var/lib/kubelet/device-plugins", "/var/lib/kubelet/device-plugins/", true},
		{"/var/lib/kubelet/device-plugins-2", "/var/lib/kubelet/device-plugins", false},
		{"/var/lib/kubelet", "/var/lib/kubelet/device-plugins", false},
		{"/dev/ttyUSB0", "/var/lib/kubelet/device-plugins", false},
		{"/dev/../var/lib/kubelet/device-plugins/x", "/var/lib/kubelet/device-plugins", true},
		{"/anything", "/", true},
		{"/", "/dev", false},
		{"dev/ttyUSB0", "dev", true},
		{"dev2", "dev", false},
		{"dev", ".", true},
		{"/dev/x", "dev", false},
	} {
		if got := within(c.path, c.dir); got != c.want {
			t.Errorf("within(%q, %q) = %v; want %v", c.path, c.dir, got, c.want)
		}
		rel, err := filepath.Rel(c.dir, c.path)
		if ref := err == nil && filepath.IsLocal(rel); ref != c.want {
			t.Errorf("the table is wrong for (%q, %q): filepath.Rel says %v", c.path, c.dir, ref)
		}
	}
}
