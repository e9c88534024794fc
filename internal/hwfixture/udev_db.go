package hwfixture

import (
	"fmt"
	"slices"
	"strings"
)

// udevEntry is one database entry: E: properties in the order the rules
// set them, S: links.
type udevEntry struct {
	props []string // KEY=VALUE
	links []string
}

func (e *udevEntry) set(k, v string) {
	for i, p := range e.props {
		if strings.HasPrefix(p, k+"=") {
			e.props[i] = k + "=" + v
			return
		}
	}
	e.props = append(e.props, k+"="+v)
}

func (e *udevEntry) get(k string) string {
	for _, p := range e.props {
		if v, ok := strings.CutPrefix(p, k+"="); ok {
			return v
		}
	}
	return ""
}

func (e *udevEntry) link(l string) {
	if !slices.Contains(e.links, l) {
		e.links = append(e.links, l)
	}
}

// usecInitialized is the I: line of every entry: when udev first saw the
// device (CLOCK_MONOTONIC µs); any fixed value will do.
const usecInitialized = "4817202"

// dbName is the node's database file: c<major>:<minor> or b…
func dbName(n *PluggedNode) string {
	kind := "c"
	if n.Block {
		kind = "b"
	}
	return fmt.Sprintf("%s%d:%d", kind, n.Major, n.Minor)
}

// render is the database file as udevd writes it
// (src/libsystemd/sd-device/device-private.c device_update_db): links,
// the initialisation time, properties, then the db version.
func (e *udevEntry) render() []byte {
	var b strings.Builder
	links := slices.Sorted(slices.Values(e.links))
	for _, l := range links {
		b.WriteString("S:" + l + "\n")
	}
	b.WriteString("I:" + usecInitialized + "\n")
	for _, p := range e.props {
		b.WriteString("E:" + p + "\n")
	}
	b.WriteString("V:1\n")
	return []byte(b.String())
}
