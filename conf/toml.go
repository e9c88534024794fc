package conf

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// tomlTopKeys are the top-level keys of a TOML rule file.
var tomlTopKeys = []string{keyVersion, "rule"}

// decodeTOML decodes a TOML rule file into raw rules, reporting problems to
// l.
func decodeTOML(l *errorList, data []byte) []rawRule {
	var top map[string]any
	if _, err := toml.Decode(string(data), &top); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			l.add(pe.Position.Line, pe.LastKey, "invalid TOML: "+pe.Message)
		} else {
			l.add(0, "", "invalid TOML: "+err.Error())
		}
		return nil
	}
	if len(top) == 0 {
		l.add(0, "", "empty file: no rules")
		return nil
	}
	lines := scanTOML(data)

	for _, k := range sortedKeys(top) {
		if !slices.Contains(tomlTopKeys, k) {
			l.add(lines.top[k], k, unknownField(k, tomlTopKeys))
		}
	}
	switch v, ok := top[keyVersion]; {
	case !ok:
		l.add(0, keyVersion, `missing required field; add version = "`+supportedVer+`"`)
	case v != supportedVer:
		l.add(lines.top[keyVersion], keyVersion, fmt.Sprintf("unsupported version %s; the supported version is %q", tomlDescribe(v), supportedVer))
	}

	var tables []map[string]any
	switch v := top["rule"].(type) {
	case nil:
		l.add(0, "rule", "missing required field: add [[rule]] tables (rule = [] for none)")
		return nil
	case []map[string]any: // [[rule]] tables
		tables = v
		if len(lines.rules) != len(v) {
			lines.rules = nil // the scan disagrees with the decoder: no lines rather than wrong ones
		}
	case []any: // rule = [{...}, ...]
		lines.rules = nil
		for i, e := range v {
			t, ok := e.(map[string]any)
			if !ok {
				l.add(lines.top["rule"], "rule["+strconv.Itoa(i)+"]", "a rule must be a table, got "+tomlKind(e))
				continue
			}
			tables = append(tables, t)
		}
	default:
		l.add(lines.top["rule"], "rule", "must be an array of tables ([[rule]]), got "+tomlKind(v))
		return nil
	}

	dec := valueDecoder{l: l, list: "an array", mapping: "a table"}
	known := knownKeys(false)
	raws := make([]rawRule, 0, len(tables))
	for i, t := range tables {
		var rl tomlRuleLines
		if i < len(lines.rules) {
			rl = lines.rules[i]
		}
		p := "rule[" + strconv.Itoa(i) + "]"
		raw := rawRule{path: p, line: rl.line, vals: map[string]rawValue{}}
		for _, k := range sortedKeys(t) {
			field, line := p+"."+k, rl.keys[k]
			f := fieldFor(k, false)
			if f == nil {
				l.add(cmp.Or(line, rl.line), field, unknownField(k, known))
				continue
			}
			raw.vals[f.key] = dec.decodeField(f, tomlNode{t[k], line}, field)
		}
		raws = append(raws, raw)
	}
	return raws
}

// tomlNode is a decoded TOML value for the shared type checks. The
// decoder keeps no positions, so a value inside an array or table has the
// line of its key.
type tomlNode struct {
	v any
	l int
}

func (t tomlNode) line() int        { return t.l }
func (t tomlNode) typeName() string { return tomlKind(t.v) }

func (t tomlNode) scalar(k valueKind) (v rawValue, ok bool, _ string) {
	switch k {
	case kindString:
		v.str, ok = t.v.(string)
	case kindInt:
		v.num, ok = t.v.(int64)
	case kindBool:
		v.b, ok = t.v.(bool)
	}
	return v, ok, ""
}

func (t tomlNode) list() ([]node, bool) {
	items, ok := t.v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]node, len(items))
	for i, item := range items {
		out[i] = tomlNode{item, t.l}
	}
	return out, true
}

// entries lists a table's keys sorted, so messages are deterministic.
func (t tomlNode) entries() ([]nodeEntry, bool) {
	m, ok := t.v.(map[string]any)
	if !ok {
		return nil, false
	}
	out := make([]nodeEntry, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, nodeEntry{key: k, keyLine: t.l, val: tomlNode{m[k], t.l}})
	}
	return out, true
}

// tomlKind describes a decoded TOML value's type for messages.
func tomlKind(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case []any:
		return "an array"
	case []map[string]any:
		return "an array of tables"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

func tomlDescribe(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%v (%s)", v, tomlKind(v))
}

// tomlLines is where keys and [[rule]] headers sit in a TOML file.
//
// BurntSushi/toml v1.6.0 keeps key positions private (MetaData exposes none,
// and it records one position per dotted key, so every [[rule]] table
// shares one), so a light line scan finds them. The caller trusts the scan
// only when it found as many [[rule]] headers as the decoder found tables;
// otherwise lines are left out (0) rather than guessed.
type tomlLines struct {
	top   map[string]int // top-level key → line
	rules []tomlRuleLines
}

type tomlRuleLines struct {
	line int            // the [[rule]] header
	keys map[string]int // key → line within this table
}

func scanTOML(data []byte) tomlLines {
	out := tomlLines{top: map[string]int{}}
	keys := out.top // where key lines go: top level, a rule, or nowhere (nil)
	inMulti := ""   // closing delimiter of an open multi-line string
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		if inMulti != "" {
			if strings.Count(line, inMulti)%2 == 1 {
				inMulti = ""
			}
			continue
		}
		t := strings.TrimSpace(line)
		switch {
		case t == "" || t[0] == '#':
			continue
		case strings.HasPrefix(t, "[["):
			name, _, _ := strings.Cut(t[2:], "]]")
			keys = nil
			if strings.TrimSpace(name) == "rule" {
				out.rules = append(out.rules, tomlRuleLines{line: n, keys: map[string]int{}})
				keys = out.rules[len(out.rules)-1].keys
			}
			continue
		case t[0] == '[':
			keys = nil
			continue
		}
		k, rest, ok := strings.Cut(t, "=")
		if !ok {
			continue
		}
		if k = strings.TrimSpace(k); keys != nil && isBareKey(k) {
			if _, seen := keys[k]; !seen {
				keys[k] = n
			}
		}
		for _, d := range []string{`"""`, `'''`} {
			if strings.Count(rest, d)%2 == 1 {
				inMulti = d
				break
			}
		}
	}
	return out
}

func isBareKey(k string) bool {
	return k != "" && isClean(k)
}
