package conf

import (
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// RuleKind says how a rule selects devices.
type RuleKind int

const (
	// DeviceRule matches device paths under the device root with a regexp.
	DeviceRule RuleKind = iota
	// NvidiaGPURule is the special match "nvidia-gpu": it selects the Jetson
	// integrated GPUs (/sys/devices/gpu.N), not device paths, as the old
	// daemon did.
	NvidiaGPURule
)

// String names the kind for messages.
func (k RuleKind) String() string {
	switch k {
	case DeviceRule:
		return "device"
	case NvidiaGPURule:
		return "nvidia-gpu"
	}
	return "RuleKind(" + strconv.Itoa(int(k)) + ")"
}

// NvidiaGPUMatch is the match value that makes a rule an NvidiaGPURule.
const NvidiaGPUMatch = "nvidia-gpu"

// Pos is where something starts in a rule file.
type Pos struct {
	File string
	Line int // 1-based; 0 when unknown
}

// String formats the position as "file:line", or "file" when the line is
// unknown.
func (p Pos) String() string {
	if p.Line <= 0 {
		return p.File
	}
	return p.File + ":" + strconv.Itoa(p.Line)
}

// Format is the file format a Config was decoded from.
type Format int

const (
	// FormatLegacyYAML is the old daemon's top-level YAML sequence.
	FormatLegacyYAML Format = iota
	// FormatYAML is the versioned YAML mapping (version: v1).
	FormatYAML
	// FormatTOML is the versioned TOML file (version = "v1").
	FormatTOML
)

// String names the format for logs.
func (f Format) String() string {
	switch f {
	case FormatLegacyYAML:
		return "legacy-yaml"
	case FormatYAML:
		return "yaml-v1"
	case FormatTOML:
		return "toml-v1"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// Rule is one validated, compiled rule. Rules obtained from Parse, Load or
// Default are ready to use; a Rule built by hand matches nothing.
type Rule struct {
	Match       string   // Go regexp source, or NvidiaGPUMatch
	Kind        RuleKind // NvidiaGPURule exactly when Match is NvidiaGPUMatch
	Count       int      // device IDs to advertise (legacy nummaxdevices)
	Permissions string   // cgroup device permissions: a non-empty subset of "rwm"
	Name        string   // fixed resource-name part after the prefix; "" derives it from the path
	// AllowDangerous lets the rule expose nodes that give control of the
	// host (mem, kmem, port, kmsg, block devices in use); off by default.
	AllowDangerous bool
	// Subsystem, Properties and Attributes narrow a device rule beyond its
	// path: whole-string regexps on the device's subsystem, on its kernel
	// and udev properties, and on sysfs attributes that must all hold on
	// the device itself or on one of its ancestors (udev's ATTRS).
	Subsystem  string
	Properties map[string]string
	Attributes map[string]string

	// Class makes the rule one resource, <prefix>/<Class>, for every device
	// it matches, each with IDs of its own derived from its stable identity
	// (serial, else physical path), instead of a resource per device.
	Class string
	// With are companion nodes every allocation also gets (a GPU's
	// nvidiactl and nvidia-uvm): a required one missing makes the device
	// unhealthy, an optional one is left out.
	With []Companion
	// Mounts are host paths mounted into the container with the device.
	Mounts []Mount
	// CDI hands the device to the container runtime as a CDI device (a
	// spec file the daemon writes) instead of device specs.
	CDI bool
	// ContainerPath is where the node appears in the container (for a
	// directory, where the directory does); "" keeps the host's /dev path.
	ContainerPath string
	// ExposeLinks adds udev's symlinks for the node (serial/by-id/…,
	// by-path/…) in the container, pointing at the same node.
	ExposeLinks bool
	// Env is added to the container's environment as is.
	Env map[string]string
	// DescribeEnv adds SMARTER_DEVICE_<NAME>… variables describing the
	// device (its path in the container, a stable path, serial, group).
	DescribeEnv bool
	// Owner sets the owner and mode of the unit's nodes in the container,
	// through the CDI spec (only with CDI: the device plugin API has no
	// such fields), so a non-root container can open them.
	Owner Owner
	// EvictOnUnplug asks that a pod using the device be evicted when it
	// is unplugged. Only the DRA driver can: its unplugged device carries
	// a NoExecute taint instead of NoSchedule, and Kubernetes' taint
	// eviction controller moves the pod. The device plugin API has no
	// such signal (the kubelet never evicts for an unhealthy device).
	EvictOnUnplug bool

	nameVars []string // placeholders of a Name template: {ID_SERIAL_SHORT}, {path}
	subsysRE *regexp.Regexp
	propRE   map[string]*regexp.Regexp
	attrRE   map[string]*regexp.Regexp
	Pos      Pos // where the rule starts

	re *regexp.Regexp // compiled Match for DeviceRule; nil otherwise
}

// MatchPath reports whether a DeviceRule matches a device path relative to
// the device root ("ttyUSB0", "net/tun", "snd"). An NvidiaGPURule matches no
// path.
func (r *Rule) MatchPath(path string) bool {
	return r.Kind == DeviceRule && r.re != nil && r.re.MatchString(path)
}

// NeedsIdentity reports whether matching a device needs its Identity: the
// rule tests more than the path (subsystem, properties, attributes, a
// name template's properties). Matches uses it; UsesIdentity is the wider
// question a reader of devices asks.
func (r *Rule) NeedsIdentity() bool {
	return r.subsysRE != nil || len(r.propRE) > 0 || len(r.attrRE) > 0 ||
		slices.ContainsFunc(r.nameVars, func(v string) bool { return v != "path" })
}

// UsesIdentity reports whether anything the rule does reads a device's
// Identity: matching it (NeedsIdentity), or, once matched, the links and
// environment it gives the container and the member keys of a class. A
// caller that reads identities only when some rule uses them asks this,
// not NeedsIdentity.
func (r *Rule) UsesIdentity() bool {
	return r.NeedsIdentity() || r.ExposeLinks || r.DescribeEnv || r.Class != ""
}

// Matches reports whether the rule selects the device: its path, and its
// identity where the rule asks for one (a device without one then does not
// match).
func (r *Rule) Matches(d Device) bool {
	if !r.MatchPath(d.Path) {
		return false
	}
	if !r.NeedsIdentity() {
		return true
	}
	if d.Ident == nil {
		return false
	}
	if r.subsysRE != nil && !r.subsysRE.MatchString(d.Ident.Subsystem()) {
		return false
	}
	for k, re := range r.propRE {
		if v, ok := d.Ident.Property(k); !ok || !re.MatchString(v) {
			return false
		}
	}
	return len(r.attrRE) == 0 || d.Ident.MatchAttributes(r.attrRE)
}

// selector is what selects devices: the match and every identity
// condition. Two unnamed rules with the same selector give the same
// resources, so the second could never win.
func (r *Rule) selector() string {
	var b strings.Builder
	b.WriteString(r.Match)
	b.WriteString("\x00" + r.Subsystem)
	for _, m := range []map[string]string{r.Properties, r.Attributes} {
		b.WriteString("\x00")
		for _, k := range sortedKeys(m) {
			b.WriteString(k + "=" + m[k] + "\x00")
		}
	}
	return b.String()
}

// describe names the rule in messages: its position and match.
func (r *Rule) describe() string {
	return r.Pos.String() + " (" + strconv.Quote(r.Match) + ")"
}

// Companion is a node that goes with a rule's device in every allocation.
type Companion struct {
	Path     string // relative to the device root: "nvidiactl"
	Optional bool   // written with a trailing "?"
}

// Owner is who owns a container's device nodes, and their mode, where a
// rule says (owner: {uid, gid, mode}); each part is set only with its Has
// flag, else the runtime's default holds (the host node's mode; owner
// root).
type Owner struct {
	UID, GID       uint32
	HasUID, HasGID bool
	Mode           fs.FileMode // permission bits only
	HasMode        bool
}

// Mount is a host path a container gets with the device.
type Mount struct {
	HostPath, ContainerPath string
	ReadOnly                bool
}

// Config is a validated rule set.
type Config struct {
	Source string // file the rules came from, as given to Parse or Load
	Format Format
	Rules  []Rule // in file order; order matters, the first match wins
}

// RuleFor returns the index in c.Rules of the first DeviceRule that matches
// path, or -1 if none does.
func (c *Config) RuleFor(path string) int {
	for i := range c.Rules {
		if c.Rules[i].MatchPath(path) {
			return i
		}
	}
	return -1
}
