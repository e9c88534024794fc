package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/smarter-project/smarter-device-manager/internal/testkernel"
)

// docsSerial is the serial number docs/dra.md's claims select.
const docsSerial = "A1B2C3"

// yamlBlocks are the documents of every ```yaml block of a Markdown file.
func yamlBlocks(t *testing.T, file string) [][]byte {
	t.Helper()
	md, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(md, -1) {
		for _, doc := range regexp.MustCompile(`(?m)^---$`).Split(string(m[1]), -1) {
			docs = append(docs, []byte(doc))
		}
	}
	return docs
}

// kindOf is a YAML document's kind.
func kindOf(doc []byte) string {
	var tm metav1.TypeMeta
	_ = yaml.Unmarshal(doc, &tm)
	return tm.Kind
}

// docsRules name the device with the serial as docs/configuration.md's
// GPS rules do, so the DeviceClass docs/dra.md writes for
// smarter-devices/gps-A1B2C3 has its device.
const docsRules = `version: v1
rules:
  - match: ^zram[0-9]+$
    name: gps-{ID_SERIAL_SHORT}
  - match: ^null$
    count: 2
`

// The claims and DeviceClasses docs/dra.md tells a user to write, applied
// as written with the DeviceClasses the packaging ships, on a node where
// one device has the serial they select and another (/dev/null) has none:
// the API server accepts each, and the scheduler's allocator gives each
// claim the device with that serial. Without an attribute on every device
// this failed: CEL errs on the missing key ("no such key: serial") and the
// allocator fails the whole claim, wherever a serial-less device is in
// the pool. A pod that asks for smarter-devices/gps-A1B2C3 as an extended
// resource gets it through the docs' class.
func TestDRADocsClaims(t *testing.T) {
	requireZram(t)
	// The serial comes from udev's database, as a USB adapter's does (on a
	// real adapter Debian's /lib/udev/rules.d/60-serial.rules imports
	// udev's usb_id builtin, which sets ID_SERIAL_SHORT from the USB
	// serial): a rule of the test's gives one zram device the property,
	// and udevd runs when the daemon starts, so it reads udev's database.
	testkernel.Udevd(t)
	z := zramAdd(t)
	udevRule(t, "99-smarter-device-manager-docs-test.rules", fmt.Sprintf("KERNEL==\"zram%d\", ENV{ID_SERIAL_SHORT}=%q\n", z, docsSerial))
	if out, err := exec.Command("udevadm", "trigger", "--action=change", "--settle", fmt.Sprintf("/sys/block/zram%d", z)).CombinedOutput(); err != nil {
		t.Fatalf("udevadm trigger: %v\n%s", err, out)
	}

	d := newDRANode(t, docsRules, "1h")
	d.startKubeletDRA()
	d.startDaemon()
	d.waitRegistered("the kubelet registers the driver", nil)
	const gpsRes = "smarter-devices/gps-" + docsSerial
	var gps string // the device's name in the pool
	d.waitSlices("the GPS with its serial, null without one", func(_ []resourceapi.ResourceSlice, devs map[string]resourceapi.Device) bool {
		for name, dev := range devs {
			if attr(dev, "resource") == gpsRes && attr(dev, "serial") == docsSerial {
				gps = name
			}
		}
		_, null := devs["null"]
		return gps != "" && null && attr(devs["null"], "serial") == ""
	})

	// The shipped classes, as a user applies them.
	classes, err := os.ReadFile("../packaging/overlays/dra/deviceclasses.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(classes, []byte("\n---\n")) {
		var c resourceapi.DeviceClass
		if err := yaml.UnmarshalStrict(doc, &c); err != nil {
			t.Fatalf("packaging/overlays/dra/deviceclasses.yaml: %v", err)
		}
		if _, err := d.client.ResourceV1().DeviceClasses().Create(d.ctx(), &c, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating DeviceClass %s: %v", c.Name, err)
		}
	}

	claims, docClasses := 0, 0
	for _, doc := range yamlBlocks(t, "../docs/dra.md") {
		switch kindOf(doc) {
		case "DeviceClass":
			var c resourceapi.DeviceClass
			if err := yaml.UnmarshalStrict(doc, &c); err != nil {
				t.Fatalf("docs/dra.md: %v\n%s", err, doc)
			}
			if _, err := d.client.ResourceV1().DeviceClasses().Create(d.ctx(), &c, metav1.CreateOptions{}); err != nil {
				t.Fatalf("docs/dra.md's DeviceClass %s: %v", c.Name, err)
			}
			docClasses++
		case "ResourceClaimTemplate":
			var tmpl resourceapi.ResourceClaimTemplate
			if err := yaml.UnmarshalStrict(doc, &tmpl); err != nil {
				t.Fatalf("docs/dra.md: %v\n%s", err, doc)
			}
			// What the controller makes of the template for a pod.
			claim := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: tmpl.Name + "-pod", Namespace: metav1.NamespaceDefault},
				Spec: tmpl.Spec.Spec}
			claims++
			created := d.createClaim(claim)
			result, err := d.tryAllocate(created)
			switch {
			case err != nil:
				t.Errorf("docs/dra.md's ResourceClaimTemplate %s: allocating: %v", tmpl.Name, err)
			case result == nil:
				t.Errorf("docs/dra.md's ResourceClaimTemplate %s: no device found; slices: %s", tmpl.Name, describeSlices(d.slices()))
			case len(result.Devices.Results) != 1 || result.Devices.Results[0].Device != gps:
				t.Errorf("docs/dra.md's ResourceClaimTemplate %s: allocated %+v; want the device with serial %s, %s", tmpl.Name, result.Devices.Results, docsSerial, gps)
			}
		}
	}
	if claims == 0 || docClasses == 0 {
		t.Fatalf("docs/dra.md: %d ResourceClaimTemplates, %d DeviceClasses found; want both", claims, docClasses)
	}
	// "Another name is one more class": a pod written for device-plugin
	// mode, asking for the GPS as an extended resource, gets it through
	// the docs' class, found as the scheduler finds it.
	pod := draPod("gps-extended", "")
	if result, err := d.tryAllocate(d.createClaim(d.extendedClaim(pod, gpsRes, 1))); err != nil || result == nil || len(result.Devices.Results) != 1 || result.Devices.Results[0].Device != gps {
		t.Errorf("a pod asking for %s: %+v, %v; want %s", gpsRes, result, err, gps)
	}
	// The guard docs/dra.md gives for a standard attribute, which a
	// device may lack (no zram device has a NUMA node): no error.
	guarded := selectorClaim("guarded", fmt.Sprintf(`device.attributes["resource.kubernetes.io"].?numaNode.orValue(-1) == -1 && device.attributes[device.driver].serial == %q`, docsSerial), "")
	if result, err := d.tryAllocate(d.createClaim(guarded)); err != nil || result == nil || result.Devices.Results[0].Device != gps {
		t.Errorf("a claim guarding numaNode as docs/dra.md says: %+v, %v; want %s", result, err, gps)
	}
	if !strings.Contains(describeSlices(d.slices()), "null") {
		t.Fatal("the pool lost null, the device without a serial this test needs")
	}
}
