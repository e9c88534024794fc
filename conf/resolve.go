package conf

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Device is one device found under the device root (normally /dev).
type Device struct {
	Path string // relative to the root, slash-separated: "ttyUSB0", "net/tun", "snd"
	Dir  bool   // a directory such as snd: the resource carries every device below it
	// Ident is what sysfs and udev know of the device, asked only by rules
	// that match on more than the path; nil when unknown.
	Ident Identity
}

// Identity is what sysfs and udev know of one device. The daemon reads it
// (lazily, once per state read); conf only asks, and stays pure.
type Identity interface {
	Subsystem() string
	Property(key string) (string, bool)
	// MatchAttributes reports whether every attribute regexp holds on the
	// device itself or on one of its ancestors, the same one for all.
	MatchAttributes(attrs map[string]*regexp.Regexp) bool
	// Unit is the physical device the node belongs to, read from sysfs;
	// zero when sysfs does not know the node.
	Unit() UnitID
}

// UnitID names the physical device a node belongs to (a USB adapter, a
// PCI sound card, a platform device), as the daemon read it from sysfs:
// the same whether udev runs or not.
type UnitID struct {
	// Key is the unit's stable identity, usable as a device ID: a USB
	// device's vendor_product_serial, else its port, else its bus and
	// name, else its sysfs path.
	Key string
	// PortKey names the unit by its place alone (for a USB device with a
	// serial number, its port): used when two units report the same Key.
	PortKey string
	// SysPath is the unit's sysfs directory: two nodes with the same
	// SysPath are nodes of one unit.
	SysPath string
}

// Resource is one extended resource the daemon should advertise.
type Resource struct {
	Name        string // full resource name, prefix + "/" + part: "smarter-devices/net_tun"
	Socket      string // socket base name, as the old daemon named it: "smarter-net_tun.sock"
	Rule        int    // index into Config.Rules of the rule that made it
	Path        string // device path relative to the root; "" for a GPU
	Dir         bool   // Path is a directory
	GPU         string // N of /sys/devices/gpu.N for an nvidia-gpu resource; "" otherwise
	Count       int    // device IDs to advertise (per member, for a class)
	Permissions string // cgroup device permissions, a subset of "rwm"
	// Members are the devices of a class resource (Rule.Class), in devs
	// order; Path is then "".
	Members []Member
}

// Member is one physical device of a class resource: one allocatable
// unit, with every node it has (a camera's video0 and video1).
type Member struct {
	Device
	// Others are the device's further nodes: those with the same Key.
	Others []Device
	// Key is the stable identity of the physical device the nodes belong
	// to (UnitID.Key), or the node's path when sysfs does not know it.
	// Its device IDs are derived from it, so they survive renumbering and
	// daemon restarts, and a different device never gets them.
	Key string
}

// IDs are the device IDs of a member: its key, or key-0 … key-(count-1).
func (m Member) IDs(count int) []string {
	if count == 1 {
		return []string{m.Key}
	}
	ids := make([]string, count)
	for i := range ids {
		ids[i] = m.Key + "-" + strconv.Itoa(i)
	}
	return ids
}

// Warning is a device the rules could not turn into a resource as written,
// or a rule that lost to another. The daemon logs it and keeps going.
type Warning struct {
	Device string // device path, or "gpu.N"
	Msg    string
}

// String names the device and the problem.
func (w Warning) String() string { return w.Device + ": " + w.Msg }

// Error is String, so a Warning can be returned or wrapped as an error.
func (w Warning) Error() string { return w.String() }

// servingDir returns the nearest directory above path that a rule serves,
// and that rule; -1 when none does.
func servingDir(dirWin map[string]int, path string) (string, int) {
	for dir := path; ; {
		i := strings.LastIndexByte(dir, '/')
		if i < 0 {
			return "", -1
		}
		dir = dir[:i]
		if w, ok := dirWin[dir]; ok {
			return dir, w
		}
	}
}

// gpuPart is the name part of GPU N, as the old daemon named it.
const gpuPart = "nvidia-gpu"

// Resolve turns the rules and the scanned devices into the resources to
// advertise, sorted by Name. It is a pure function of its arguments.
//
// Each device is matched against the DeviceRules in order (the regexp sees
// the path relative to the root); the first match wins, and every later rule
// that also matches gives a Warning; a node below a directory that an
// earlier rule serves is the directory's (Warning). The resource's name part is the rule's
// Name, or else the path with '/' and every character outside
// [A-Za-z0-9_-] replaced by '_'. A name that is not a valid extended
// resource name, or that an earlier device (in devs order) already took,
// gives a Warning and no resource. gpus are the N of each
// /sys/devices/gpu.N; the first NvidiaGPURule makes "<prefix>/nvidia-gpuN"
// for each.
func (c *Config) Resolve(prefix string, devs []Device, gpus []string) ([]Resource, []Warning) {
	var (
		out     []Resource
		warns   []Warning
		taken   = make(map[string]string, len(devs)) // resource name → device that took it
		classes = map[int][]Device{}                 // class rule → its devices
	)
	// Every name has the same domain: its check (a regexp) runs once.
	prefixErr := ValidPrefix(prefix)
	validDomain := func(domain string) error {
		if domain == prefix {
			return prefixErr
		}
		return ValidPrefix(domain)
	}
	claim := func(dev string, r Resource) {
		if err := validResourceName(r.Name, validDomain); err != nil {
			warns = append(warns, Warning{dev, fmt.Sprintf("skipped: rule %s gives an invalid resource name: %v", c.Rules[r.Rule].describe(), err)})
			return
		}
		if first, dup := taken[r.Name]; dup {
			warns = append(warns, Warning{dev, fmt.Sprintf("skipped: resource name %q (rule %s) is already taken by %s", r.Name, c.Rules[r.Rule].describe(), first)})
			return
		}
		taken[r.Name] = dev
		out = append(out, r)
	}

	wins := make([]int, len(devs))
	dirWin := map[string]int{} // a directory a rule serves → that rule
	for j, d := range devs {
		win := -1
		for i := range c.Rules {
			r := &c.Rules[i]
			if !r.Matches(d) {
				continue
			}
			if win < 0 {
				win = i
				continue
			}
			warns = append(warns, Warning{d.Path, fmt.Sprintf("also matches rule %s, which is ignored for it; rule %s comes first", r.describe(), c.Rules[win].describe())})
		}
		wins[j] = win
		if d.Dir && win >= 0 {
			dirWin[d.Path] = win
		}
	}
	for j, d := range devs {
		win := wins[j]
		if win < 0 {
			continue
		}
		// A directory's resource gives every node below it, so first rule
		// wins there too: a node in a directory an earlier rule serves is
		// that directory's (else one node would be handed out by two
		// resources at once).
		if dir, dw := servingDir(dirWin, d.Path); dw >= 0 && dw != win {
			if dw < win {
				warns = append(warns, Warning{d.Path, fmt.Sprintf("is inside %s, which rule %s serves as a whole; rule %s, which comes later, is ignored for it", dir, c.Rules[dw].describe(), c.Rules[win].describe())})
				continue
			}
			warns = append(warns, Warning{d.Path, fmt.Sprintf("is inside %s, which rule %s also serves as a whole: two resources give this node", dir, c.Rules[dw].describe())})
		}
		r := &c.Rules[win]
		if r.Class != "" {
			classes[win] = append(classes[win], d)
			continue
		}
		part, err := r.namePart(d)
		if err != nil {
			warns = append(warns, Warning{d.Path, fmt.Sprintf("skipped: rule %s: %v", r.describe(), err)})
			continue
		}
		claim(d.Path, Resource{
			Name:        prefix + "/" + part,
			Socket:      "smarter-" + part + ".sock",
			Rule:        win,
			Path:        d.Path,
			Dir:         d.Dir,
			Count:       r.Count,
			Permissions: r.Permissions,
		})
	}

	for i := range c.Rules {
		if devs, ok := classes[i]; ok {
			r := &c.Rules[i]
			res := Resource{
				Name:        prefix + "/" + r.Class,
				Socket:      "smarter-" + r.Class + ".sock",
				Rule:        i,
				Count:       r.Count,
				Permissions: r.Permissions,
			}
			keys, kw := memberKeys(devs)
			warns = append(warns, kw...)
			byKey := map[string]int{}
			for _, d := range devs {
				key := keys[d.Path]
				if i, same := byKey[key]; same {
					// Another node of the same physical device.
					res.Members[i].Others = append(res.Members[i].Others, d)
					continue
				}
				byKey[key] = len(res.Members)
				res.Members = append(res.Members, Member{Device: d, Key: key})
			}
			claim(r.Class, res)
		}
	}

	if g := c.gpuRule(); g >= 0 {
		r := &c.Rules[g]
		for _, n := range gpus {
			part := gpuPart + n
			claim("gpu."+n, Resource{
				Name:        prefix + "/" + part,
				Socket:      "smarter-" + part + ".sock",
				Rule:        g,
				GPU:         n,
				Count:       r.Count,
				Permissions: r.Permissions,
			})
		}
	}

	slices.SortFunc(out, func(a, b Resource) int { return strings.Compare(a.Name, b.Name) })
	return out, warns
}

// namePart is the resource-name part rule r gives device d: its Name, its
// Name template expanded with d's properties ({path} is the sanitised
// path), or the sanitised path. An expansion is sanitised too, and one
// longer than Kubernetes allows is shortened with a hash of the whole, so
// it stays stable and distinct.
func (r *Rule) namePart(d Device) (string, error) {
	switch {
	case r.Name == "":
		return sanitize(d.Path), nil
	case r.nameVars == nil:
		return r.Name, nil
	}
	var missing string
	expanded := templateRE.ReplaceAllStringFunc(r.Name, func(m string) string {
		key := m[1 : len(m)-1]
		if key == "path" {
			return d.Path
		}
		if d.Ident != nil {
			if v, ok := d.Ident.Property(key); ok && v != "" {
				return v
			}
		}
		missing = key
		return ""
	})
	if missing != "" {
		return "", fmt.Errorf("the device has no property %s for the name template %q", missing, r.Name)
	}
	return shorten(sanitize(expanded)), nil
}

// memberKeys returns the member key of every device of one class by
// path: the key of its physical device (every node of one unit shares it),
// or its path when sysfs does not know it. Two different units that give
// the same key (clones that all report serial number "0001") are told
// apart by their ports instead: merged, a pod would be given two devices
// as one.
func memberKeys(devs []Device) (map[string]string, []Warning) {
	units := make(map[string]UnitID, len(devs))
	paths := map[string]map[string]bool{} // key → unit sysfs paths
	for _, d := range devs {
		var u UnitID
		if d.Ident != nil {
			u = d.Ident.Unit()
		}
		if u.Key == "" {
			u = UnitID{Key: idSafe(d.Path), SysPath: "node:" + d.Path}
		}
		units[d.Path] = u
		if paths[u.Key] == nil {
			paths[u.Key] = map[string]bool{}
		}
		paths[u.Key][u.SysPath] = true
	}
	keys := make(map[string]string, len(devs))
	var warns []Warning
	for _, d := range devs {
		u := units[d.Path]
		keys[d.Path] = u.Key
		if len(paths[u.Key]) > 1 && u.PortKey != "" && u.PortKey != u.Key {
			keys[d.Path] = u.PortKey
			warns = append(warns, Warning{d.Path, fmt.Sprintf("another device reports the same identity %s; this one is told apart by its port: %s", u.Key, u.PortKey)})
		}
	}
	return keys, warns
}

// idSafe keeps a device ID to letters, digits and "._-".
func idSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (isNameByte(byte(r)) || r == '.') {
			return r
		}
		return '_'
	}, s)
}

// shorten keeps a name part within Kubernetes' 63 characters: a longer one
// becomes its first 54 characters, a dash and 8 hex digits of its SHA-256.
func shorten(part string) string {
	if len(part) <= maxNameLen {
		return part
	}
	sum := sha256.Sum256([]byte(part))
	head := strings.TrimRight(part[:maxNameLen-9], "_-.")
	return head + "-" + hex.EncodeToString(sum[:4])
}

// gpuRule returns the index of the first NvidiaGPURule, or -1.
func (c *Config) gpuRule() int {
	for i := range c.Rules {
		if c.Rules[i].Kind == NvidiaGPURule {
			return i
		}
	}
	return -1
}
