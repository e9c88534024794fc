package daemon

import (
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/hotplug"
	"github.com/smarter-project/smarter-device-manager/plugin"
	"golang.org/x/sys/unix"
)

// deviceIDs are "0" … "count-1": the old daemon's own IDs, so kubelet's
// checkpoint still matches after a restart or a switch between daemons.
func deviceIDs(count int, healthy bool) []plugin.Device {
	devs := make([]plugin.Device, count)
	for i := range devs {
		devs[i] = plugin.Device{ID: strconv.Itoa(i), Healthy: healthy}
	}
	return devs
}

// buildSnapshot is what one resource's server advertises and allocates:
// count IDs, and the device nodes a container gets. A directory resource
// (/dev/snd) expands to every device node below it in this scan. The rule
// may move the nodes in the container (container_path), add udev's
// symlinks (expose_links) and environment (env, describe_env).
func buildSnapshot(res conf.Resource, rule *conf.Rule, dev conf.Device, nodes []hotplug.Node, devRoot string, healthy bool) plugin.Snapshot {
	snap := plugin.Snapshot{Devices: deviceIDs(res.Count, healthy)}
	if res.GPU != "" {
		snap.Envs = map[string]string{"NVIDIA_VISIBLE_DEVICES": res.GPU}
		maps.Copy(snap.Envs, rule.Env)
		return snap
	}
	host := func(rel string) string { return filepath.Join(devRoot, filepath.FromSlash(rel)) }
	inContainer := func(rel string) string {
		if rule.ContainerPath == "" {
			return path.Join("/dev", rel)
		}
		// rel is res.Path itself, or a node below the directory res.Path.
		return path.Join(rule.ContainerPath, strings.TrimPrefix(rel, res.Path))
	}
	add := func(hostRel, containerPath string) {
		snap.Specs = append(snap.Specs, plugin.DeviceSpec{HostPath: host(hostRel), ContainerPath: containerPath, Permissions: res.Permissions})
	}
	// Scanned paths are relative and clean; IsLocal keeps that promise
	// explicit: no host path outside the device root, ever.
	if !res.Dir {
		if filepath.IsLocal(res.Path) {
			add(res.Path, inContainer(res.Path))
		}
	} else {
		prefix := res.Path + "/"
		for _, n := range nodes {
			if !n.Dir && strings.HasPrefix(n.Path, prefix) && filepath.IsLocal(n.Path) {
				add(n.Path, inContainer(n.Path))
			}
		}
	}

	// Companions: every allocation gets them; a required one missing
	// leaves the device unusable, so it is advertised unhealthy.
	for _, c := range rule.With {
		if !filepath.IsLocal(c.Path) {
			continue
		}
		if slices.ContainsFunc(nodes, func(n hotplug.Node) bool { return n.Path == c.Path && !n.Dir }) {
			add(c.Path, path.Join("/dev", c.Path))
		} else if !c.Optional {
			for i := range snap.Devices {
				snap.Devices[i].Healthy = false
			}
		}
	}
	for _, m := range rule.Mounts {
		snap.Mounts = append(snap.Mounts, plugin.Mount{HostPath: m.HostPath, ContainerPath: m.ContainerPath, ReadOnly: m.ReadOnly})
	}

	var links []string
	if id, ok := dev.Ident.(*lazyIdent); ok && !res.Dir && (rule.ExposeLinks || rule.DescribeEnv) {
		id.load()
		for _, l := range id.info.Links {
			// udev's links are relative to /dev; the container gets the
			// real node at that path (host symlinks are never followed).
			if filepath.IsLocal(l) {
				links = append(links, "/dev/"+l)
			}
		}
		slices.Sort(links)
	}
	if rule.ExposeLinks && len(snap.Specs) == 1 {
		for _, l := range links {
			if l != snap.Specs[0].ContainerPath {
				add(res.Path, l)
			}
		}
	}

	if id, ok := dev.Ident.(*lazyIdent); ok && !res.Dir {
		if node, ok := id.numa(); ok {
			for i := range snap.Devices {
				snap.Devices[i].NUMANode, snap.Devices[i].HasNUMA = node, true
			}
		}
	}

	env := maps.Clone(rule.Env)
	if rule.DescribeEnv && len(snap.Specs) > 0 {
		if env == nil {
			env = map[string]string{}
		}
		key := envKey(res.Name)
		env[key] = inContainer(res.Path)
		if stable := stableLink(links); stable != "" {
			env[key+"_STABLE"] = stable
		}
		if id, ok := dev.Ident.(*lazyIdent); ok {
			if serial, ok := id.Property("ID_SERIAL_SHORT"); ok {
				env[key+"_SERIAL"] = serial
			} else if u := id.physical(); u.Serial != "" {
				// No udev (a container without /run/udev): the USB
				// device's own serial attribute, as udev would give it.
				env[key+"_SERIAL"] = u.Serial
			}
		}
		if gid, ok := nodeGroup(host(res.Path)); ok {
			// For a container that does not run as root: add this group
			// (supplementalGroups) to open the node.
			env[key+"_GID"] = strconv.FormatUint(uint64(gid), 10)
		}
	}
	if len(env) > 0 {
		snap.Envs = env
	}
	return snap
}

// envKey turns a resource name into an environment variable prefix:
// smarter-devices/gps-A1B2C3 → SMARTER_DEVICE_GPS_A1B2C3.
func envKey(resource string) string {
	part := resource[strings.LastIndexByte(resource, '/')+1:]
	return "SMARTER_DEVICE_" + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, part)
}

// stableLink picks the link that names the device rather than its place
// in the enumeration: by-id first, then by-path.
func stableLink(links []string) string {
	for _, kind := range []string{"/by-id/", "/by-path/"} {
		for _, l := range links {
			if strings.Contains(l, kind) {
				return l
			}
		}
	}
	return ""
}

// nodeGroup is the group that owns a device node on the host.
func nodeGroup(hostPath string) (uint32, bool) {
	var st unix.Stat_t
	if err := unix.Stat(hostPath, &st); err != nil {
		return 0, false
	}
	return st.Gid, true
}

// absentSnapshot is the snapshot of a resource whose device has gone: every
// ID unhealthy (Allocate refuses them), the last known nodes kept, and the
// rule's current count and permissions applied in case a reload changed them.
func absentSnapshot(res conf.Resource, last plugin.Snapshot) plugin.Snapshot {
	snap := plugin.Snapshot{Devices: deviceIDs(res.Count, false), Envs: last.Envs}
	for _, s := range last.Specs {
		s.Permissions = res.Permissions
		snap.Specs = append(snap.Specs, s)
	}
	return snap
}
