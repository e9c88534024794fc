package conf

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The tests in this file are generated from ruleFields, so that adding a
// field is one entry: once it is in the table, both decoders accept it,
// misspellings and wrong types are reported, and Rule has no field that no
// entry sets.

// yamlValue writes an example value in YAML flow style.
func yamlValue(t *testing.T, v any) string {
	t.Helper()
	return literal(t, v, ": ")
}

// tomlValue writes an example value as a TOML value (an inline table for a
// map).
func tomlValue(t *testing.T, v any) string {
	t.Helper()
	return literal(t, v, " = ")
}

func literal(t *testing.T, v any, sep string) string {
	t.Helper()
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case bool:
		return strconv.FormatBool(v)
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	case map[string]string:
		var q []string
		for _, k := range sortedKeys(v) {
			q = append(q, strconv.Quote(k)+sep+strconv.Quote(v[k]))
		}
		return "{" + strings.Join(q, ", ") + "}"
	case map[string]any:
		var q []string
		for _, k := range sortedKeys(v) {
			q = append(q, strconv.Quote(k)+sep+literal(t, v[k], sep))
		}
		return "{" + strings.Join(q, ", ") + "}"
	}
	t.Fatalf("example %#v has no literal form", v)
	return ""
}

// exampleKind is the kind an example value has.
func exampleKind(v any) valueKind {
	switch v.(type) {
	case string:
		return kindString
	case int64:
		return kindInt
	case bool:
		return kindBool
	case []string:
		return kindStringList
	case map[string]string:
		return kindStringMap
	case map[string]any:
		return kindFields
	}
	return -1
}

// ruleFiles writes one rule holding the fields given (keys and literal
// values per format) as a versioned YAML file and a TOML file; the rule's
// first key is on line 4 of both.
func ruleFiles(t *testing.T, fields []*ruleField, override map[string]string) (yaml, toml string) {
	t.Helper()
	y := "version: v1\nrules:\n  -\n"
	tm := "version = \"v1\"\n\n[[rule]]\n"
	for _, f := range fields {
		yv, tv := yamlValue(t, f.example), tomlValue(t, f.example)
		if o, ok := override[f.key]; ok {
			yv, tv = o, o
		}
		y += "    " + f.key + ": " + yv + "\n"
		tm += f.key + " = " + tv + "\n"
	}
	return y, tm
}

// requiredFields are the entries every rule must have.
func requiredFields() []*ruleField {
	var out []*ruleField
	for i := range ruleFields {
		if ruleFields[i].required {
			out = append(out, &ruleFields[i])
		}
	}
	return out
}

// withField is the required fields, the field f's example needs, and f,
// each once.
func withField(f *ruleField) []*ruleField {
	fields := requiredFields()
	if f.exampleNeeds != "" {
		fields = append(fields, fieldFor(f.exampleNeeds, false))
	}
	if !slices.Contains(fields, f) {
		fields = append(fields, f)
	}
	return fields
}

// exported returns the exported fields of r except Pos, by name.
func exported(r Rule) map[string]any {
	out := map[string]any{}
	v := reflect.ValueOf(r)
	for i := range v.NumField() {
		if sf := v.Type().Field(i); sf.IsExported() && sf.Name != "Pos" {
			out[sf.Name] = v.Field(i).Interface()
		}
	}
	return out
}

// changed lists the exported fields of Rule that differ between a and b.
func changed(a, b Rule) []string {
	ea, eb := exported(a), exported(b)
	var out []string
	for name, va := range ea {
		if !reflect.DeepEqual(va, eb[name]) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func parseOne(t *testing.T, file, data string) Rule {
	t.Helper()
	c, err := Parse(file, []byte(data))
	if err != nil {
		t.Fatalf("%s:\n%s\n%v", file, data, err)
	}
	if len(c.Rules) != 1 {
		t.Fatalf("%s: %d rules, want 1", file, len(c.Rules))
	}
	return c.Rules[0]
}

// TestEveryFieldDecodesInEveryFormat: each entry's example, with the
// required fields, parses from versioned YAML and from TOML to the same
// rule, and it changes the rule (its apply is not a no-op).
func TestEveryFieldDecodesInEveryFormat(t *testing.T) {
	by, bt := ruleFiles(t, requiredFields(), nil)
	base := parseOne(t, "base.yaml", by)
	if got := parseOne(t, "base.toml", bt); !reflect.DeepEqual(exported(got), exported(base)) {
		t.Errorf("required fields: TOML gives %+v, YAML %+v", got, base)
	}
	for i := range ruleFields {
		f := &ruleFields[i]
		t.Run(f.key, func(t *testing.T) {
			if exampleKind(f.example) != f.kind {
				t.Fatalf("example %#v is not of the entry's kind %d", f.example, f.kind)
			}
			y, tm := ruleFiles(t, withField(f), nil)
			ry, rt := parseOne(t, "r.yaml", y), parseOne(t, "r.toml", tm)
			if !reflect.DeepEqual(exported(ry), exported(rt)) {
				t.Errorf("YAML and TOML differ:\n%+v\n%+v", ry, rt)
			}
			if !f.required && len(changed(ry, base)) == 0 {
				t.Errorf("%s: %#v changed no field of Rule", f.key, f.example)
			}
		})
	}
}

// TestLegacyKeysDecodeAsVersioned: a legacy file that sets every field it
// can, by its legacy key, gives the rule a versioned file gives.
func TestLegacyKeysDecodeAsVersioned(t *testing.T) {
	var fields []*ruleField
	legacy := "-"
	for i := range ruleFields {
		if f := &ruleFields[i]; f.legacy != "" {
			fields = append(fields, f)
			legacy += " " + f.legacy + ": " + yamlValue(t, f.example) + "\n "
		}
	}
	if len(fields) == 0 {
		t.Fatal("no field has a legacy key; the legacy format reads devicematch and nummaxdevices")
	}
	y, _ := ruleFiles(t, fields, nil)
	if got, want := parseOne(t, "l.yaml", legacy), parseOne(t, "v.yaml", y); !reflect.DeepEqual(exported(got), exported(want)) {
		t.Errorf("legacy\n%s gives %+v\nversioned gives %+v", legacy, got, want)
	}
}

// TestMisspeltFieldIsUnknown: each key with its last letter dropped is
// reported as unknown, listing the table's keys, in all three formats;
// nothing else is reported but a required field then missing.
func TestMisspeltFieldIsUnknown(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		for i := range ruleFields {
			f := &ruleFields[i]
			key := f.spelling(legacy)
			if key == "" {
				continue
			}
			typo := key[:len(key)-1]
			if fieldFor(typo, legacy) != nil {
				t.Fatalf("%q is a key too; pick another misspelling", typo)
			}
			known := strings.Join(knownKeys(legacy), ", ")
			files := map[string]string{}
			want := map[string]string{}
			if legacy {
				data := "-\n"
				for _, r := range requiredFields() {
					if r != f {
						data += "  " + r.legacy + ": " + yamlValue(t, r.example) + "\n"
					}
				}
				line := strconv.Itoa(strings.Count(data, "\n") + 1)
				files["l.yaml"] = data + "  " + typo + ": " + yamlValue(t, f.example) + "\n"
				want["l.yaml"] = `l.yaml:` + line + `: [0].` + typo + `: unknown field "` + typo + `" (known: ` + known + `)`
			} else {
				y, tm := ruleFiles(t, withField(f), map[string]string{})
				y = strings.Replace(y, "    "+key+":", "    "+typo+":", 1)
				tm = strings.Replace(tm, "\n"+key+" =", "\n"+typo+" =", 1)
				files["r.yaml"], files["r.toml"] = y, tm
				want["r.yaml"] = `r.yaml:` + strconv.Itoa(4+slices.Index(withField(f), f)) + `: rules[0].` + typo + `: unknown field "` + typo + `" (known: ` + known + `)`
				want["r.toml"] = `r.toml:` + strconv.Itoa(4+slices.Index(withField(f), f)) + `: rule[0].` + typo + `: unknown field "` + typo + `" (known: ` + known + `)`
			}
			for file, data := range files {
				_, err := Parse(file, []byte(data))
				if err == nil {
					t.Errorf("%s: %q parsed", file, data)
					continue
				}
				got := errStrings(t, err)
				if !slices.Contains(got, want[file]) {
					t.Errorf("%s: errors %q\nlack %q", file, got, want[file])
				}
				for _, e := range got {
					if e != want[file] && !(f.required && strings.HasSuffix(e, ": missing required field")) {
						t.Errorf("%s: unexpected error %q", file, e)
					}
				}
			}
		}
	}
}

// TestWrongTypeNamedByKind: a value of the wrong type is one error naming
// the field and the type its kind wants, in both decoders.
func TestWrongTypeNamedByKind(t *testing.T) {
	// For each kind, a wrong value and the message each format gives.
	wrong := map[valueKind]struct{ value, yaml, toml string }{
		kindString:     {"7", "must be a string, got an integer", "must be a string, got an integer"},
		kindInt:        {`"7"`, "must be an integer, got a string", "must be an integer, got a string"},
		kindBool:       {`"yes"`, "must be true or false, got a string", "must be true or false, got a string"},
		kindStringList: {`"a"`, "must be a list of strings, got a string", "must be an array of strings, got a string"},
		kindStringMap:  {`"a"`, "must be a mapping of names to patterns, got a string", "must be a table of names to patterns, got a string"},
	}
	for i := range ruleFields {
		f := &ruleFields[i]
		w, ok := wrong[f.kind]
		if f.kind == kindFields {
			w, ok = struct{ value, yaml, toml string }{`"a"`, "must be a mapping of " + subKeys(f.sub) + ", got a string",
				"must be a table of " + subKeys(f.sub) + ", got a string"}, true
		}
		if !ok {
			t.Fatalf("%s: no wrong value for kind %d", f.key, f.kind)
		}
		fields := withField(f)
		line := strconv.Itoa(4 + slices.Index(fields, f))
		y, tm := ruleFiles(t, fields, map[string]string{f.key: w.value})
		for file, tc := range map[string]struct{ data, want string }{
			"r.yaml": {y, "r.yaml:" + line + ": rules[0]." + f.key + ": " + w.yaml},
			"r.toml": {tm, "r.toml:" + line + ": rule[0]." + f.key + ": " + w.toml},
		} {
			_, err := Parse(file, []byte(tc.data))
			if err == nil {
				t.Errorf("%s: %q parsed", file, tc.data)
				continue
			}
			if got := errStrings(t, err); !reflect.DeepEqual(got, []string{tc.want}) {
				t.Errorf("%s: errors %q, want %q", file, got, tc.want)
			}
		}
	}
}

// TestRuleFieldsCoverRule: every exported field of Rule that a file sets
// is set by some entry of ruleFields. Pos is where the rule starts; Kind
// follows from match.
func TestRuleFieldsCoverRule(t *testing.T) {
	by, _ := ruleFiles(t, requiredFields(), nil)
	base := parseOne(t, "base.yaml", by)
	var defaults Rule
	for i := range ruleFields {
		if f := &ruleFields[i]; f.dflt != nil {
			f.dflt(&defaults, false)
		}
	}
	covered := map[string]bool{"Kind": true}
	for _, name := range changed(base, defaults) { // set by the required fields
		covered[name] = true
	}
	for i := range ruleFields {
		f := &ruleFields[i]
		y, _ := ruleFiles(t, withField(f), nil)
		for _, name := range changed(parseOne(t, "r.yaml", y), base) {
			covered[name] = true
		}
	}
	for name := range exported(Rule{}) {
		if !covered[name] {
			t.Errorf("Rule.%s is set by no entry of ruleFields; add one (key, kind, apply, example)", name)
		}
	}
}
