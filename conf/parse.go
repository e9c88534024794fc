package conf

import (
	"cmp"
	_ "embed" // for the default rule set
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Limits that keep a bad file from costing much.
const (
	// MaxCount caps a rule's count (device IDs advertised per resource).
	MaxCount = 10000
	// MaxFileSize caps the size of a rule file in bytes.
	MaxFileSize = 1 << 20
)

// DefaultSource is the Source of the Config that Default returns.
const DefaultSource = "default.yaml"

// defaultYAML is the old daemon's default rule file, unchanged.
//
//go:embed default.yaml
var defaultYAML []byte

// Default returns a fresh copy of the built-in rule set: the old daemon's
// default legacy file. It cannot fail; TestDefault proves the embedded file
// parses.
func Default() *Config {
	c, err := Parse(DefaultSource, defaultYAML)
	if err != nil {
		panic("conf: embedded default rules do not parse: " + err.Error())
	}
	return c
}

// Load reads the rule file at path and parses it with Parse. A read error is
// returned wrapped (errors.Is(err, fs.ErrNotExist) works); problems in the
// content are returned as Errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes, validates and compiles a rule file. file names the file in
// messages and chooses the format: a ".toml" extension means TOML, anything
// else YAML, and a YAML file whose top level is a sequence is the legacy
// format, a mapping the versioned one. On failure the error is Errors,
// holding every problem found.
func Parse(file string, data []byte) (*Config, error) {
	l := &errorList{file: file}
	if len(data) > MaxFileSize {
		l.add(0, "", fmt.Sprintf("file is %d bytes; the limit is %d", len(data), MaxFileSize))
		return nil, l.err()
	}
	var (
		format Format
		raws   []rawRule
	)
	if strings.EqualFold(filepath.Ext(file), ".toml") {
		format, raws = FormatTOML, decodeTOML(l, data)
	} else {
		format, raws = decodeYAML(l, data)
	}
	rules := buildRules(l, format, raws)
	if err := l.err(); err != nil {
		return nil, err
	}
	return &Config{Source: file, Format: format, Rules: rules}, nil
}

// rawValue is one decoded field before validation.
type rawValue struct {
	set  bool              // present with the right type
	bad  bool              // present with the wrong type (already reported)
	line int               // line of the value; 0 if unknown
	str  string            // for string fields
	num  int64             // for integer fields
	b    bool              // for boolean fields
	m    map[string]string // for string-to-string map fields
	list []string          // for string-list fields
}

// rawRule is one rule as a decoder found it, type-checked but not
// validated.
type rawRule struct {
	path                      string // field path of the rule: "rules[0]", "rule[0]", "[0]"
	line                      int    // where the rule starts; 0 if unknown
	match, count, perms, name rawValue
	dangerous                 rawValue
	subsystem, props, attrs   rawValue
	containerPath, links, env rawValue
	describe, class           rawValue
	with, mounts, cdi         rawValue
}

// Field names per format. Legacy files spell match and count the old way.
const (
	keyMatch       = "match"
	keyCount       = "count"
	keyPermissions = "permissions"
	keyName        = "name"
	keyDangerous   = "allow_dangerous"
	keySubsystem   = "subsystem"
	keyProperties  = "properties"
	keyAttributes  = "attributes"
	keyContainer   = "container_path"
	keyLinks       = "expose_links"
	keyEnv         = "env"
	keyDescribe    = "describe_env"
	keyClass       = "class"
	keyWith        = "with"
	keyMounts      = "mounts"
	keyCDI         = "cdi"
	keyLegacyMatch = "devicematch"
	keyLegacyCount = "nummaxdevices"
	keyVersion     = "version"
	supportedVer   = "v1"
	defaultPerms   = "rw"
)

// buildRules validates the raw rules, fills in defaults and compiles them,
// reporting every problem to l.
func buildRules(l *errorList, format Format, raws []rawRule) []Rule {
	matchKey, countKey, defCount := keyMatch, keyCount, 1
	if format == FormatLegacyYAML {
		// The old daemon registered a resource with no devices when
		// nummaxdevices was missing.
		matchKey, countKey, defCount = keyLegacyMatch, keyLegacyCount, 0
	}
	rules := make([]Rule, 0, len(raws))
	byMatch := map[string]int{} // unnamed device rules by match
	byName := map[string]int{}  // named rules by name
	gpuRule := -1
	for _, raw := range raws {
		r := Rule{Pos: Pos{File: l.file, Line: raw.line}, Count: defCount, Permissions: defaultPerms}
		at := func(v rawValue) int { return cmp.Or(v.line, raw.line) }
		field := func(key string) string { return raw.path + "." + key }
		ok := true
		bad := func(v rawValue, key, msg string) {
			l.add(at(v), field(key), msg)
			ok = false
		}

		switch m := raw.match; {
		case m.bad:
			ok = false
		case !m.set:
			bad(m, matchKey, "missing required field")
		case m.str == "":
			bad(m, matchKey, `must not be empty (".*" matches every device)`)
		case m.str == NvidiaGPUMatch:
			r.Match, r.Kind = m.str, NvidiaGPURule
		default:
			r.Match = m.str
			re, err := regexp.Compile(m.str)
			if err != nil {
				bad(m, matchKey, "invalid regexp: "+strings.TrimPrefix(err.Error(), "error parsing regexp: "))
				break
			}
			r.re = re
			if msg := neverNamed(m.str, raw.name.set || raw.class.set); msg != "" {
				bad(m, matchKey, msg)
			}
		}

		switch c := raw.count; {
		case c.bad:
			ok = false
		case !c.set:
		case c.num < 0:
			bad(c, countKey, fmt.Sprintf("must not be negative, got %d", c.num))
		case c.num > MaxCount:
			bad(c, countKey, fmt.Sprintf("must be at most %d, got %d", MaxCount, c.num))
		default:
			r.Count = int(c.num)
		}

		switch p := raw.perms; {
		case p.bad:
			ok = false
		case !p.set:
		default:
			if msg := checkPermissions(p.str); msg != "" {
				bad(p, keyPermissions, msg)
			} else {
				r.Permissions = p.str
			}
		}

		switch n := raw.name; {
		case n.bad:
			ok = false
		case !n.set:
		case r.Kind == NvidiaGPURule:
			bad(n, keyName, "not allowed with match "+NvidiaGPUMatch+" (GPU resources are named nvidia-gpuN)")
		case strings.ContainsAny(n.str, "{}"):
			vars, msg := templateVars(n.str)
			if msg != "" {
				bad(n, keyName, msg)
				break
			}
			// Checked with each placeholder standing for one letter: the
			// expansion is sanitised and shortened when it is used.
			if err := validNamePart(templateRE.ReplaceAllString(n.str, "x")); err != nil {
				bad(n, keyName, "invalid resource name template: "+err.Error())
				break
			}
			r.Name, r.nameVars = n.str, vars
		default:
			if err := validNamePart(n.str); err != nil {
				bad(n, keyName, "invalid resource name: "+err.Error())
			} else {
				r.Name = n.str
			}
		}

		switch c := raw.class; {
		case c.bad:
			ok = false
		case !c.set:
		case r.Kind == NvidiaGPURule:
			bad(c, keyClass, "not allowed with match "+NvidiaGPUMatch)
		case raw.name.set:
			bad(c, keyClass, "a rule has a class (one resource for all its devices) or a name, not both")
		default:
			if err := validNamePart(c.str); err != nil {
				bad(c, keyClass, "invalid resource name: "+err.Error())
			} else {
				r.Class = c.str
			}
		}
		if w := raw.with; w.bad {
			ok = false
		} else if w.set {
			for _, p := range w.list {
				c := Companion{Path: strings.TrimSuffix(p, "?"), Optional: strings.HasSuffix(p, "?")}
				if !fs.ValidPath(c.Path) || c.Path == "." {
					bad(w, keyWith, fmt.Sprintf("%q is not a path below the device root (nvidiactl, snd/controlC0; a trailing ? makes it optional)", p))
					continue
				}
				r.With = append(r.With, c)
			}
		}
		if mt := raw.mounts; mt.bad {
			ok = false
		} else if mt.set {
			for _, spec := range mt.list {
				m, msg := parseMount(spec)
				if msg != "" {
					bad(mt, keyMounts, msg)
					continue
				}
				r.Mounts = append(r.Mounts, m)
			}
		}
		// Boolean switches: a wrong type was reported by the decoder.
		for _, f := range []struct {
			v   rawValue
			dst *bool
		}{{raw.cdi, &r.CDI}, {raw.describe, &r.DescribeEnv}, {raw.links, &r.ExposeLinks}, {raw.dangerous, &r.AllowDangerous}} {
			if f.v.bad {
				ok = false
			} else if f.v.set {
				*f.dst = f.v.b
			}
		}
		if c := raw.containerPath; c.bad {
			ok = false
		} else if c.set {
			if !path.IsAbs(c.str) || path.Clean(c.str) != c.str || c.str == "/" {
				bad(c, keyContainer, "must be a clean absolute path other than /, e.g. /dev/gps0")
			} else {
				r.ContainerPath = c.str
			}
		}
		if e := raw.env; e.bad {
			ok = false
		} else if e.set {
			for _, k := range sortedStringKeys(e.m) {
				if !envNameRE.MatchString(k) {
					bad(e, keyEnv+"."+k, "an environment variable name is letters, digits and '_', not starting with a digit")
					continue
				}
				if r.Env == nil {
					r.Env = map[string]string{}
				}
				r.Env[k] = e.m[k]
			}
		}
		if r.Kind == NvidiaGPURule && (r.ContainerPath != "" || r.ExposeLinks) {
			bad(raw.match, matchKey, "container_path and expose_links do not apply to "+NvidiaGPUMatch)
		}

		identity := raw.subsystem.set || raw.props.set || raw.attrs.set
		if identity && r.Kind == NvidiaGPURule {
			bad(raw.match, matchKey, "subsystem, properties and attributes do not apply to "+NvidiaGPUMatch)
		}
		if s := raw.subsystem; s.bad {
			ok = false
		} else if s.set {
			if re, msg := wholeRegexp(s.str); msg != "" {
				bad(s, keySubsystem, msg)
			} else {
				r.Subsystem, r.subsysRE = s.str, re
			}
		}
		for _, f := range []struct {
			key  string
			v    rawValue
			src  *map[string]string
			dst  *map[string]*regexp.Regexp
			name func(string) string
		}{
			{keyProperties, raw.props, &r.Properties, &r.propRE, checkPropertyName},
			{keyAttributes, raw.attrs, &r.Attributes, &r.attrRE, checkAttributeName},
		} {
			if f.v.bad {
				ok = false
				continue
			}
			for _, k := range sortedStringKeys(f.v.m) {
				if msg := f.name(k); msg != "" {
					bad(f.v, f.key+"."+k, msg)
					continue
				}
				re, msg := wholeRegexp(f.v.m[k])
				if msg != "" {
					bad(f.v, f.key+"."+k, msg)
					continue
				}
				if *f.src == nil {
					*f.src, *f.dst = map[string]string{}, map[string]*regexp.Regexp{}
				}
				(*f.src)[k], (*f.dst)[k] = f.v.m[k], re
			}
		}

		if !ok {
			continue // duplicates are only meaningful between valid rules
		}
		switch {
		case r.Kind == NvidiaGPURule:
			if gpuRule >= 0 {
				l.add(at(raw.match), field(matchKey), "duplicate "+NvidiaGPUMatch+" rule; the one at "+rules[gpuRule].Pos.String()+" already claims the GPUs")
				continue
			}
			gpuRule = len(rules)
		case r.nameVars != nil:
			// A template's names are told apart at resolution time.
		case r.Class != "":
			if i, dup := byName[r.Class]; dup {
				l.add(at(raw.class), field(keyClass), fmt.Sprintf("duplicate resource name %q; the rule at %s has it too", r.Class, rules[i].Pos))
				continue
			}
			byName[r.Class] = len(rules)
		case r.Name != "":
			if i, dup := byName[r.Name]; dup {
				l.add(at(raw.name), field(keyName), fmt.Sprintf("duplicate resource name %q; the rule at %s has it too", r.Name, rules[i].Pos))
				continue
			}
			byName[r.Name] = len(rules)
		default:
			if i, dup := byMatch[r.selector()]; dup {
				l.add(at(raw.match), field(matchKey), fmt.Sprintf("duplicate rule: the rule at %s has the same match and no name, and always wins", rules[i].Pos))
				continue
			}
			byMatch[r.selector()] = len(rules)
		}
		rules = append(rules, r)
	}
	return rules
}

// parseMount reads "HOST:CONTAINER" or "HOST:CONTAINER:ro|rw".
func parseMount(spec string) (Mount, string) {
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Mount{}, fmt.Sprintf("%q is not HOST:CONTAINER[:ro]", spec)
	}
	m := Mount{HostPath: parts[0], ContainerPath: parts[1]}
	for _, p := range []string{m.HostPath, m.ContainerPath} {
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return Mount{}, fmt.Sprintf("%q: %q must be a clean absolute path other than /", spec, p)
		}
	}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return Mount{}, fmt.Sprintf("%q: the mode is ro or rw, not %q", spec, parts[2])
		}
	}
	return m, ""
}

// envNameRE is a portable environment variable name.
var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// templateRE finds the placeholders of a name template: {ID_SERIAL_SHORT}.
var templateRE = regexp.MustCompile(`\{([A-Za-z0-9_]+)\}`)

// templateVars returns the placeholders of a name template, or why it is
// not one.
func templateVars(name string) ([]string, string) {
	if strings.ContainsAny(templateRE.ReplaceAllString(name, ""), "{}") {
		return nil, `a name template's placeholders are {PROPERTY} or {path}, with letters, digits and '_'`
	}
	var vars []string
	for _, m := range templateRE.FindAllStringSubmatch(name, -1) {
		vars = append(vars, m[1])
	}
	return vars, ""
}

// wholeRegexp compiles a regexp that must match a whole value, as udev's
// patterns do: "0403" matches "0403" only, not "04031".
func wholeRegexp(expr string) (*regexp.Regexp, string) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, "invalid regexp: " + strings.TrimPrefix(err.Error(), "error parsing regexp: ")
	}
	return re, ""
}

// checkPropertyName returns why k cannot be a property name, or "".
func checkPropertyName(k string) string {
	if k == "" || strings.ContainsAny(k, "= \t\n") {
		return "a property name must be non-empty, without '=' or spaces"
	}
	return ""
}

// checkAttributeName returns why k cannot name a sysfs attribute below a
// device directory, or "": it must stay inside that directory.
func checkAttributeName(k string) string {
	if !fs.ValidPath(k) || k == "." || slices.Contains(strings.Split(k, "/"), "..") {
		return "an attribute must be a relative path inside the device's directory (e.g. idVendor, power/control)"
	}
	return ""
}

func sortedStringKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkPermissions returns why p is not a valid cgroup device permission
// string (a non-empty subset of "rwm", each at most once), or "".
func checkPermissions(p string) string {
	if p == "" {
		return `must not be empty; use a subset of "rwm"`
	}
	seen := map[rune]bool{}
	for _, c := range p {
		if !strings.ContainsRune("rwm", c) {
			return fmt.Sprintf("%q is not a subset of \"rwm\"", p)
		}
		if seen[c] {
			return fmt.Sprintf("%q repeats %q", p, c)
		}
		seen[c] = true
	}
	return ""
}
