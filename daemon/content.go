package daemon

import (
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/smarter-project/smarter-device-manager/conf"
)

// resolvedUnit is one unit (a device node, a directory of nodes, a GPU, or
// a class member with all its nodes) as a state read found it: everything
// its content is made of, read beforehand, so that buildContent does no
// I/O and is a pure function of this value and the rule.
type resolvedUnit struct {
	Path string // the unit's node or directory below the device root; "" for a GPU
	Dir  bool   // Path is a directory: Nodes are the device nodes below it
	GPU  string // N of /sys/devices/gpu.N for a GPU; "" otherwise
	// Nodes are the unit's device nodes: the node itself, every node below
	// the directory, or a class member's nodes (its first one first).
	Nodes []resolvedNode
	// Companions are the rule's `with` nodes that exist in this read.
	Companions []resolvedNode
	// NUMANode is the first node's NUMA node, when HasNUMA.
	NUMANode int
	HasNUMA  bool
	// Serial is the device's serial number: udev's ID_SERIAL_SHORT, else
	// the USB device's own serial attribute; "" when unknown.
	Serial string
	// GID is the group owning the unit's node (or directory) on the host,
	// when HasGID.
	GID    uint32
	HasGID bool
	// Ident describes the unit; read only for an Output (Options.Output),
	// and no part of its content: a container gets nothing of it.
	Ident Identity
}

// resolvedNode is one device node of a resolved unit.
type resolvedNode struct {
	Path  string   // below the device root, slash-separated
	Host  string   // on the host: the device root joined with Path
	Links []string // udev's links to it as /dev paths, sorted; read only where the rule uses them
}

// content is what a container gets with one unit: its device nodes,
// environment and mounts, and where it sits (NUMA). It is built once per
// state read, and each output only renders it: the device plugin's
// Allocate answer and its CDI spec (render.go, cdi.go), and any other
// output the same way.
type Content struct {
	Nodes  []DeviceNode
	Env    map[string]string // nil when empty
	Mounts []conf.Mount
	// NUMANode is the unit's NUMA node when HasNUMA: the kubelet's
	// topology manager aligns it with the pod's CPUs and memory.
	NUMANode int
	HasNUMA  bool
	// MissingCompanion is set when a required companion (rule `with`) is
	// absent: the unit cannot be used without it.
	MissingCompanion bool
	// Owner is the owner and mode of the nodes in the container (rule
	// owner). Only the CDI spec carries it: the device plugin API has no
	// such fields.
	Owner conf.Owner
}

// DeviceNode is one device node a container gets.
type DeviceNode struct {
	HostPath      string // on the host, e.g. /dev/ttyUSB0
	ContainerPath string // in the container
	Permissions   string // cgroup permissions: some of "rwm"
}

// equal reports whether two contents give a container the same. Every
// field counts (TestContentEqualCoversEveryField), so a change in any of
// them reaches the outputs.
func (c Content) equal(o Content) bool {
	return slices.Equal(c.Nodes, o.Nodes) && maps.Equal(c.Env, o.Env) && slices.Equal(c.Mounts, o.Mounts) &&
		c.NUMANode == o.NUMANode && c.HasNUMA == o.HasNUMA && c.MissingCompanion == o.MissingCompanion && c.Owner == o.Owner
}

// buildContent is the content of one unit of resource under rule. The
// rule may move the nodes in the container (container_path), add udev's
// links to them (expose_links), companion nodes (with), mounts, and
// environment (env, describe_env). A GPU gets NVIDIA_VISIBLE_DEVICES.
func buildContent(rule *conf.Rule, resource, permissions string, u resolvedUnit) Content {
	var c Content
	if u.GPU != "" {
		c.Env = map[string]string{"NVIDIA_VISIBLE_DEVICES": u.GPU}
		maps.Copy(c.Env, rule.Env)
		return c
	}
	add := func(host, container string) {
		c.Nodes = append(c.Nodes, DeviceNode{HostPath: host, ContainerPath: container, Permissions: permissions})
	}
	for _, n := range u.Nodes {
		in := inContainer(rule, u, n.Path)
		add(n.Host, in)
		if rule.ExposeLinks && !u.Dir {
			// The container gets the real node at each link's path (host
			// symlinks are never followed).
			for _, l := range n.Links {
				if l != in {
					add(n.Host, l)
				}
			}
		}
	}
	// Companions: every allocation gets them; a required one missing
	// leaves the unit unusable.
	for _, w := range rule.With {
		if !filepath.IsLocal(w.Path) {
			continue
		}
		if i := slices.IndexFunc(u.Companions, func(n resolvedNode) bool { return n.Path == w.Path }); i >= 0 {
			add(u.Companions[i].Host, path.Join("/dev", w.Path))
		} else if !w.Optional {
			c.MissingCompanion = true
		}
	}
	c.Mounts = slices.Clone(rule.Mounts)
	c.NUMANode, c.HasNUMA = u.NUMANode, u.HasNUMA
	c.Owner = rule.Owner

	env := maps.Clone(rule.Env)
	if rule.DescribeEnv && len(c.Nodes) > 0 {
		if env == nil {
			env = map[string]string{}
		}
		key := envKey(resource)
		env[key] = inContainer(rule, u, u.Path)
		if len(u.Nodes) > 0 && !u.Dir {
			if stable := stableLink(u.Nodes[0].Links); stable != "" {
				env[key+"_STABLE"] = stable
			}
		}
		if u.Serial != "" {
			env[key+"_SERIAL"] = u.Serial
		}
		if u.HasGID {
			// For a container that does not run as root: add this group
			// (supplementalGroups) to open the node.
			env[key+"_GID"] = strconv.FormatUint(uint64(u.GID), 10)
		}
	}
	if len(env) > 0 {
		c.Env = env
	}
	return c
}

// inContainer is where node rel of unit u appears in the container: its
// /dev path, or the rule's container_path (for a directory, with the
// node's path below it).
func inContainer(rule *conf.Rule, u resolvedUnit, rel string) string {
	if rule.ContainerPath == "" {
		return path.Join("/dev", rel)
	}
	if u.Dir {
		return path.Join(rule.ContainerPath, strings.TrimPrefix(rel, u.Path))
	}
	return rule.ContainerPath
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
