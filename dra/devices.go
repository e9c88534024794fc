package dra

import (
	"cmp"
	"slices"
	"strings"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/dynamic-resource-allocation/deviceattribute"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/ptr"

	"github.com/smarter-project/smarter-device-manager/daemon"
)

// Attribute and capacity names, in the driver's domain (an unqualified
// name is the driver's): a CEL selector reads them as
// device.attributes["<driver>"].serial.
const (
	AttrResource  = "resource"  // the extended resource: "smarter-devices/ttyUSB0"
	AttrKey       = "key"       // a class member's key: "0403_6001_A1B2C3"
	AttrPath      = "path"      // its first node or directory: "/dev/ttyUSB0"
	AttrSubsystem = "subsystem" // "tty"
	AttrMajor     = "major"     // int
	AttrMinor     = "minor"     // int
	AttrBus       = "bus"       // "usb", "pci", "platform"
	AttrVendor    = "vendor"    // USB idVendor: "0403"
	AttrProduct   = "product"   // USB idProduct: "6001"
	AttrSerial    = "serial"    // "A1B2C3"
	AttrModel     = "model"     // "FT232R USB UART"
	AttrPort      = "port"      // USB port path: "1-1.4"
	AttrDriver    = "driver"    // kernel driver: "ftdi_sio"
	// CapacityShares is what a device with count N > 1 holds N of: each
	// claim takes one unless it asks for more.
	CapacityShares = "shares"
)

// Taint keys, below the driver's name: <driver>/unplugged.
const (
	TaintUnplugged  = "unplugged"  // the device is gone; it leaves after --remove-after
	TaintIncomplete = "incomplete" // a companion the rule requires (with) is missing
	TaintFlapping   = "flapping"   // it keeps coming and going: held until quiet (--flap-half-life)
)

// maxSliceDevices is how many devices one ResourceSlice holds: the API's
// limit for slices whose devices have taints (128 without).
const maxSliceDevices = 64

// maxAttrLen is the API's limit on a string attribute's length.
const maxAttrLen = 64

// published is one device of the pool as last published: the unit it
// renders, under its resource.
type published struct {
	res  daemon.Resource // Units left out
	unit daemon.Unit
}

// carried is a device a previous process published as unplugged: a new
// process cannot read a device that is not there, so it publishes the
// device as it was (tainted, with the time it went) until it comes back,
// or until --remove-after has passed since it went, as the previous
// process would have. Without it a restarted daemon dropped such a
// device at once and rewrote its node's slice (the fleet benchmark: a
// fleet-wide restart rewrote 78% of the slices).
type carried struct {
	res, key string             // its resource and key attributes: where it sorts
	dev      resourceapi.Device // as published
	until    time.Time          // when it leaves; zero: when it comes back
}

// renderPool renders every unit of the running resources as the devices
// of one pool, with the carried devices that have not come back or
// expired by now, in resource and key order, as few slices as the API
// allows, and returns the units by name too, and the devices still
// carried. A resource with count 0 offers nothing (the device plugin
// advertises no ID for it).
func renderPool(driver string, resources []daemon.Resource, carry []carried, now time.Time) ([]resourceslice.Slice, map[string]published, []carried) {
	var names []string
	var ids [][2]string
	var units []published
	for _, r := range resources {
		if r.Count <= 0 {
			continue
		}
		res := r
		res.Units = nil
		for _, u := range r.Units {
			names = append(names, DeviceName(r.Name, u.Key))
			ids = append(ids, [2]string{r.Name, u.Key})
			units = append(units, published{res: res, unit: u})
		}
	}
	names = uniqueNames(names, ids)
	byName := make(map[string]published, len(units))
	items := make([]carried, 0, len(units)+len(carry))
	for i, p := range units {
		key := ""
		if p.res.Class {
			key = p.unit.Key
		}
		items = append(items, carried{res: p.res.Name, key: key, dev: renderDevice(driver, p.res, p.unit, names[i])})
		byName[names[i]] = p
	}
	var kept []carried
	for _, c := range carry {
		if _, back := byName[c.dev.Name]; back || (!c.until.IsZero() && !now.Before(c.until)) {
			continue
		}
		kept = append(kept, c)
		items = append(items, c)
	}
	if len(kept) > 0 {
		// Where the previous process had it: the pool is unchanged.
		slices.SortStableFunc(items, func(a, b carried) int { return cmp.Or(strings.Compare(a.res, b.res), strings.Compare(a.key, b.key)) })
	}
	pool := []resourceslice.Slice{{}} // an empty pool still says the driver runs
	for _, it := range items {
		if len(pool[len(pool)-1].Devices) == maxSliceDevices {
			pool = append(pool, resourceslice.Slice{})
		}
		s := &pool[len(pool)-1]
		s.Devices = append(s.Devices, it.dev)
	}
	return pool, byName, kept
}

// renderDevice renders one unit of r as a device named name: its
// attributes from its identity, its shares when count > 1, and a taint
// while it cannot be used.
func renderDevice(driver string, r daemon.Resource, u daemon.Unit, name string) resourceapi.Device {
	dev := resourceapi.Device{Name: name, Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{}}
	// Every device carries every attribute of the driver's domain: a
	// string is "" where the device has none, an int -1. CEL fails a
	// selector that reads a missing key, and the allocator then fails the
	// whole claim ("no such key: serial"), so without them a claim
	// selecting by serial, written as docs/dra.md writes it, could never
	// be allocated on a node where one device has no serial.
	str := func(key, v string) {
		// The API refuses a longer value; a selector on it could never
		// match anyway.
		if len(v) > maxAttrLen {
			v = ""
		}
		dev.Attributes[resourceapi.QualifiedName(key)] = resourceapi.DeviceAttribute{StringValue: ptr.To(v)}
	}
	id := u.Identity
	str(AttrResource, r.Name)
	key := ""
	if r.Class {
		key = u.Key
	}
	str(AttrKey, key)
	path := ""
	if id.Path != "" {
		path = "/dev/" + id.Path
	}
	str(AttrPath, path)
	str(AttrSubsystem, id.Subsystem)
	major, minor := int64(-1), int64(-1)
	if id.HasDevNum {
		major, minor = int64(id.Major), int64(id.Minor)
	}
	dev.Attributes[AttrMajor] = resourceapi.DeviceAttribute{IntValue: ptr.To(major)}
	dev.Attributes[AttrMinor] = resourceapi.DeviceAttribute{IntValue: ptr.To(minor)}
	str(AttrBus, id.Bus)
	str(AttrVendor, id.Vendor)
	str(AttrProduct, id.Product)
	str(AttrSerial, id.Serial)
	str(AttrModel, id.Model)
	str(AttrPort, id.Port)
	str(AttrDriver, id.Driver)
	if c := u.Content; c.HasNUMA && c.NUMANode >= 0 {
		// The standard name, so a claim can align the device with others
		// (a GPU, a NIC) by matchAttribute; only where known, as other
		// drivers publish it (matchAttribute fails on a device without it,
		// which is what an unknown node should do).
		dev.Attributes[deviceattribute.StandardDeviceAttributeNUMANode] = resourceapi.DeviceAttribute{IntValue: ptr.To(int64(c.NUMANode))}
	}
	if id.Bus == "pci" {
		str(string(deviceattribute.StandardDeviceAttributePCIBusID), id.BusAddress)
	}
	if r.Count > 1 {
		// N claims may hold the device at once (consumable capacity):
		// each takes one share unless it asks for more.
		one := apiresource.MustParse("1")
		dev.AllowMultipleAllocations = ptr.To(true)
		dev.Capacity = map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{CapacityShares: {
			Value: *apiresource.NewQuantity(int64(r.Count), apiresource.DecimalSI),
			RequestPolicy: &resourceapi.CapacityRequestPolicy{
				Default:    &one,
				ValidRange: &resourceapi.CapacityRequestPolicyRange{Min: &one, Step: &one},
			},
		}}
	}
	switch {
	case !u.Present():
		effect := resourceapi.DeviceTaintEffectNoSchedule
		if r.EvictOnUnplug {
			effect = resourceapi.DeviceTaintEffectNoExecute
		}
		dev.Taints = append(dev.Taints, resourceapi.DeviceTaint{Key: driver + "/" + TaintUnplugged, Effect: effect,
			TimeAdded: ptr.To(metav1.NewTime(u.AbsentSince))})
	case u.Flapping:
		// As an unplug would: pods go if the rule evicts on unplug.
		effect := resourceapi.DeviceTaintEffectNoSchedule
		if r.EvictOnUnplug {
			effect = resourceapi.DeviceTaintEffectNoExecute
		}
		dev.Taints = append(dev.Taints, resourceapi.DeviceTaint{Key: driver + "/" + TaintFlapping, Effect: effect})
	case !u.Healthy:
		dev.Taints = append(dev.Taints, resourceapi.DeviceTaint{Key: driver + "/" + TaintIncomplete, Effect: resourceapi.DeviceTaintEffectNoSchedule})
	}
	return dev
}
