package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// TestManifestsDecodeStrictly decodes every object in packaging/kubernetes
// into its Kubernetes API type, strictly: a misspelt or misplaced field
// fails here, not on a user's cluster.
func TestManifestsDecodeStrictly(t *testing.T) {
	files, err := filepath.Glob("../packaging/kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests found: %v", err)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s document %d: %v", file, i, err)
			}
			var obj any
			switch meta.Kind {
			case "Namespace":
				obj = &v1.Namespace{}
			case "ConfigMap":
				obj = &v1.ConfigMap{}
			case "DaemonSet":
				obj = &appsv1.DaemonSet{}
			default:
				t.Fatalf("%s document %d: kind %q has no decoder here; add one", file, i, meta.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s document %d (%s): %v", file, i, meta.Kind, err)
				continue
			}
			// The ConfigMap's rules are checked by conf's own tests
			// (conf/packaging_test.go).
			if ds, ok := obj.(*appsv1.DaemonSet); ok {
				checkDaemonSet(t, file, ds)
			}
		}
	}
}

func checkDaemonSet(t *testing.T, file string, ds *appsv1.DaemonSet) {
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Errorf("%s: hostNetwork must be true: uevents live in the host network namespace", file)
	}
	for _, c := range spec.Containers {
		mem := c.Resources.Limits[v1.ResourceMemory]
		// BENCHMARKS.md: ~23 MiB resident with 100 resources.
		if mem.Cmp(resource.MustParse("32Mi")) < 0 {
			t.Errorf("%s: container %s memory limit %s is below the measured footprint with headroom", file, c.Name, mem.String())
		}
		if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: container %s must set allowPrivilegeEscalation: false", file, c.Name)
		}
	}
}
