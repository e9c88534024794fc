package conf

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The rule files shipped in packaging/ (ConfigMap data) must load: a broken
// one would stop the daemon at start-up on every node.
func TestPackagedRulesLoad(t *testing.T) {
	files, err := filepath.Glob("../packaging/kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	found := 0
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var obj struct {
				Kind string
				Data map[string]string
			}
			if err := dec.Decode(&obj); err != nil {
				break
			}
			if obj.Kind != "ConfigMap" {
				continue
			}
			for name, rules := range obj.Data {
				found++
				cfg, err := Parse(file+":"+name, []byte(rules))
				if err != nil {
					t.Errorf("%v", err)
					continue
				}
				if name == "conf.yaml" && !sameRules(cfg.Rules, Default().Rules) {
					t.Errorf("%s: %s differs from the embedded default rules", file, name)
				}
			}
		}
	}
	if found == 0 {
		t.Errorf("no ConfigMap rules found in packaging/")
	}
}

func sameRules(a, b []Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Match != b[i].Match || a[i].Count != b[i].Count || a[i].Permissions != b[i].Permissions || a[i].Name != b[i].Name {
			return false
		}
	}
	return true
}

// packaging/rules.toml, installed as /etc/smarter-device-manager/rules.toml
// for the systemd unit, is the embedded default in TOML.
func TestPackagedTOMLRules(t *testing.T) {
	cfg, err := Load("../packaging/rules.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !sameRules(cfg.Rules, Default().Rules) {
		t.Errorf("packaging/rules.toml differs from the embedded default rules")
	}
}
