package plugin

import (
	"strings"
	"testing"
)

// A unix socket's path is at most 107 bytes and a NUL (sun_path is 108):
// 107 is taken, 108 refused with the limit named. Zero durations take the
// defaults, so a server built with no CheckInterval still re-checks its
// registration. (Found by make mutate.)
func TestOptionsAtTheLimits(t *testing.T) {
	dir := "/" + strings.Repeat("d", 90)
	for _, tc := range []struct {
		socket string
		ok     bool
	}{
		{strings.Repeat("s", maxSocketPath-1-len(dir)-1), true}, // dir + "/" + socket = 107
		{strings.Repeat("s", maxSocketPath-len(dir)-1), false},  // 108
	} {
		o := Options{ResourceName: "smarter-devices/x", Socket: tc.socket, Dir: dir}
		o.setDefaults()
		err := o.validate()
		if n := len(dir) + 1 + len(tc.socket); tc.ok && err != nil {
			t.Errorf("a %d-byte socket path: %v", n, err)
		} else if !tc.ok && (err == nil || !strings.Contains(err.Error(), "is longer than 107 bytes")) {
			t.Errorf("a %d-byte socket path: %v; want it refused as longer than 107 bytes", n, err)
		}
	}

	o := Options{}
	o.setDefaults()
	if o.CheckInterval != DefaultCheckInterval || o.KubeletSocket != DefaultKubeletSocket {
		t.Errorf("defaults: CheckInterval %v, KubeletSocket %q; want %v, %q", o.CheckInterval, o.KubeletSocket, DefaultCheckInterval, DefaultKubeletSocket)
	}
	o = Options{CheckInterval: 3}
	o.setDefaults()
	if o.CheckInterval != 3 {
		t.Errorf("a CheckInterval given: %v after defaults, want it kept", o.CheckInterval)
	}
}
