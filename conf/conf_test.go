package conf

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// stripped returns the rules without positions and compiled regexps, for
// comparing what different files decode to.
func stripped(rules []Rule) []Rule {
	out := make([]Rule, len(rules))
	for i, r := range rules {
		r.Pos, r.re = Pos{}, nil
		out[i] = r
	}
	return out
}

func mustParse(t *testing.T, file, data string) *Config {
	t.Helper()
	c, err := Parse(file, []byte(data))
	if err != nil {
		t.Fatalf("Parse(%q): %v", file, err)
	}
	return c
}

// errStrings returns each problem of an Errors as its string.
func errStrings(t *testing.T, err error) []string {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %v (%T) is not Errors", err, err)
	}
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Error()
	}
	return out
}

func TestDefault(t *testing.T) {
	c := Default()
	if c.Source != DefaultSource || c.Format != FormatLegacyYAML {
		t.Errorf("Source, Format = %q, %v; want %q, legacy-yaml", c.Source, c.Format, DefaultSource)
	}
	if len(c.Rules) != 14 {
		t.Fatalf("default has %d rules, want 14", len(c.Rules))
	}
	first, last := c.Rules[0], c.Rules[13]
	if first.Match != "^snd$" || first.Count != 20 || first.Permissions != "rw" || first.Pos != (Pos{DefaultSource, 1}) {
		t.Errorf("first default rule = %+v", first)
	}
	if last.Kind != NvidiaGPURule || last.Count != 10 || last.Pos.Line != 27 {
		t.Errorf("last default rule = %+v, want nvidia-gpu with count 10 at line 27", last)
	}
	// Each call is a fresh copy: a caller editing one cannot change another.
	c.Rules[0].Count = 99
	if Default().Rules[0].Count != 20 {
		t.Error("Default returned shared state")
	}
}

func TestFixtureEqualsDefault(t *testing.T) {
	const fixture = "../../shared/fixtures/legacy-conf.yaml"
	if _, err := os.Stat(fixture); err != nil {
		t.Skipf("legacy fixture not available here (%v); CI has it", err)
	}
	c, err := Load(fixture)
	if err != nil {
		t.Fatalf("the old daemon's default file must load unchanged: %v", err)
	}
	if !reflect.DeepEqual(stripped(c.Rules), stripped(Default().Rules)) {
		t.Errorf("fixture rules differ from Default():\n%+v\n%+v", stripped(c.Rules), stripped(Default().Rules))
	}
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name, file, data string
		format           Format
		want             []Rule
	}{{
		name: "legacy, missing nummaxdevices means 0",
		file: "a.yaml", format: FormatLegacyYAML,
		data: "- devicematch: ^ttyUSB[0-9]*$\n  nummaxdevices: 2\n- devicematch: ^rtc0$\n",
		want: []Rule{
			{Match: "^ttyUSB[0-9]*$", Count: 2, Permissions: "rw", Pos: Pos{"a.yaml", 1}},
			{Match: "^rtc0$", Count: 0, Permissions: "rw", Pos: Pos{"a.yaml", 3}},
		},
	}, {
		name: "legacy, .yml and flow style",
		file: "conf.yml", format: FormatLegacyYAML,
		data: "[{devicematch: nvidia-gpu, nummaxdevices: 3}]",
		want: []Rule{{Match: "nvidia-gpu", Kind: NvidiaGPURule, Count: 3, Permissions: "rw", Pos: Pos{"conf.yml", 1}}},
	}, {
		name: "v1 yaml, defaults and all fields",
		file: "b.yaml", format: FormatYAML,
		data: "# rules\nversion: v1\nrules:\n  - match: ^video[0-9]+$\n  - match: ^i2c-1$\n    count: 4\n    permissions: r\n    name: i2c\n  - match: nvidia-gpu\n    count: 0\n    permissions: rwm\n",
		want: []Rule{
			{Match: "^video[0-9]+$", Count: 1, Permissions: "rw", Pos: Pos{"b.yaml", 4}},
			{Match: "^i2c-1$", Count: 4, Permissions: "r", Name: "i2c", Pos: Pos{"b.yaml", 5}},
			{Match: "nvidia-gpu", Kind: NvidiaGPURule, Count: 0, Permissions: "rwm", Pos: Pos{"b.yaml", 9}},
		},
	}, {
		name: "v1 yaml, explicitly empty",
		file: "c.yaml", format: FormatYAML,
		data: "version: v1\nrules: []\n",
		want: []Rule{},
	}, {
		// An alias stands for the value its anchor names.
		name: "v1 yaml, anchors and aliases",
		file: "d.yaml", format: FormatYAML,
		data: "version: v1\nrules:\n  - {match: ^a, count: &n 2, permissions: &p r}\n  - {match: ^b, count: *n, permissions: *p}\n",
		want: []Rule{
			{Match: "^a", Count: 2, Permissions: "r", Pos: Pos{"d.yaml", 3}},
			{Match: "^b", Count: 2, Permissions: "r", Pos: Pos{"d.yaml", 4}},
		},
	}, {
		name: "toml, defaults and all fields",
		file: "e.TOML", format: FormatTOML,
		data: "version = \"v1\"\n\n[[rule]]\nmatch = '^video[0-9]+$'\n\n[[rule]]\nmatch = \"^i2c-1$\"\ncount = 4\npermissions = \"r\"\nname = \"i2c\"\n",
		want: []Rule{
			{Match: "^video[0-9]+$", Count: 1, Permissions: "rw", Pos: Pos{"e.TOML", 3}},
			{Match: "^i2c-1$", Count: 4, Permissions: "r", Name: "i2c", Pos: Pos{"e.TOML", 6}},
		},
	}, {
		name: "toml, explicitly empty",
		file: "f.toml", format: FormatTOML,
		data: "version = \"v1\"\nrule = []\n",
		want: []Rule{},
	}, {
		name: "toml, inline array of tables has no rule lines",
		file: "g.toml", format: FormatTOML,
		data: "version = \"v1\"\nrule = [{match = \"^a\"}]\n",
		want: []Rule{{Match: "^a", Count: 1, Permissions: "rw", Pos: Pos{"g.toml", 0}}},
	}, {
		name: "toml, a header inside a multi-line string does not shift lines",
		file: "h.toml", format: FormatTOML,
		// Every line of the string without its delimiter keeps it
		// open, the first as much as the next.
		data: "version = \"v1\"\n[[rule]]\nmatch = '''\nx\n[[rule]]\ny'''\n[[rule]]\nmatch = \"^b\"\n",
		want: []Rule{
			{Match: "x\n[[rule]]\ny", Count: 1, Permissions: "rw", Pos: Pos{"h.toml", 2}},
			{Match: "^b", Count: 1, Permissions: "rw", Pos: Pos{"h.toml", 7}},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.file, tt.data)
			if c.Format != tt.format || c.Source != tt.file {
				t.Errorf("Format, Source = %v, %q; want %v, %q", c.Format, c.Source, tt.format, tt.file)
			}
			got := make([]Rule, len(c.Rules))
			for i, r := range c.Rules {
				if (r.re != nil) != (r.Kind == DeviceRule) {
					t.Errorf("rule %d: compiled regexp %v for kind %v", i, r.re, r.Kind)
				}
				r.re = nil
				got[i] = r
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("rules:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestFormatsDecodeAlike(t *testing.T) {
	legacy := `
- devicematch: ^snd$
  nummaxdevices: 20
- devicematch: ^ttyUSB[0-9]*$
  nummaxdevices: 1
- devicematch: nvidia-gpu
  nummaxdevices: 10
`
	v1 := `
version: v1
rules:
  - match: ^snd$
    count: 20
  - match: "^ttyUSB[0-9]*$"
  - match: nvidia-gpu
    count: 10
    permissions: rw
`
	toml := `
version = "v1"
[[rule]]
match = "^snd$"
count = 20
[[rule]]
match = '^ttyUSB[0-9]*$'
[[rule]]
match = "nvidia-gpu"
count = 10
`
	want := stripped(mustParse(t, "legacy.yaml", legacy).Rules)
	for file, data := range map[string]string{"v1.yaml": v1, "rules.toml": toml} {
		if got := stripped(mustParse(t, file, data).Rules); !reflect.DeepEqual(got, want) {
			t.Errorf("%s decodes to\n%+v\nlegacy to\n%+v", file, got, want)
		}
	}

	// Fields legacy files cannot express: v1 YAML and TOML still agree.
	y := "version: v1\nrules:\n- {match: ^gpiochip0$, count: 3, permissions: r, name: gpio}\n"
	tm := "version = \"v1\"\n[[rule]]\nmatch = \"^gpiochip0$\"\ncount = 3\npermissions = \"r\"\nname = \"gpio\"\n"
	if a, b := stripped(mustParse(t, "x.yaml", y).Rules), stripped(mustParse(t, "x.toml", tm).Rules); !reflect.DeepEqual(a, b) {
		t.Errorf("yaml %+v != toml %+v", a, b)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, file, data string
		want             []string
	}{
		{"empty yaml", "a.yaml", "", []string{"a.yaml: empty file: no rules"}},
		{"comments only", "a.yaml", "# nothing\n", []string{"a.yaml: empty file: no rules"}},
		{"null document", "a.yaml", "~\n", []string{"a.yaml:1: empty document: no rules"}},
		{"empty toml", "a.toml", "# nothing\n", []string{"a.toml: empty file: no rules"}},
		{"empty legacy list", "a.yaml", "[]\n", []string{"a.yaml:1: no rules: the list is empty"}},
		{"scalar top level", "a.yaml", "hello\n", []string{"a.yaml:1: top level must be a sequence of rules (legacy format) or a mapping with version and rules, got a string"}},
		{"yaml syntax", "a.yaml", "- devicematch: [\n", []string{"a.yaml:1: invalid YAML: did not find expected node content"}},
		{"two documents", "a.yaml", "- devicematch: a\n---\n- devicematch: b\n", []string{"a.yaml:2: more than one YAML document; a rule file holds one"}},
		{"toml syntax", "a.toml", "version = \"v1\"\nrule = [\n", []string{`a.toml:2: rule: invalid TOML: unexpected EOF; expected value`}},
		{"toml by extension, yaml content", "a.toml", "- devicematch: x\n", []string{`a.toml:1: invalid TOML: expected '.' or '=', but got 'd' instead`}},
		{
			"legacy: unknown key, missing and wrong fields", "a.yaml",
			"- devicematch: ^a$\n  nummaxdevice: 3\n- nummaxdevices: '3'\n- devicematch: 12\n",
			[]string{
				`a.yaml:2: [0].nummaxdevice: unknown field "nummaxdevice" (known: devicematch, nummaxdevices)`,
				`a.yaml:3: [1].nummaxdevices: must be an integer, got a string`,
				`a.yaml:3: [1].devicematch: missing required field`,
				`a.yaml:4: [2].devicematch: must be a string, got an integer`,
			},
		},
		{
			"legacy: v1 field names are unknown", "a.yaml", "- match: ^a$\n",
			[]string{
				`a.yaml:1: [0].match: unknown field "match" (known: devicematch, nummaxdevices)`,
				`a.yaml:1: [0].devicematch: missing required field`,
			},
		},
		{
			"legacy: rule not a mapping", "a.yaml", "- ^a$\n- [x]\n",
			[]string{"a.yaml:1: [0]: a rule must be a mapping, got a string", "a.yaml:2: [1]: a rule must be a mapping, got a sequence"},
		},
		{
			"v1: missing version and rules", "a.yaml", "rule: []\n",
			[]string{
				`a.yaml:1: rule: unknown field "rule" (known: version, rules)`,
				`a.yaml:1: version: missing required field; add version: v1`,
				`a.yaml:1: rules: missing required field (rules: [] for none)`,
			},
		},
		{"v1: unknown version", "a.yaml", "version: v2\nrules: []\n", []string{`a.yaml:1: version: unsupported version "v2"; the supported version is "v1"`}},
		{"v1: numeric version", "a.yaml", "version: 1\nrules: []\n", []string{`a.yaml:1: version: unsupported version 1 (an integer); the supported version is "v1"`}},
		{"v1: count beyond int64", "a.yaml", "version: v1\nrules:\n- {match: ^a, count: 9223372036854775808}\n", []string{`a.yaml:3: rules[0].count: integer 9223372036854775808 is out of range`}},
		{"v1: rules null", "a.yaml", "version: v1\nrules:\n", []string{`a.yaml:2: rules: must be a sequence of rules, got null`}},
		{"v1: duplicate key", "a.yaml", "version: v1\nrules:\n- match: ^a\n  match: ^b\n", []string{`a.yaml:4: rules[0].match: duplicate field; first set on line 3`}},
		{"v1: merge key", "a.yaml", "version: v1\nrules:\n- <<: {count: 2}\n  match: ^a\n", []string{`a.yaml:3: rules[0].<<: merge keys are not supported`}},
		{
			// One run reports every problem, across rules and fields.
			"v1: bad values", "a.yaml",
			"version: v1\nrules:\n- match: '[a'\n  count: -1\n  permissions: rx\n  name: _x\n- match: ''\n  count: 10001\n  permissions: ''\n- match: ^a\n  count: 99999999999999999999\n  permissions: rr\n",
			[]string{
				"a.yaml:3: rules[0].match: invalid regexp: missing closing ]: `[a`",
				"a.yaml:4: rules[0].count: must not be negative, got -1",
				`a.yaml:5: rules[0].permissions: "rx" is not a subset of "rwm"`,
				`a.yaml:6: rules[0].name: invalid resource name: name part "_x" must consist of letters, digits, '-', '_' or '.', and begin and end with a letter or digit`,
				`a.yaml:7: rules[1].match: must not be empty (".*" matches every device)`,
				`a.yaml:8: rules[1].count: must be at most 10000, got 10001`,
				`a.yaml:9: rules[1].permissions: must not be empty; use a subset of "rwm"`,
				`a.yaml:11: rules[2].count: must be an integer, got a number`,
				`a.yaml:12: rules[2].permissions: "rr" repeats 'r'`,
			},
		},
		{
			"v1: rules that never give a valid name", "a.yaml",
			"version: v1\nrules:\n- match: ^_x\n- match: ^-\n- match: ^$\n- match: ^/dev\n- match: ^tty_$\n- match: ^" + strings.Repeat("a", 64) + "\n- {match: ^_x, name: ok}\n- {match: '\\A\\z', name: ok2}\n",
			[]string{
				`a.yaml:3: rules[0].match: every matching path starts with "_x", giving a resource name that starts with "_"; names must start with a letter or digit`,
				`a.yaml:4: rules[1].match: every matching path starts with "-", giving a resource name that starts with "-"; names must start with a letter or digit`,
				`a.yaml:5: rules[2].match: matches only the empty path, which no device has`,
				`a.yaml:6: rules[3].match: every matching path starts with "/dev", which is not a path below the device root; match is tested against paths relative to it (ttyUSB0, snd/controlC0), never absolute or with . or ..`,
				`a.yaml:7: rules[4].match: matches only "tty_", giving resource name "tty_" that ends with "_"; names must end with a letter or digit`,
				`a.yaml:8: rules[5].match: every matching path is at least 64 characters long; resource names are at most 63`,
				`a.yaml:10: rules[7].match: matches only the empty path, which no device has`,
			},
		},
		{
			"duplicates", "a.yaml",
			"version: v1\nrules:\n- match: ^a\n- match: ^a\n- {match: ^a, name: x}\n- {match: ^b, name: x}\n- match: nvidia-gpu\n- match: nvidia-gpu\n- {match: nvidia-gpu, name: g}\n",
			[]string{
				`a.yaml:4: rules[1].match: duplicate rule: the rule at a.yaml:3 has the same match and no name, and always wins`,
				`a.yaml:6: rules[3].name: duplicate resource name "x"; the rule at a.yaml:5 has it too`,
				`a.yaml:8: rules[5].match: duplicate nvidia-gpu rule; the one at a.yaml:7 already claims the GPUs`,
				`a.yaml:9: rules[6].name: not allowed with match nvidia-gpu (GPU resources are named nvidia-gpuN)`,
			},
		},
		{
			"toml: every kind of problem", "r.toml",
			"version = \"v2\"\nextra = 1\n\n[[rule]]\nmatch = \"[\"\ncount = 1.5\nperms = \"r\"\n\n[[rule]]\ncount = -2\npermissions = 7\n",
			[]string{
				`r.toml:1: version: unsupported version "v2"; the supported version is "v1"`,
				`r.toml:2: extra: unknown field "extra" (known: version, rule)`,
				"r.toml:5: rule[0].match: invalid regexp: missing closing ]: `[`",
				`r.toml:6: rule[0].count: must be an integer, got a number`,
				`r.toml:7: rule[0].perms: unknown field "perms" (known: match, count, permissions, name, allow_dangerous, subsystem, properties, attributes, container_path, expose_links, env, describe_env, class, with, mounts, cdi, owner, evict_on_unplug)`,
				`r.toml:9: rule[1].match: missing required field`,
				`r.toml:10: rule[1].count: must not be negative, got -2`,
				`r.toml:11: rule[1].permissions: must be a string, got an integer`,
			},
		},
		{
			"toml: missing version and rules, single table", "r.toml", "[rule]\nmatch = \"^a\"\n",
			[]string{
				`r.toml: version: missing required field; add version = "v1"`,
				`r.toml: rule: must be an array of tables ([[rule]]), got a table`,
			},
		},
		{
			// The first rule (index 0) claims the GPUs as much as any.
			"duplicate nvidia-gpu rule after the first rule", "a.yaml",
			"version: v1\nrules:\n- match: nvidia-gpu\n- match: nvidia-gpu\n",
			[]string{`a.yaml:4: rules[1].match: duplicate nvidia-gpu rule; the one at a.yaml:3 already claims the GPUs`},
		},
		{"toml: no rules", "r.toml", "version = \"v1\"\n", []string{`r.toml: rule: missing required field: add [[rule]] tables (rule = [] for none)`}},
		{"toml: inline non-table", "r.toml", "version = \"v1\"\nrule = [1]\n", []string{`r.toml:2: rule[0]: a rule must be a table, got an integer`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(tt.file, []byte(tt.data))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v; want errors", c.Rules)
			}
			if c != nil {
				t.Errorf("Parse returned a Config with an error")
			}
			got := errStrings(t, err)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n got %q\nwant %q", got, tt.want)
			}
			if err.Error() != strings.Join(tt.want, "\n") {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	_, err := Parse("big.yaml", make([]byte, MaxFileSize+1))
	if got := errStrings(t, err); len(got) != 1 || !strings.Contains(got[0], "the limit is 1048576") {
		t.Errorf("errors = %q", got)
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "f.yaml", Line: 3, Field: "rules[0].count", Msg: "bad"}, "f.yaml:3: rules[0].count: bad"},
		{Error{File: "f.toml", Field: "version", Msg: "bad"}, "f.toml: version: bad"},
		{Error{File: "f.yaml", Line: 2, Msg: "bad"}, "f.yaml:2: bad"},
		{Error{Msg: "bad"}, "bad"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
	es := Errors{{File: "f", Line: 9, Msg: "late"}, {File: "f", Msg: "no line"}, {File: "f", Line: 2, Msg: "early"}}
	if got, want := es.Error(), "f: no line\nf:2: early\nf:9: late"; got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "rules.toml")
	if err := os.WriteFile(good, []byte("version = \"v1\"\n[[rule]]\nmatch = \"^ttyUSB[0-9]+$\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(good)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Source != good || c.Format != FormatTOML || c.Rules[0].Pos != (Pos{good, 2}) {
		t.Errorf("Load = %+v", c)
	}

	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v; want fs.ErrNotExist", err)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("- devicematch: ^a\n  nummaxdevices: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].File != bad || es[0].Line != 2 || es[0].Field != "[0].nummaxdevices" {
		t.Errorf("Load(bad) = %#v", err)
	}
}

func TestRuleFor(t *testing.T) {
	c := mustParse(t, "a.yaml", "version: v1\nrules:\n- match: nvidia-gpu\n- match: ^tty\n- match: ^ttyUSB\n- match: ^net/\n")
	tests := []struct {
		path string
		want int
	}{
		{"ttyUSB0", 1},
		{"net/tun", 3},
		{"nvidia-gpu", -1}, // the special match is not a regexp
		{"video0", -1},
	}
	for _, tt := range tests {
		if got := c.RuleFor(tt.path); got != tt.want {
			t.Errorf("RuleFor(%q) = %d, want %d", tt.path, got, tt.want)
		}
	}
	var r Rule // built by hand, never compiled
	if r.MatchPath("") {
		t.Error("an uncompiled Rule matched")
	}
}

func TestAllowDangerous(t *testing.T) {
	for _, tc := range []struct{ file, text string }{
		{"r.yaml", "version: v1\nrules:\n  - match: ^mem$\n    allow_dangerous: true\n  - match: ^null$\n"},
		{"r.toml", "version = \"v1\"\n[[rule]]\nmatch = \"^mem$\"\nallow_dangerous = true\n[[rule]]\nmatch = \"^null$\"\n"},
	} {
		cfg, err := Parse(tc.file, []byte(tc.text))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if !cfg.Rules[0].AllowDangerous || cfg.Rules[1].AllowDangerous {
			t.Errorf("%s: allow_dangerous = %v, %v; want true, false (the default)", tc.file, cfg.Rules[0].AllowDangerous, cfg.Rules[1].AllowDangerous)
		}
	}
	_, err := Parse("r.yaml", []byte("version: v1\nrules:\n  - match: ^mem$\n    allow_dangerous: yes please\n"))
	if want := "r.yaml:4: rules[0].allow_dangerous: must be true or false, got a string"; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}
