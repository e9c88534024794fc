package daemon

import (
	"reflect"
	"testing"

	"github.com/smarter-project/smarter-device-manager/conf"
)

// ttyUSB0 is a resolved FTDI adapter with udev's links, a serial, a NUMA
// node and its node's group.
func ttyUSB0() resolvedUnit {
	return resolvedUnit{
		Path: "ttyUSB0",
		Nodes: []resolvedNode{{Path: "ttyUSB0", Host: "/dev/ttyUSB0", Links: []string{
			"/dev/serial/by-id/usb-FTDI_FT232R_A1B2C3-if00-port0",
			"/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0",
		}}},
		NUMANode: 1, HasNUMA: true,
		Serial: "A1B2C3",
		GID:    20, HasGID: true,
	}
}

// The content builder is a pure function of the resolved unit and the
// rule: every rule field that shapes what a container gets, on plain
// nodes, directories, GPUs and class members with several nodes.
func TestBuildContent(t *testing.T) {
	const res = "smarter-devices/gps"
	node := func(host, container string) DeviceNode {
		return DeviceNode{HostPath: host, ContainerPath: container, Permissions: "rw"}
	}
	snd := resolvedUnit{Path: "snd", Dir: true, Nodes: []resolvedNode{
		{Path: "snd/controlC0", Host: "/dev/snd/controlC0"},
		{Path: "snd/pcmC0D0p", Host: "/dev/snd/pcmC0D0p"},
	}, GID: 29, HasGID: true}
	camera := resolvedUnit{Path: "video0", Nodes: []resolvedNode{
		{Path: "video0", Host: "/dev/video0", Links: []string{"/dev/v4l/by-id/usb-cam-video-index0"}},
		{Path: "video1", Host: "/dev/video1", Links: []string{"/dev/v4l/by-id/usb-cam-video-index1"}},
		{Path: "media0", Host: "/dev/media0"},
	}}
	gpuNodes := resolvedUnit{Path: "nvidia0", Nodes: []resolvedNode{{Path: "nvidia0", Host: "/dev/nvidia0"}},
		Companions: []resolvedNode{{Path: "nvidiactl", Host: "/dev/nvidiactl"}}}
	for _, tc := range []struct {
		name string
		rule conf.Rule
		unit resolvedUnit
		want Content
	}{
		{
			name: "a node as it is; NUMA from the device",
			unit: ttyUSB0(),
			want: Content{Nodes: []DeviceNode{node("/dev/ttyUSB0", "/dev/ttyUSB0")}, NUMANode: 1, HasNUMA: true},
		},
		{
			name: "container_path moves the node",
			rule: conf.Rule{ContainerPath: "/dev/gps0"},
			unit: ttyUSB0(),
			want: Content{Nodes: []DeviceNode{node("/dev/ttyUSB0", "/dev/gps0")}, NUMANode: 1, HasNUMA: true},
		},
		{
			name: "expose_links: the same node at each udev link",
			rule: conf.Rule{ExposeLinks: true},
			unit: ttyUSB0(),
			want: Content{Nodes: []DeviceNode{
				node("/dev/ttyUSB0", "/dev/ttyUSB0"),
				node("/dev/ttyUSB0", "/dev/serial/by-id/usb-FTDI_FT232R_A1B2C3-if00-port0"),
				node("/dev/ttyUSB0", "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0"),
			}, NUMANode: 1, HasNUMA: true},
		},
		{
			name: "describe_env: path in the container, stable link, serial, group; env added as is",
			rule: conf.Rule{DescribeEnv: true, ContainerPath: "/dev/gps0", Env: map[string]string{"GPS_BAUD": "9600"}},
			unit: ttyUSB0(),
			want: Content{
				Nodes: []DeviceNode{node("/dev/ttyUSB0", "/dev/gps0")},
				Env: map[string]string{
					"GPS_BAUD":                  "9600",
					"SMARTER_DEVICE_GPS":        "/dev/gps0",
					"SMARTER_DEVICE_GPS_STABLE": "/dev/serial/by-id/usb-FTDI_FT232R_A1B2C3-if00-port0",
					"SMARTER_DEVICE_GPS_SERIAL": "A1B2C3",
					"SMARTER_DEVICE_GPS_GID":    "20",
				},
				NUMANode: 1, HasNUMA: true,
			},
		},
		{
			name: "describe_env without udev: no stable link, the serial from sysfs",
			rule: conf.Rule{DescribeEnv: true},
			unit: resolvedUnit{Path: "ttyUSB0", Nodes: []resolvedNode{{Path: "ttyUSB0", Host: "/dev/ttyUSB0"}}, Serial: "A1B2C3"},
			want: Content{
				Nodes: []DeviceNode{node("/dev/ttyUSB0", "/dev/ttyUSB0")},
				Env:   map[string]string{"SMARTER_DEVICE_GPS": "/dev/ttyUSB0", "SMARTER_DEVICE_GPS_SERIAL": "A1B2C3"},
			},
		},
		{
			name: "a directory: every node below it, container_path keeps their place below it",
			rule: conf.Rule{ContainerPath: "/dev/audio", DescribeEnv: true},
			unit: snd,
			want: Content{
				Nodes: []DeviceNode{node("/dev/snd/controlC0", "/dev/audio/controlC0"), node("/dev/snd/pcmC0D0p", "/dev/audio/pcmC0D0p")},
				Env:   map[string]string{"SMARTER_DEVICE_GPS": "/dev/audio", "SMARTER_DEVICE_GPS_GID": "29"},
			},
		},
		{
			name: "an empty directory: nothing to describe",
			rule: conf.Rule{DescribeEnv: true},
			unit: resolvedUnit{Path: "snd", Dir: true, GID: 29, HasGID: true},
			want: Content{},
		},
		{
			name: "companions present and an optional one missing; mounts",
			rule: conf.Rule{
				With:   []conf.Companion{{Path: "nvidiactl"}, {Path: "nvidia-uvm-tools", Optional: true}},
				Mounts: []conf.Mount{{HostPath: "/usr/lib/nvidia", ContainerPath: "/usr/local/nvidia/lib", ReadOnly: true}},
			},
			unit: gpuNodes,
			want: Content{
				Nodes:  []DeviceNode{node("/dev/nvidia0", "/dev/nvidia0"), node("/dev/nvidiactl", "/dev/nvidiactl")},
				Mounts: []conf.Mount{{HostPath: "/usr/lib/nvidia", ContainerPath: "/usr/local/nvidia/lib", ReadOnly: true}},
			},
		},
		{
			name: "a required companion missing",
			rule: conf.Rule{With: []conf.Companion{{Path: "nvidiactl"}, {Path: "nvidia-uvm"}}},
			unit: gpuNodes,
			want: Content{
				Nodes:            []DeviceNode{node("/dev/nvidia0", "/dev/nvidia0"), node("/dev/nvidiactl", "/dev/nvidiactl")},
				MissingCompanion: true,
			},
		},
		{
			name: "expose_links with companions: links of the node, companions once",
			rule: conf.Rule{ExposeLinks: true, With: []conf.Companion{{Path: "nvidiactl"}}},
			unit: resolvedUnit{Path: "nvidia0", Nodes: []resolvedNode{{Path: "nvidia0", Host: "/dev/nvidia0", Links: []string{"/dev/gpu/by-path/pci-0000:01:00.0"}}},
				Companions: gpuNodes.Companions},
			want: Content{Nodes: []DeviceNode{
				node("/dev/nvidia0", "/dev/nvidia0"), node("/dev/nvidia0", "/dev/gpu/by-path/pci-0000:01:00.0"), node("/dev/nvidiactl", "/dev/nvidiactl"),
			}},
		},
		{
			name: "a class member with several nodes: each with its links, companions once",
			rule: conf.Rule{ExposeLinks: true, With: []conf.Companion{{Path: "nvidiactl"}}},
			unit: func() resolvedUnit { u := camera; u.Companions = gpuNodes.Companions; return u }(),
			want: Content{Nodes: []DeviceNode{
				node("/dev/video0", "/dev/video0"), node("/dev/video0", "/dev/v4l/by-id/usb-cam-video-index0"),
				node("/dev/video1", "/dev/video1"), node("/dev/video1", "/dev/v4l/by-id/usb-cam-video-index1"),
				node("/dev/media0", "/dev/media0"), node("/dev/nvidiactl", "/dev/nvidiactl"),
			}},
		},
		{
			name: "a class member described: its first node",
			rule: conf.Rule{DescribeEnv: true},
			unit: camera,
			want: Content{
				Nodes: []DeviceNode{node("/dev/video0", "/dev/video0"), node("/dev/video1", "/dev/video1"), node("/dev/media0", "/dev/media0")},
				Env:   map[string]string{"SMARTER_DEVICE_GPS": "/dev/video0", "SMARTER_DEVICE_GPS_STABLE": "/dev/v4l/by-id/usb-cam-video-index0"},
			},
		},
		{
			name: "a Jetson GPU: its index in the environment, the rule's env over it",
			rule: conf.Rule{Env: map[string]string{"NVIDIA_DRIVER_CAPABILITIES": "all"}, Mounts: []conf.Mount{{HostPath: "/a", ContainerPath: "/b"}}},
			unit: resolvedUnit{GPU: "0"},
			want: Content{Env: map[string]string{"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_DRIVER_CAPABILITIES": "all"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := buildContent(&tc.rule, res, "rw", tc.unit)
			if !got.equal(tc.want) {
				t.Errorf("content\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// The builder keeps nothing of its input: a rule's env and mounts are
// copied, so rendering or merging the content cannot change the rule.
func TestBuildContentCopies(t *testing.T) {
	rule := conf.Rule{Env: map[string]string{"A": "b"}, DescribeEnv: true, Mounts: []conf.Mount{{HostPath: "/a", ContainerPath: "/b"}}}
	c := buildContent(&rule, "smarter-devices/x", "rw", ttyUSB0())
	c.Env["A"] = "changed"
	c.Mounts[0].HostPath = "/changed"
	if rule.Env["A"] != "b" || rule.Mounts[0].HostPath != "/a" || len(rule.Env) != 1 {
		t.Errorf("building changed the rule: env %v, mounts %v", rule.Env, rule.Mounts)
	}
}

// fullContent sets every field of content to something non-zero.
func fullContent() Content {
	return Content{
		Nodes:            []DeviceNode{{HostPath: "/dev/ttyUSB0", ContainerPath: "/dev/gps0", Permissions: "rw"}},
		Env:              map[string]string{"A": "b"},
		Mounts:           []conf.Mount{{HostPath: "/etc/hostname", ContainerPath: "/etc/node-name", ReadOnly: true}},
		NUMANode:         1,
		HasNUMA:          true,
		MissingCompanion: true,
		Owner:            conf.Owner{UID: 1000, HasUID: true},
	}
}

// equal covers every field of content: a field added to the type and
// forgotten there fails here, rather than making a change that touches
// only that field look like no change to the outputs.
func TestContentEqualCoversEveryField(t *testing.T) {
	full := fullContent()
	v := reflect.ValueOf(full)
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if v.Field(i).IsZero() {
			t.Fatalf("fullContent leaves %s zero: set it there, and compare it in content.equal", name)
		}
		var only Content
		reflect.ValueOf(&only).Elem().Field(i).Set(v.Field(i))
		if only.equal(Content{}) || (Content{}).equal(only) {
			t.Errorf("content.equal ignores %s", name)
		}
		without := full
		reflect.ValueOf(&without).Elem().Field(i).SetZero()
		if without.equal(full) || full.equal(without) {
			t.Errorf("content.equal ignores %s when the rest is set", name)
		}
	}
	if !full.equal(fullContent()) {
		t.Errorf("two equal contents are not equal")
	}
}
