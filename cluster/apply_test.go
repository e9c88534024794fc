package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// readManifest decodes every object of a multi-document YAML file.
func readManifest(path string) ([]*unstructured.Unstructured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return decodeManifest(b)
}

func decodeManifest(b []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// apply does what `kubectl apply --server-side` does: each object, in the
// file's order, as a server-side apply patch of the field manager kubectl.
func (c *cluster) apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	dc, err := dynamic.NewForConfig(c.rest)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.cs.Discovery()))
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("apply %s %s: %w", gvk.Kind, o.GetName(), err)
		}
		b, err := o.MarshalJSON()
		if err != nil {
			return fmt.Errorf("apply %s %s: %w", gvk.Kind, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dc.Resource(m.Resource)
		if ns := o.GetNamespace(); ns != "" {
			ri = dc.Resource(m.Resource).Namespace(ns)
		}
		force := true
		if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, b, metav1.PatchOptions{FieldManager: "kubectl", Force: &force}); err != nil {
			return fmt.Errorf("apply %s %s: %w", gvk.Kind, o.GetName(), err)
		}
	}
	return nil
}

// forCluster makes the only changes to the shipped manifest a user of
// this machine makes: the image (imported, not pulled: imagePullPolicy
// Never) and, in the rules ConfigMap, one rule for the device the suite
// hot-plugs (zram: the shipped rules name Raspberry Pi and serial
// devices, not a device a test can add and remove).
func forCluster(objs []*unstructured.Unstructured, image, extraRule string) error {
	for _, o := range objs {
		switch o.GetKind() {
		case "DaemonSet":
			cs, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			if err != nil || len(cs) == 0 {
				return fmt.Errorf("DaemonSet %s: no containers", o.GetName())
			}
			for i := range cs {
				ct := cs[i].(map[string]any)
				ct["image"] = image
				ct["imagePullPolicy"] = "Never"
			}
			if err := unstructured.SetNestedSlice(o.Object, cs, "spec", "template", "spec", "containers"); err != nil {
				return fmt.Errorf("DaemonSet %s: %w", o.GetName(), err)
			}
		case "ConfigMap":
			if extraRule == "" {
				continue
			}
			conf, ok, _ := unstructured.NestedString(o.Object, "data", "conf.yaml")
			if !ok {
				continue
			}
			conf = strings.TrimRight(conf, "\n") + "\n" + extraRule
			if err := unstructured.SetNestedField(o.Object, conf, "data", "conf.yaml"); err != nil {
				return fmt.Errorf("ConfigMap %s: %w", o.GetName(), err)
			}
		}
	}
	return nil
}
