package dra

import (
	"fmt"
	"slices"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/resourceclaim"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/dra/internal/claimdata"
)

// DeviceConfig is the opaque configuration a DeviceClass or a
// ResourceClaim may give the driver's devices, as JSON (claimdata parses
// it):
//
//	{"owner": {"uid": 1000, "gid": 1000, "mode": "0660"}}
type DeviceConfig = claimdata.DeviceConfig

// owner is the owner a claim's configuration gives the devices of
// request, over the rule's: each config of this driver that applies to
// the request (none listed: every request), in the order the allocation
// lists them (the class's, then the claim's), sets what it has.
func (d *Driver) owner(c *resourceapi.ResourceClaim, request string, rule conf.Owner) (conf.Owner, error) {
	o := rule
	for _, cfg := range c.Status.Allocation.Devices.Config {
		if cfg.Opaque == nil || cfg.Opaque.Driver != d.opts.DriverName {
			continue
		}
		if len(cfg.Requests) > 0 && !slices.Contains(cfg.Requests, request) && !slices.Contains(cfg.Requests, resourceclaim.BaseRequestRef(request)) {
			continue
		}
		if err := claimdata.ApplyConfig(d.opts.DriverName, cfg.Opaque.Parameters.Raw, &o); err != nil {
			return o, fmt.Errorf("%s config: %w", cfg.Source, err)
		}
	}
	return o, nil
}
