package conf

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every rule example in README.md and docs/*.md parses: documentation that
// a user copies must not fail at start-up. Fragments (rules indented under
// a list) are wrapped in a v1 file; the DaemonSet and pod snippets are not
// rules.
func TestReadmeExamplesParse(t *testing.T) {
	docs, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	checked := map[string]int{}
	for _, file := range append([]string{"../README.md"}, docs...) {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		blocks := regexp.MustCompile("(?s)```(yaml|toml)\n(.*?)```").FindAllStringSubmatch(string(raw), -1)
		for i, b := range blocks {
			lang, text := b[1], b[2]
			name := fmt.Sprintf("%s block %d", filepath.Base(file), i)
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
			checked[filepath.Base(file)]++
			if _, err := Parse(name, []byte(text)); err != nil {
				t.Errorf("%s: example %d does not parse:\n%s\n%v", file, i, text, err)
			}
		}
	}
	if checked["README.md"] < 1 || checked["configuration.md"] < 5 {
		t.Errorf("rule examples found: %v; want README's first rule and the configuration page's", checked)
	}
}
