package conf

import (
	"fmt"
	"io/fs"
	"math"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// ruleField describes one key of a rule, the only place it is described:
// both decoders read and type-check a rule through ruleFields, an unknown
// key's message lists their keys, and buildRules validates and applies each
// value with the field's apply. Adding a field to Rule is one entry here.
type ruleField struct {
	key      string    // in versioned YAML and TOML
	legacy   string    // in legacy YAML; "" where legacy files cannot set it
	kind     valueKind // checked alike by both decoders
	required bool      // absent: "missing required field"
	// dflt sets the value of an absent field; nil leaves Rule's zero value.
	dflt func(r *Rule, legacy bool)
	// apply validates a present, well-typed value and sets it on b.r,
	// reporting problems through b. It runs in table order, so it may
	// read fields set by entries above it (match sets Kind).
	apply func(b *ruleBuilder, v rawValue)
	// sub are the keys of a kindFields value, each with its kind.
	sub []subField
	// example is a valid value (string, int64, bool, []string,
	// map[string]string, or for kindFields map[string]any, as kind says);
	// tests decode it in every format.
	example any
	// exampleNeeds is the key of a field whose example the example needs
	// beside it (owner needs cdi: true); "" for none.
	exampleNeeds string
}

// Keys that other fields' checks refer to.
const (
	keyMatch       = "match"
	keyName        = "name"
	keySubsystem   = "subsystem"
	keyProperties  = "properties"
	keyAttributes  = "attributes"
	keyClass       = "class"
	keyContainer   = "container_path"
	keyExposeLinks = "expose_links"
	keyCDI         = "cdi"
	defaultPerms   = "rw"
)

// ruleFields lists the fields in the order unknown-key messages name them;
// read-only.
var ruleFields = []ruleField{
	{key: keyMatch, legacy: "devicematch", kind: kindString, required: true, apply: applyMatch, example: "^ttyUSB[0-9]+$"},
	{key: "count", legacy: "nummaxdevices", kind: kindInt, apply: applyCount, example: int64(4),
		dflt: func(r *Rule, legacy bool) {
			// The old daemon registered a resource with no devices when
			// nummaxdevices was missing.
			r.Count = 1
			if legacy {
				r.Count = 0
			}
		}},
	{key: "permissions", kind: kindString, apply: applyPermissions, example: "r",
		dflt: func(r *Rule, _ bool) { r.Permissions = defaultPerms }},
	{key: keyName, kind: kindString, apply: applyName, example: "gps-{ID_SERIAL_SHORT}"},
	{key: "allow_dangerous", kind: kindBool, apply: setBool(func(r *Rule) *bool { return &r.AllowDangerous }), example: true},
	{key: keySubsystem, kind: kindString, apply: applySubsystem, example: "tty"},
	{key: keyProperties, kind: kindStringMap, apply: applyPatterns(checkPropertyName, func(r *Rule) (*map[string]string, *map[string]*regexp.Regexp) { return &r.Properties, &r.propRE }),
		example: map[string]string{"ID_VENDOR_ID": "0403"}},
	{key: keyAttributes, kind: kindStringMap, apply: applyPatterns(checkAttributeName, func(r *Rule) (*map[string]string, *map[string]*regexp.Regexp) { return &r.Attributes, &r.attrRE }),
		example: map[string]string{"idProduct": "6001"}},
	{key: keyContainer, kind: kindString, apply: applyContainerPath, example: "/dev/gps0"},
	{key: keyExposeLinks, kind: kindBool, apply: setBool(func(r *Rule) *bool { return &r.ExposeLinks }), example: true},
	{key: "env", kind: kindStringMap, apply: applyEnv, example: map[string]string{"GPS_BAUD": "9600"}},
	{key: "describe_env", kind: kindBool, apply: setBool(func(r *Rule) *bool { return &r.DescribeEnv }), example: true},
	{key: keyClass, kind: kindString, apply: applyClass, example: "usb-serial"},
	{key: "with", kind: kindStringList, apply: applyWith, example: []string{"nvidiactl", "nvidia-uvm-tools?"}},
	{key: "mounts", kind: kindStringList, apply: applyMounts, example: []string{"/etc/gps:/etc/gps:ro"}},
	{key: keyCDI, kind: kindBool, apply: setBool(func(r *Rule) *bool { return &r.CDI }), example: true},
	// After cdi: it is valid only with cdi: true.
	{key: "owner", kind: kindFields, sub: []subField{{"uid", kindInt}, {"gid", kindInt}, {"mode", kindString}}, apply: applyOwner,
		example: map[string]any{"uid": int64(1000), "gid": int64(1000), "mode": "0660"}, exampleNeeds: keyCDI},
	{key: "evict_on_unplug", kind: kindBool, apply: setBool(func(r *Rule) *bool { return &r.EvictOnUnplug }), example: true},
}

// knownKeys lists the keys a rule may have in legacy or versioned files.
func knownKeys(legacy bool) []string {
	var keys []string
	for i := range ruleFields {
		if k := ruleFields[i].spelling(legacy); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// fieldFor returns the field a key names, or nil for an unknown key.
func fieldFor(key string, legacy bool) *ruleField {
	for i := range ruleFields {
		if f := &ruleFields[i]; key != "" && f.spelling(legacy) == key {
			return f
		}
	}
	return nil
}

// spelling is the field's key in legacy or versioned files; "" if it has
// none there.
func (f *ruleField) spelling(legacy bool) string {
	if legacy {
		return f.legacy
	}
	return f.key
}

func applyMatch(b *ruleBuilder, v rawValue) {
	switch {
	case v.str == "":
		b.bad(v, `must not be empty (".*" matches every device)`)
	case v.str == NvidiaGPUMatch:
		b.r.Match, b.r.Kind = v.str, NvidiaGPURule
	default:
		b.r.Match = v.str
		re, err := regexp.Compile(v.str)
		if err != nil {
			b.bad(v, "invalid regexp: "+strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			return
		}
		b.r.re = re
		if msg := neverNamed(v.str, b.has(keyName) || b.has(keyClass)); msg != "" {
			b.bad(v, msg)
		}
	}
}

func applyCount(b *ruleBuilder, v rawValue) {
	switch {
	case v.num < 0:
		b.bad(v, fmt.Sprintf("must not be negative, got %d", v.num))
	case v.num > MaxCount:
		b.bad(v, fmt.Sprintf("must be at most %d, got %d", MaxCount, v.num))
	default:
		b.r.Count = int(v.num)
	}
}

func applyPermissions(b *ruleBuilder, v rawValue) {
	if msg := checkPermissions(v.str); msg != "" {
		b.bad(v, msg)
		return
	}
	b.r.Permissions = v.str
}

func applyName(b *ruleBuilder, v rawValue) {
	switch n := v.str; {
	case b.r.Kind == NvidiaGPURule:
		b.bad(v, "not allowed with match "+NvidiaGPUMatch+" (GPU resources are named nvidia-gpuN)")
	case strings.ContainsAny(n, "{}"):
		vars, msg := templateVars(n)
		if msg != "" {
			b.bad(v, msg)
			return
		}
		// Checked with each placeholder standing for one letter: the
		// expansion is sanitised and shortened when it is used.
		if err := validNamePart(templateRE.ReplaceAllString(n, "x")); err != nil {
			b.bad(v, "invalid resource name template: "+err.Error())
			return
		}
		b.r.Name, b.r.nameVars = n, vars
	default:
		if err := validNamePart(n); err != nil {
			b.bad(v, "invalid resource name: "+err.Error())
			return
		}
		b.r.Name = n
	}
}

func applyClass(b *ruleBuilder, v rawValue) {
	switch {
	case b.r.Kind == NvidiaGPURule:
		b.bad(v, "not allowed with match "+NvidiaGPUMatch)
	case b.has(keyName):
		b.bad(v, "a rule has a class (one resource for all its devices) or a name, not both")
	default:
		if err := validNamePart(v.str); err != nil {
			b.bad(v, "invalid resource name: "+err.Error())
			return
		}
		b.r.Class = v.str
	}
}

// setBool applies a boolean switch: any value is valid.
func setBool(dst func(r *Rule) *bool) func(*ruleBuilder, rawValue) {
	return func(b *ruleBuilder, v rawValue) { *dst(&b.r) = v.b }
}

func applySubsystem(b *ruleBuilder, v rawValue) {
	re, msg := wholeRegexp(v.str)
	if msg != "" {
		b.bad(v, msg)
		return
	}
	b.r.Subsystem, b.r.subsysRE = v.str, re
}

// applyPatterns applies a mapping of names to whole-string regexps
// (properties, attributes); checkName says why a name is invalid.
func applyPatterns(checkName func(string) string, dst func(r *Rule) (*map[string]string, *map[string]*regexp.Regexp)) func(*ruleBuilder, rawValue) {
	return func(b *ruleBuilder, v rawValue) {
		src, res := dst(&b.r)
		for _, k := range sortedKeys(v.m) {
			if msg := checkName(k); msg != "" {
				b.badIn(v, k, msg)
				continue
			}
			re, msg := wholeRegexp(v.m[k])
			if msg != "" {
				b.badIn(v, k, msg)
				continue
			}
			if *src == nil {
				*src, *res = map[string]string{}, map[string]*regexp.Regexp{}
			}
			(*src)[k], (*res)[k] = v.m[k], re
		}
	}
}

func applyContainerPath(b *ruleBuilder, v rawValue) {
	if !path.IsAbs(v.str) || path.Clean(v.str) != v.str || v.str == "/" {
		b.bad(v, "must be a clean absolute path other than /, e.g. /dev/gps0")
		return
	}
	b.r.ContainerPath = v.str
}

func applyEnv(b *ruleBuilder, v rawValue) {
	for _, k := range sortedKeys(v.m) {
		if !envNameRE.MatchString(k) {
			b.badIn(v, k, "an environment variable name is letters, digits and '_', not starting with a digit")
			continue
		}
		if b.r.Env == nil {
			b.r.Env = map[string]string{}
		}
		b.r.Env[k] = v.m[k]
	}
}

func applyWith(b *ruleBuilder, v rawValue) {
	for _, p := range v.list {
		c := Companion{Path: strings.TrimSuffix(p, "?"), Optional: strings.HasSuffix(p, "?")}
		if !fs.ValidPath(c.Path) || c.Path == "." {
			b.bad(v, fmt.Sprintf("%q is not a path below the device root (nvidiactl, snd/controlC0; a trailing ? makes it optional)", p))
			continue
		}
		b.r.With = append(b.r.With, c)
	}
}

func applyMounts(b *ruleBuilder, v rawValue) {
	for _, spec := range v.list {
		m, msg := parseMount(spec)
		if msg != "" {
			b.bad(v, msg)
			continue
		}
		b.r.Mounts = append(b.r.Mounts, m)
	}
}

// ownerModeRE is what owner's mode may be: octal permission bits, quoted
// (an unquoted 0660 is a YAML integer, decimal or octal by version).
var ownerModeRE = regexp.MustCompile(`^0?[0-7]{3}$`)

func applyOwner(b *ruleBuilder, v rawValue) {
	if !b.r.CDI {
		b.bad(v, "needs cdi: true: the device plugin API cannot set a node's owner or mode, a CDI spec can "+
			"(without CDI, give a non-root pod the node's group, describe_env's _GID, as a supplemental group)")
		return
	}
	if len(v.sub) == 0 {
		b.bad(v, "sets nothing: give uid, gid or mode")
		return
	}
	o := Owner{}
	for _, id := range []struct {
		key string
		dst *uint32
		has *bool
	}{{"uid", &o.UID, &o.HasUID}, {"gid", &o.GID, &o.HasGID}} {
		x, ok := v.sub[id.key]
		if !ok {
			continue
		}
		// runc refuses IDs above MaxInt32 (containerd follows it).
		if x.num < 0 || x.num > math.MaxInt32 {
			b.badIn(v, id.key, fmt.Sprintf("must be between 0 and %d, got %d", math.MaxInt32, x.num))
			continue
		}
		*id.dst, *id.has = uint32(x.num), true
	}
	if m, ok := v.sub["mode"]; ok {
		if !ownerModeRE.MatchString(m.str) {
			b.badIn(v, "mode", fmt.Sprintf(`must be octal permission bits, quoted: "0660", got %q`, m.str))
		} else {
			bits, _ := strconv.ParseUint(m.str, 8, 32)
			o.Mode, o.HasMode = fs.FileMode(bits), true
		}
	}
	b.r.Owner = o
}
