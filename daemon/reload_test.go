package daemon

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// Every rule field a reload can change reaches what the kubelet gets:
// Allocate's answer, the CDI spec for cdi, the device list for count, the
// resource for name. A field the daemon's copy of the snapshot equality
// left out (cdi) was logged as "rules reloaded" and never applied.
func TestReloadChangesEveryField(t *testing.T) {
	const (
		base   = "version: v1\nrules:\n  - match: ^ttyUSB[0-9]+$\n"
		res    = "smarter-devices/ttyUSB0"
		byID   = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0"
		serial = "A1B2C3"
	)
	type view struct {
		resp     *pluginapi.ContainerAllocateResponse // Allocate of ID 0
		devices  []*pluginapi.Device                  // what ListAndWatch sent
		cdiSpec  string                               // the CDI spec file, "" when there is none
		oldAlive bool                                 // the first resource is still served
	}
	hasSpec := func(v view, host, container string) bool {
		return slices.ContainsFunc(v.resp.GetDevices(), func(s *pluginapi.DeviceSpec) bool {
			return s.HostPath == host && s.ContainerPath == container
		})
	}
	for _, c := range []struct {
		field         string
		before, after string // lines of the rule, below match
		res           string // the resource after the reload; "" is res
		want          func(view) bool
	}{
		{field: "permissions", after: "    permissions: r\n", want: func(v view) bool {
			return len(v.resp.GetDevices()) == 1 && v.resp.Devices[0].Permissions == "r"
		}},
		{field: "container_path", after: "    container_path: /dev/gps0\n", want: func(v view) bool {
			return len(v.resp.GetDevices()) == 1 && hasSpec(v, "/dev/ttyUSB0", "/dev/gps0")
		}},
		{field: "expose_links", after: "    expose_links: true\n", want: func(v view) bool {
			return hasSpec(v, "/dev/ttyUSB0", "/dev/ttyUSB0") && hasSpec(v, "/dev/ttyUSB0", byID)
		}},
		{field: "env", after: "    env: {BAUD: \"9600\"}\n", want: func(v view) bool {
			return v.resp.GetEnvs()["BAUD"] == "9600"
		}},
		{field: "describe_env", after: "    describe_env: true\n", want: func(v view) bool {
			e := v.resp.GetEnvs()
			return e["SMARTER_DEVICE_TTYUSB0"] == "/dev/ttyUSB0" && e["SMARTER_DEVICE_TTYUSB0_STABLE"] == byID && e["SMARTER_DEVICE_TTYUSB0_SERIAL"] == serial
		}},
		{field: "mounts", after: "    mounts: [\"/etc/hostname:/etc/node-name:ro\"]\n", want: func(v view) bool {
			m := v.resp.GetMounts()
			return len(m) == 1 && m[0].HostPath == "/etc/hostname" && m[0].ContainerPath == "/etc/node-name" && m[0].ReadOnly
		}},
		{field: "with", after: "    with: [pps0]\n", want: func(v view) bool {
			return hasSpec(v, "/dev/ttyUSB0", "/dev/ttyUSB0") && hasSpec(v, "/dev/pps0", "/dev/pps0")
		}},
		{field: "cdi", after: "    cdi: true\n", want: func(v view) bool {
			cdi := v.resp.GetCdiDevices()
			return len(cdi) == 1 && cdi[0].Name == res+"=0" && len(v.resp.GetDevices()) == 0 &&
				strings.Contains(v.cdiSpec, `"hostPath": "/dev/ttyUSB0"`)
		}},
		{field: "cdi turned off", before: "    cdi: true\n", want: func(v view) bool {
			return len(v.resp.GetCdiDevices()) == 0 && hasSpec(v, "/dev/ttyUSB0", "/dev/ttyUSB0") && v.cdiSpec == ""
		}},
		{field: "owner", before: "    cdi: true\n", after: "    cdi: true\n    owner: {uid: 1000, gid: 1001, mode: \"0660\"}\n", want: func(v view) bool {
			return strings.Contains(v.cdiSpec, `"uid": 1000`) && strings.Contains(v.cdiSpec, `"gid": 1001`) && strings.Contains(v.cdiSpec, `"fileMode": 432`)
		}},
		{field: "count", after: "    count: 3\n", want: func(v view) bool {
			return health(3, pluginapi.Healthy)(v.devices)
		}},
		{field: "name", after: "    name: gps\n", res: "smarter-devices/gps", want: func(v view) bool {
			return health(1, pluginapi.Healthy)(v.devices) && hasSpec(v, "/dev/ttyUSB0", "/dev/ttyUSB0") && !v.oldAlive
		}},
	} {
		t.Run(c.field, func(t *testing.T) {
			m := hwfixture.New(true)
			cdiDir := filepath.Join(testutil.ShortTempDir(t), "cdi")
			h := newHarness(t, base+c.before, func(o *Options) {
				onMachine(m)(o)
				o.CDIDir = cdiDir
			})
			m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", serial))
			m.Dev.Put("pps0", &fstest.MapFile{Mode: charDev})
			h.events.fire("add", "ttyUSB0")
			h.waitFor(res, "served", health(1, pluginapi.Healthy))
			after := c.res
			if after == "" {
				after = res
			}
			look := func() (view, bool) {
				v := view{devices: h.kubelet.Devices(after), oldAlive: h.kubelet.Streaming(res)}
				client, err := h.kubelet.Client(after)
				if err != nil {
					return v, false // not registered (yet)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0"}}}})
				if err != nil {
					return v, false
				}
				v.resp = resp.ContainerResponses[0]
				if b, err := os.ReadFile(cdiFile(cdiDir, after)); err == nil {
					v.cdiSpec = string(b)
				}
				return v, true
			}
			if v, ok := look(); ok && c.want(v) {
				t.Fatalf("before the reload the daemon already gives Allocate %v, devices %v: the case tests nothing", v.resp, v.devices)
			}
			h.rewrite(filepath.Join(h.dir, "rules.yaml"), base+c.after)
			h.waitReloads(1)
			var last view
			defer func() {
				if t.Failed() {
					t.Logf("last seen: Allocate %v; devices %v; %s still served: %v; CDI spec %q", last.resp, last.devices, res, last.oldAlive, last.cdiSpec)
				}
			}()
			testutil.Eventually(t, 20*time.Second, c.field+" applied by the reload", func() bool {
				v, ok := look()
				last = v
				return ok && c.want(v)
			})
			if n := h.kubelet.Registrations(after); n != 1 {
				t.Errorf("%s registered %d times; a changed rule updates its running resource in place", after, n)
			}
		})
	}
}
