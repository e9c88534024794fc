package dra

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/smarter-project/smarter-device-manager/daemon"
	"github.com/smarter-project/smarter-device-manager/dra/internal/claimdata"
)

// SpecFile is where the CDI spec of a prepared claim lives: named by the
// claim's UID, which is never reused, so no runtime's cache of specs can
// hand a new claim an old one's devices. The UID must have passed
// claimdata.CheckUID.
func (d *Driver) SpecFile(claim types.UID) string {
	return filepath.Join(d.opts.CDIDir, strings.ReplaceAll(d.cdiKind, "/", "_")+"_"+string(claim)+".json")
}

// prepare prepares one claim: for each device of this driver allocated
// to it, the unit's nodes, links, environment and mounts, with the owner
// the rule or the claim's config gives, as a CDI device in the claim's
// spec. A claim prepared already gets the answer it got then (the kubelet
// asks again after it restarts); a device unplugged, unknown or held by
// as many other claims as its count fails the claim, and the kubelet
// tries again later.
func (d *Driver) prepare(c *resourceapi.ResourceClaim) kubeletplugin.PrepareResult {
	if err := claimdata.CheckUID(c.Namespace, c.Name, c.UID); err != nil {
		d.opts.Stats.Errors.Add(1)
		d.log.Error().Err(err).Msg("cannot prepare claim") // the error names the claim, the UID shortened
		return kubeletplugin.PrepareResult{Err: err}
	}
	label := claimLabel(c.Namespace, c.Name, c.UID)
	fail := func(err error) kubeletplugin.PrepareResult {
		d.opts.Stats.Errors.Add(1)
		d.log.Error().Err(err).Str("claim", label).Msg("cannot prepare claim")
		return kubeletplugin.PrepareResult{Err: err}
	}
	if p, ok := d.claims.Get(c.UID); ok {
		return prepareResult(p)
	}
	d.mu.Lock()
	devices := d.devices // replaced at each Update, never changed: safe to read unlocked
	d.mu.Unlock()
	spec := &cdispec.Spec{Kind: d.cdiKind}
	claim := claimdata.Claim{Namespace: c.Namespace, Name: c.Name}
	names := map[string]string{} // CDI device name → the request and device it was made for
	for i, r := range c.Status.Allocation.Devices.Results {
		if r.Driver != d.opts.DriverName {
			continue
		}
		p, ok := devices[r.Device]
		switch {
		case r.Pool != d.opts.NodeName:
			return fail(fmt.Errorf("device %s is in pool %q, not this node's (%s)", r.Device, r.Pool, d.opts.NodeName))
		case !ok:
			return fail(fmt.Errorf("no device %s on node %s (gone longer than --remove-after, or no rule makes it any more)", r.Device, d.opts.NodeName))
		case !p.unit.Present():
			return fail(fmt.Errorf("device %s (%s of %s) is unplugged", r.Device, p.unit.Device, p.res.Name))
		case p.unit.Flapping:
			return fail(fmt.Errorf("device %s (%s of %s) keeps coming and going: held until it is quiet", r.Device, p.unit.Device, p.res.Name))
		case !p.unit.Healthy:
			return fail(fmt.Errorf("device %s (%s of %s) misses a companion node its rule requires", r.Device, p.unit.Device, p.res.Name))
		}
		admin := r.AdminAccess != nil && *r.AdminAccess
		if held := d.claims.Holders(r.Device, c.UID); !admin && len(held) >= max(p.res.Count, 1) {
			return fail(fmt.Errorf("device %s is held by %d other prepared claims (count %d), %s first", r.Device, len(held), p.res.Count, held[0]))
		}
		owner, err := d.owner(c, r.Request, p.unit.Content.Owner)
		if err != nil {
			return fail(err)
		}
		name := string(c.UID) + "-" + r.Device
		if prev, ok := names[name]; ok && prev != r.Request {
			name += "-" + strconv.Itoa(i) // the same device for another request: its own owner
		}
		if _, ok := names[name]; !ok {
			names[name] = r.Request
			content := p.unit.Content
			content.Owner = owner
			spec.Devices = append(spec.Devices, cdispec.Device{Name: name, ContainerEdits: content.CDIEdits()})
		}
		claim.Devices = append(claim.Devices, claimdata.Device{Requests: []string{r.Request}, Pool: r.Pool, Device: r.Device,
			CDIDeviceIDs: []string{d.cdiKind + "=" + name}, ShareID: r.ShareID, Admin: admin})
	}
	if len(spec.Devices) > 0 {
		if err := daemon.WriteCDISpec(d.SpecFile(c.UID), spec); err != nil {
			return fail(err)
		}
	}
	if err := d.claims.Put(c.UID, claim); err != nil {
		_ = d.removeSpec(c.UID) // a spec without its claim: unprepare would not know it
		return fail(err)
	}
	var devs []string
	for _, dev := range claim.Devices {
		devs = append(devs, dev.Device)
	}
	d.log.Info().Str("claim", label).Strs("devices", devs).Msg("claim prepared")
	return prepareResult(claim)
}

// unprepare removes a claim's CDI spec and forgets it; a claim not
// prepared (or unprepared already) is no error.
func (d *Driver) unprepare(c kubeletplugin.NamespacedObject) error {
	if err := claimdata.CheckUID(c.Namespace, c.Name, c.UID); err != nil {
		d.opts.Stats.Errors.Add(1)
		d.log.Error().Err(err).Msg("cannot unprepare claim")
		return err
	}
	label := claimLabel(c.Namespace, c.Name, c.UID)
	// The spec goes whether or not the store knows the claim: a
	// checkpoint moved aside (checkpoint.go) forgot it, not the spec.
	if err := d.removeSpec(c.UID); err != nil {
		d.opts.Stats.Errors.Add(1)
		d.log.Error().Err(err).Str("claim", label).Msg("cannot unprepare claim")
		return err
	}
	if _, ok := d.claims.Get(c.UID); !ok {
		return nil
	}
	if err := d.claims.Remove(c.UID); err != nil {
		d.opts.Stats.Errors.Add(1)
		d.log.Error().Err(err).Str("claim", label).Msg("cannot unprepare claim")
		return err
	}
	d.log.Info().Str("claim", label).Msg("claim unprepared")
	return nil
}

// removeSpec removes a claim's CDI spec, if there is one.
func (d *Driver) removeSpec(claim types.UID) error {
	if err := os.Remove(d.SpecFile(claim)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("CDI spec: %w", err)
	}
	return nil
}
