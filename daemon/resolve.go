package daemon

import (
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/hotplug"
)

// state is one read of the device state, resolved against the rules.
type state struct {
	nodes   []hotplug.Node
	byPath  map[string]conf.Device // identity included, where read
	desired []conf.Resource        // what the rules ask for, dangerous nodes refused
}

// read scans the device root and sysfs and resolves them against the
// rules. Its warnings go to logWarnings.
func (d *daemon) read() (state, error) {
	nodes, err := hotplug.ScanDev(d.opts.DevFS, d.opts.ScanDepth)
	if err != nil {
		return state{}, err
	}
	gpus := d.readGPUs()
	devs := make([]conf.Device, len(nodes))
	var reader *hotplug.Reader
	if d.rulesReadIdentity() || d.opts.Output != nil {
		// (An Output describes every device by its identity.)
		// One reader per state read: attribute reads are cached within it.
		reader = hotplug.NewReader(d.opts.SysFS, d.opts.RunFS)
	}
	for i, n := range nodes {
		devs[i] = conf.Device{Path: n.Path, Dir: n.Dir}
		if reader != nil && !n.Dir {
			devs[i].Ident = &lazyIdent{reader: reader, devFS: d.opts.DevFS, path: n.Path}
		}
	}
	byPath := make(map[string]conf.Device, len(devs))
	for _, dev := range devs {
		byPath[dev.Path] = dev
	}
	desired, warns := d.cfg.Resolve(d.opts.Prefix, devs, gpus)
	d.logWarnings(warns)
	return state{nodes: nodes, byPath: byPath, desired: d.refuseDangerous(desired, nodes)}, nil
}

// readGPUs lists the Jetson GPUs when a rule asks for them. Listing sysfs's
// devices and devices/platform is the costliest part of a state read after
// the device root, and an integrated GPU is never plugged in or out, so the
// list is read again only after a resync period (or a reload).
func (d *daemon) readGPUs() []string {
	if !slices.ContainsFunc(d.cfg.Rules, func(r conf.Rule) bool { return r.Kind == conf.NvidiaGPURule }) {
		return nil
	}
	if d.gpus.read && time.Since(d.gpus.at) < d.opts.Resync {
		return d.gpus.ids
	}
	gpus, err := hotplug.ScanGPUs(d.opts.SysFS)
	if err != nil {
		d.log.Warn().Err(err).Str("dir", d.opts.SysRoot).Msg("cannot read GPUs from sysfs")
		return gpus
	}
	d.gpus.ids, d.gpus.at, d.gpus.read = gpus, time.Now(), true
	return gpus
}

// rulesReadIdentity reports whether any rule makes the daemon read a
// device's identity (conf.Rule.UsesIdentity): to match it, name it, group
// it into a class, or describe it to the container.
func (d *daemon) rulesReadIdentity() bool {
	for i := range d.cfg.Rules {
		if d.cfg.Rules[i].UsesIdentity() {
			return true
		}
	}
	return false
}

// resolveUnit reads, for one unit of this read, what its content is made
// of under rule: its nodes (a directory's nodes below it), the companions
// present, and, where the rule uses them, its links, NUMA node, serial and
// the group of its node. devs are the unit's nodes, its first one first; a
// GPU unit has none.
func (d *daemon) resolveUnit(st *state, rule *conf.Rule, gpu string, devs ...conf.Device) resolvedUnit {
	if gpu != "" {
		return resolvedUnit{GPU: gpu}
	}
	first := devs[0]
	u := resolvedUnit{Path: first.Path, Dir: first.Dir, Ident: Identity{Path: first.Path}}
	// Scanned paths are relative and clean; IsLocal keeps that promise
	// explicit: no host path outside the device root, ever.
	for _, dev := range devs {
		if dev.Dir {
			prefix := dev.Path + "/"
			for _, n := range st.nodes {
				if !n.Dir && strings.HasPrefix(n.Path, prefix) && filepath.IsLocal(n.Path) {
					u.Nodes = append(u.Nodes, resolvedNode{Path: n.Path, Host: d.hostPath(n.Path)})
				}
			}
			continue
		}
		if !filepath.IsLocal(dev.Path) {
			continue
		}
		n := resolvedNode{Path: dev.Path, Host: d.hostPath(dev.Path)}
		if id, ok := dev.Ident.(*lazyIdent); ok && (rule.ExposeLinks || rule.DescribeEnv) {
			n.Links = id.links()
		}
		u.Nodes = append(u.Nodes, n)
	}
	for _, w := range rule.With {
		if dev, ok := st.byPath[w.Path]; ok && !dev.Dir && filepath.IsLocal(w.Path) {
			u.Companions = append(u.Companions, resolvedNode{Path: w.Path, Host: d.hostPath(w.Path)})
		}
	}
	if id, ok := first.Ident.(*lazyIdent); ok && !first.Dir {
		if d.opts.Output != nil {
			u.Ident = id.identity()
		}
		u.NUMANode, u.HasNUMA = id.numa()
		if rule.DescribeEnv {
			u.Serial = id.serial()
		}
	}
	if rule.DescribeEnv {
		if gid, err := hotplug.NodeGID(d.opts.DevFS, first.Path); err == nil {
			u.GID, u.HasGID = gid, true
		}
	}
	return u
}

// hostPath is where a path below the device root is on the host.
func (d *daemon) hostPath(rel string) string {
	return filepath.Join(d.opts.DevRoot, filepath.FromSlash(rel))
}

func (d *daemon) logWarnings(warns []conf.Warning) {
	for _, w := range warns {
		if d.collect != nil {
			d.collect(w)
		}
		key := w.String()
		if d.warned[key] {
			continue
		}
		d.warned[key] = true
		d.log.Warn().Str("device", w.Device).Msg(w.Msg)
	}
}
