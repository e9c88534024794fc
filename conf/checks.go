package conf

import (
	"fmt"
	"io/fs"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"
)

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

// sortedKeys gives map keys in a fixed order so messages are deterministic.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
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
