package conf

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

var yamlSeeds = []string{
	"- devicematch: ^snd$\n  nummaxdevices: 20\n- devicematch: nvidia-gpu\n  nummaxdevices: 10\n",
	"version: v1\nrules:\n  - match: ^i2c-1$\n    count: 4\n    permissions: r\n    name: i2c\n",
	"version: v1\nrules: []\n",
	"version: v1\nrules:\n- &r {match: ^a}\n- *r\n",
	"- {devicematch: '[', nummaxdevices: -1, x: 1}\n",
	"version: v2\nrules:\n- <<: {count: 2}\n",
	"---\n- devicematch: a\n---\n",
	"~\n",
	"",
}

var tomlSeeds = []string{
	"version = \"v1\"\n[[rule]]\nmatch = \"^snd$\"\ncount = 20\n[[rule]]\nmatch = \"nvidia-gpu\"\n",
	"version = \"v1\"\nrule = []\n",
	"version = \"v1\"\nrule = [{match = \"^a\", name = \"x\"}, 1]\n",
	"version = \"v1\"\n[[rule]]\nmatch = '''\n[[rule]]\n'''\ncount = 1.5\n",
	"[rule]\nmatch = 1\n",
	"",
}

// fuzzDevices exercise Resolve on whatever a fuzzed file parsed to.
var fuzzDevices = []Device{
	{Path: "snd", Dir: true}, {Path: "ttyUSB0"}, {Path: "net/tun"}, {Path: "a"},
	{Path: "_x"}, {Path: "x_"}, {Path: "video0"}, {Path: "i2c-1"}, {Path: ""},
}

func FuzzParseYAML(f *testing.F) {
	f.Add(defaultYAML)
	for _, s := range yamlSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, "f.yaml", data) })
}

func FuzzParseTOML(f *testing.F) {
	for _, s := range tomlSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, "f.toml", data) })
}

// checkParse asserts the contract of Parse on any input: it does not panic;
// a failure is a non-empty, sorted Errors naming the file; a success holds
// only valid, compiled, distinct rules, and Resolve on it yields only valid,
// distinct, sorted names.
func checkParse(t *testing.T, file string, data []byte) {
	c, err := Parse(file, data)
	if err != nil {
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error %v (%T) is not a non-empty Errors", err, err)
		}
		for i, e := range es {
			if e.File != file || e.Msg == "" || e.Line < 0 || (i > 0 && e.Line < es[i-1].Line) {
				t.Fatalf("bad or unsorted error %d: %#v", i, e)
			}
		}
		return
	}
	names := map[string]bool{}
	matches := map[string]bool{}
	gpuRules := 0
	for i, r := range c.Rules {
		switch {
		case r.Kind == NvidiaGPURule:
			gpuRules++
			if r.Match != NvidiaGPUMatch || r.re != nil || r.Name != "" {
				t.Fatalf("rule %d: bad GPU rule %+v", i, r)
			}
		case r.Kind != DeviceRule || r.re == nil || r.re.String() != r.Match || r.Match == "":
			t.Fatalf("rule %d: bad device rule %+v", i, r)
		case r.Name != "":
			if names[r.Name] || validNamePart(r.Name) != nil {
				t.Fatalf("rule %d: bad or duplicate name %q", i, r.Name)
			}
			names[r.Name] = true
		default:
			if matches[r.Match] {
				t.Fatalf("rule %d: duplicate match %q", i, r.Match)
			}
			matches[r.Match] = true
		}
		if r.Count < 0 || r.Count > MaxCount || checkPermissions(r.Permissions) != "" || r.Pos.File != file {
			t.Fatalf("rule %d: bad fields %+v", i, r)
		}
	}
	if gpuRules > 1 {
		t.Fatalf("%d nvidia-gpu rules", gpuRules)
	}
	res, _ := c.Resolve("smarter-devices", fuzzDevices, []string{"0", "1"})
	seen := map[string]bool{}
	for _, r := range res {
		if err := ValidResourceName(r.Name); err != nil || seen[r.Name] {
			t.Fatalf("Resolve gave a bad or duplicate resource %+v: %v", r, err)
		}
		seen[r.Name] = true
	}
	if !slices.IsSortedFunc(res, func(a, b Resource) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatalf("Resolve output not sorted: %+v", res)
	}
}
