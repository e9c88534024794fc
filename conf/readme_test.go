package conf

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// Every rule example in README.md parses: documentation that a user copies
// must not fail at start-up. Fragments (rules indented under a list) are
// wrapped in a v1 file; the DaemonSet and pod snippets are not rules.
func TestReadmeExamplesParse(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	blocks := regexp.MustCompile("(?s)```(yaml|toml)\n(.*?)```").FindAllStringSubmatch(string(raw), -1)
	checked := 0
	for i, b := range blocks {
		lang, text := b[1], b[2]
		name := "README block " + string(rune('0'+i%10))
		switch {
		case lang == "toml":
			name += ".toml"
		case strings.HasPrefix(text, "version: v1"), strings.HasPrefix(text, "- devicematch"):
			name += ".yaml"
		case strings.HasPrefix(text, "  - match"):
			name += ".yaml"
			text = "version: v1\nrules:\n" + text
		default:
			continue // not a rule file (a pod spec, a DaemonSet)
		}
		checked++
		if _, err := Parse(name, []byte(text)); err != nil {
			t.Errorf("README example %d does not parse:\n%s\n%v", i, text, err)
		}
	}
	if checked < 5 {
		t.Errorf("only %d rule examples found in README.md", checked)
	}
}
