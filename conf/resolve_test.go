package conf

import (
	"fmt"
	"reflect"
	"testing"
)

func TestResolve(t *testing.T) {
	const p = "smarter-devices"
	v1 := func(rules string) *Config { return mustParse(t, "r.yaml", "version: v1\nrules:\n"+rules) }
	tests := []struct {
		name   string
		cfg    *Config
		prefix string
		devs   []Device
		gpus   []string
		want   []Resource
		warns  []string
	}{{
		name: "default rules, sorted by name, directories and GPUs",
		cfg:  Default(), prefix: p,
		devs: []Device{{Path: "ttyUSB0"}, {Path: "snd", Dir: true}, {Path: "net/tun"}, {Path: "video10"}, {Path: "null"}},
		gpus: []string{"1", "0"},
		want: []Resource{
			{Name: "smarter-devices/nvidia-gpu0", Socket: "smarter-nvidia-gpu0.sock", Rule: 13, GPU: "0", Count: 10, Permissions: "rw"},
			{Name: "smarter-devices/nvidia-gpu1", Socket: "smarter-nvidia-gpu1.sock", Rule: 13, GPU: "1", Count: 10, Permissions: "rw"},
			{Name: "smarter-devices/snd", Socket: "smarter-snd.sock", Rule: 0, Path: "snd", Dir: true, Count: 20, Permissions: "rw"},
			{Name: "smarter-devices/ttyUSB0", Socket: "smarter-ttyUSB0.sock", Rule: 9, Path: "ttyUSB0", Count: 1, Permissions: "rw"},
			{Name: "smarter-devices/video10", Socket: "smarter-video10.sock", Rule: 6, Path: "video10", Count: 20, Permissions: "rw"},
		},
	}, {
		name: "paths are matched relative to the root and sanitized",
		cfg:  v1("- {match: ^net/tun$, count: 3, permissions: r}\n- match: ^v4l/by-id/\n"), prefix: p,
		devs: []Device{{Path: "net/tun"}, {Path: "v4l/by-id/usb-Cam_1.0:video0"}},
		want: []Resource{
			{Name: "smarter-devices/net_tun", Socket: "smarter-net_tun.sock", Rule: 0, Path: "net/tun", Count: 3, Permissions: "r"},
			{Name: "smarter-devices/v4l_by-id_usb-Cam_1_0_video0", Socket: "smarter-v4l_by-id_usb-Cam_1_0_video0.sock", Rule: 1, Path: "v4l/by-id/usb-Cam_1.0:video0", Count: 1, Permissions: "rw"},
		},
	}, {
		name: "first rule wins, a later match warns",
		cfg:  v1("- match: ^tty\n- {match: ^ttyUSB, count: 5}\n- match: USB\n"), prefix: p,
		devs: []Device{{Path: "ttyUSB0"}, {Path: "ttyS0"}},
		want: []Resource{
			{Name: "smarter-devices/ttyS0", Socket: "smarter-ttyS0.sock", Rule: 0, Path: "ttyS0", Count: 1, Permissions: "rw"},
			{Name: "smarter-devices/ttyUSB0", Socket: "smarter-ttyUSB0.sock", Rule: 0, Path: "ttyUSB0", Count: 1, Permissions: "rw"},
		},
		warns: []string{
			`ttyUSB0: also matches rule r.yaml:4 ("^ttyUSB"), which is ignored for it; rule r.yaml:3 ("^tty") comes first`,
			`ttyUSB0: also matches rule r.yaml:5 ("USB"), which is ignored for it; rule r.yaml:3 ("^tty") comes first`,
		},
	}, {
		// docs/configuration.md's audio cookbook, both rules: the directory
		// gives every node below it, so a node rule after it must not hand
		// one of those nodes out a second time.
		name: "a node inside a directory an earlier rule serves is the directory's",
		cfg:  v1("- match: ^snd$\n- {match: ^snd/controlC, class: audio}\n- match: ^ttyS0$\n"), prefix: p,
		devs: []Device{{Path: "snd", Dir: true}, {Path: "snd/controlC1"}, {Path: "ttyS0"}},
		want: []Resource{
			{Name: "smarter-devices/snd", Socket: "smarter-snd.sock", Rule: 0, Path: "snd", Dir: true, Count: 1, Permissions: "rw"},
			{Name: "smarter-devices/ttyS0", Socket: "smarter-ttyS0.sock", Rule: 2, Path: "ttyS0", Count: 1, Permissions: "rw"},
		},
		warns: []string{`snd/controlC1: is inside snd, which rule r.yaml:3 ("^snd$") serves as a whole; rule r.yaml:4 ("^snd/controlC"), which comes later, is ignored for it`},
	}, {
		name: "a node rule before its directory's keeps the node, with a warning",
		cfg:  v1("- match: ^snd/controlC\n- match: ^snd$\n"), prefix: p,
		devs: []Device{{Path: "snd", Dir: true}, {Path: "snd/controlC1"}},
		want: []Resource{
			{Name: "smarter-devices/snd", Socket: "smarter-snd.sock", Rule: 1, Path: "snd", Dir: true, Count: 1, Permissions: "rw"},
			{Name: "smarter-devices/snd_controlC1", Socket: "smarter-snd_controlC1.sock", Rule: 0, Path: "snd/controlC1", Count: 1, Permissions: "rw"},
		},
		warns: []string{`snd/controlC1: is inside snd, which rule r.yaml:4 ("^snd$") also serves as a whole: two resources give this node`},
	}, {
		name: "invalid names are skipped with a warning",
		cfg:  v1("- match: .*\n"), prefix: p,
		devs: []Device{{Path: "ok"}, {Path: "bad_"}, {Path: "_bad"}},
		want: []Resource{{Name: "smarter-devices/ok", Socket: "smarter-ok.sock", Path: "ok", Count: 1, Permissions: "rw"}},
		warns: []string{
			`bad_: skipped: rule r.yaml:3 (".*") gives an invalid resource name: resource name "smarter-devices/bad_": name part "bad_" must consist of letters, digits, '-', '_' or '.', and begin and end with a letter or digit`,
			`_bad: skipped: rule r.yaml:3 (".*") gives an invalid resource name: resource name "smarter-devices/_bad": name part "_bad" must consist of letters, digits, '-', '_' or '.', and begin and end with a letter or digit`,
		},
	}, {
		name: "an invalid prefix skips everything",
		cfg:  v1("- match: ^a$\n"), prefix: "Bad_Prefix",
		devs:  []Device{{Path: "a"}},
		warns: []string{`a: skipped: rule r.yaml:3 ("^a$") gives an invalid resource name: resource name "Bad_Prefix/a": resource prefix "Bad_Prefix" is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')`},
	}, {
		name: "a named rule matching several devices: the first device wins",
		cfg:  v1("- {match: ^video, name: camera}\n"), prefix: p,
		devs:  []Device{{Path: "video1"}, {Path: "video0"}},
		want:  []Resource{{Name: "smarter-devices/camera", Socket: "smarter-camera.sock", Path: "video1", Count: 1, Permissions: "rw"}},
		warns: []string{`video0: skipped: resource name "smarter-devices/camera" (rule r.yaml:3 ("^video")) is already taken by video1`},
	}, {
		name: "two paths that sanitize alike: the first wins",
		cfg:  v1("- match: ^a\n"), prefix: p,
		devs:  []Device{{Path: "a/b"}, {Path: "a.b"}},
		want:  []Resource{{Name: "smarter-devices/a_b", Socket: "smarter-a_b.sock", Path: "a/b", Count: 1, Permissions: "rw"}},
		warns: []string{`a.b: skipped: resource name "smarter-devices/a_b" (rule r.yaml:3 ("^a")) is already taken by a/b`},
	}, {
		name: "GPUs without a GPU rule are ignored",
		cfg:  v1("- match: ^gpu\n"), prefix: p,
		gpus: []string{"0"},
	}, {
		name: "only the GPU rule takes GPUs; its count and permissions apply",
		cfg:  v1("- match: ^nvhost\n- {match: nvidia-gpu, count: 2, permissions: rwm}\n"), prefix: p,
		devs:  []Device{{Path: "nvidia-gpu"}},
		gpus:  []string{"0", "x/y"},
		want:  []Resource{{Name: "smarter-devices/nvidia-gpu0", Socket: "smarter-nvidia-gpu0.sock", Rule: 1, GPU: "0", Count: 2, Permissions: "rwm"}},
		warns: []string{`gpu.x/y: skipped: rule r.yaml:4 ("nvidia-gpu") gives an invalid resource name: resource name "smarter-devices/nvidia-gpux/y": name part "nvidia-gpux/y" must consist of letters, digits, '-', '_' or '.', and begin and end with a letter or digit`},
	}, {
		// The GPU rule as the first rule (index 0) takes the GPUs too.
		name: "a GPU rule first",
		cfg:  v1("- {match: nvidia-gpu, count: 2}\n- match: ^nvhost\n"), prefix: p,
		gpus: []string{"0"},
		want: []Resource{{Name: "smarter-devices/nvidia-gpu0", Socket: "smarter-nvidia-gpu0.sock", Rule: 0, GPU: "0", Count: 2, Permissions: "rw"}},
	}, {
		name: "no rules, no devices",
		cfg:  mustParse(t, "r.yaml", "version: v1\nrules: []\n"), prefix: p,
		devs: []Device{{Path: "ttyUSB0"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warns := tt.cfg.Resolve(tt.prefix, tt.devs, tt.gpus)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("resources:\n got %+v\nwant %+v", got, tt.want)
			}
			gotWarns := make([]string, len(warns))
			for i, w := range warns {
				gotWarns[i] = w.String()
				if w.Error() != w.String() {
					t.Errorf("Error() %q != String() %q", w.Error(), w.String())
				}
			}
			if len(gotWarns) != len(tt.warns) || (len(tt.warns) > 0 && !reflect.DeepEqual(gotWarns, tt.warns)) {
				t.Errorf("warnings:\n got %q\nwant %q", gotWarns, tt.warns)
			}
		})
	}
}

// TestResolveDeterministic shows device order decides ties but never the
// output order.
func TestResolveDeterministic(t *testing.T) {
	c := Default()
	a, _ := c.Resolve("smarter-devices", []Device{{Path: "ttyS1"}, {Path: "ttyS0"}, {Path: "i2c-1"}}, nil)
	b, _ := c.Resolve("smarter-devices", []Device{{Path: "i2c-1"}, {Path: "ttyS0"}, {Path: "ttyS1"}}, nil)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("order of devices changed the result:\n%+v\n%+v", a, b)
	}
}

func BenchmarkResolve(b *testing.B) {
	c := Default()
	devs := make([]Device, 1000)
	for i := range devs {
		// A realistic mix: most /dev entries match no rule.
		switch i % 4 {
		case 0:
			devs[i] = Device{Path: fmt.Sprintf("ttyUSB%d", i)}
		case 1:
			devs[i] = Device{Path: fmt.Sprintf("video%d", i)}
		case 2:
			devs[i] = Device{Path: fmt.Sprintf("tty%d", i)}
		default:
			devs[i] = Device{Path: fmt.Sprintf("input/event%d", i)}
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		res, _ := c.Resolve("smarter-devices", devs, []string{"0"})
		if len(res) != 501 {
			b.Fatalf("got %d resources, want 501", len(res))
		}
	}
}
