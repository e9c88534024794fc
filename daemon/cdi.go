package daemon

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/internal/atomicfile"
	"github.com/smarter-project/smarter-device-manager/plugin"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// cdiClassRE is what a CDI kind's class may be (the CDI spec's rule).
var cdiClassRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// cdiKind is the CDI kind of a resource: "<prefix>/<name part>".
func cdiKind(resource string) (string, error) {
	vendor, class, _ := strings.Cut(resource, "/")
	if !cdiClassRE.MatchString(class) {
		return "", fmt.Errorf("resource %q: %q cannot be a CDI class", resource, class)
	}
	return vendor + "/" + class, nil
}

// cdiFile is where a resource's CDI spec lives in dir.
func cdiFile(dir, kind string) string {
	return filepath.Join(dir, strings.ReplaceAll(kind, "/", "-")+".json")
}

// cdiSpec renders a resource as a CDI spec: one CDI device per ID, with
// the nodes, environment and mounts Allocate would have returned for it
// (pluginEdits).
func cdiSpec(kind string, r resource) *cdispec.Spec {
	spec := &cdispec.Spec{Kind: kind}
	for _, u := range r.units {
		specs, envs, mounts := pluginEdits(r, u)
		edits := cdiEdits(specs, envs, mounts, u.content.Owner)
		for _, id := range unitIDs(u.key, r.count) {
			spec.Devices = append(spec.Devices, cdispec.Device{Name: id, ContainerEdits: edits})
		}
	}
	return spec
}

// CDIEdits renders all of a unit's content as CDI container edits: its
// nodes with the owner and mode it gives them, its environment and its
// mounts. (The device plugin's spec leaves a class member's environment
// and mounts out, as its Allocate does: pluginEdits.)
func (c Content) CDIEdits() cdispec.ContainerEdits {
	specs, envs, mounts := pluginEdits(resource{}, unit{content: c})
	return cdiEdits(specs, envs, mounts, c.Owner)
}

// cdiEdits renders what the device plugin hands a container as CDI
// container edits, each node with owner's owner and mode.
func cdiEdits(specs []plugin.DeviceSpec, envs map[string]string, mounts []plugin.Mount, owner conf.Owner) cdispec.ContainerEdits {
	edits := cdispec.ContainerEdits{}
	for _, k := range slices.Sorted(maps.Keys(envs)) {
		edits.Env = append(edits.Env, k+"="+envs[k])
	}
	for _, m := range mounts {
		opts := []string{"bind", "rw"}
		if m.ReadOnly {
			opts = []string{"bind", "ro"}
		}
		edits.Mounts = append(edits.Mounts, &cdispec.Mount{HostPath: m.HostPath, ContainerPath: m.ContainerPath, Options: opts})
	}
	for _, s := range specs {
		edits.DeviceNodes = append(edits.DeviceNodes, ownedNode(&cdispec.DeviceNode{Path: s.ContainerPath, HostPath: s.HostPath, Permissions: s.Permissions}, owner))
	}
	return edits
}

// cdiChanged reports whether r's CDI spec differs from old's; false when r
// has none.
func cdiChanged(old, r resource) bool {
	return r.cdiKind != "" && !reflect.DeepEqual(cdiSpec(old.cdiKind, old), cdiSpec(r.cdiKind, r))
}

// writeCDISpec writes a resource's CDI spec.
func writeCDISpec(dir, kind string, r resource) error {
	return WriteCDISpec(cdiFile(dir, kind), cdiSpec(kind, r))
}

// WriteCDISpec writes spec to file, with the lowest CDI version that can
// hold it, creating the directory. The file is replaced atomically and
// readable by all (0644): runtimes read it when they create a container.
func WriteCDISpec(file string, spec *cdispec.Spec) error {
	version, err := cdispec.MinimumRequiredVersion(spec)
	if err != nil {
		return fmt.Errorf("CDI spec %s: %w", spec.Kind, err)
	}
	spec.Version = version
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return fmt.Errorf("CDI spec %s: %w", spec.Kind, err)
	}
	if err := atomicfile.Write(file, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("CDI spec %s: %w", spec.Kind, err)
	}
	return nil
}

// ownedNode sets the rule's owner and mode on a CDI device node; what the
// rule leaves out stays unset, and the runtime's default holds (runc: the
// host node's mode, owner root).
func ownedNode(n *cdispec.DeviceNode, o conf.Owner) *cdispec.DeviceNode {
	if o.HasUID {
		n.UID = &o.UID
	}
	if o.HasGID {
		n.GID = &o.GID
	}
	if o.HasMode {
		n.FileMode = &o.Mode
	}
	return n
}
