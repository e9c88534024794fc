package conf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yamlErrLineRE pulls the line out of a go-yaml syntax error.
var yamlErrLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Keys each YAML rule mapping may have, per format, in the order they are
// listed in messages.
var (
	legacyRuleKeys = []string{keyLegacyMatch, keyLegacyCount}
	v1RuleKeys     = []string{keyMatch, keyCount, keyPermissions, keyName, keyDangerous, keySubsystem, keyProperties, keyAttributes, keyContainer, keyLinks, keyEnv, keyDescribe, keyClass, keyWith, keyMounts, keyCDI}
	v1TopKeys      = []string{keyVersion, "rules"}
)

// decodeYAML decodes one YAML document into raw rules, reporting problems
// to l. The top-level shape picks the format.
func decodeYAML(l *errorList, data []byte) (Format, []rawRule) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			l.add(0, "", "empty file: no rules")
		} else {
			addYAMLError(l, err)
		}
		return FormatYAML, nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		l.add(extra.Line, "", "more than one YAML document; a rule file holds one")
	case !errors.Is(err, io.EOF):
		addYAMLError(l, err)
	}

	root := deref(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = deref(root.Content[0])
	}
	switch root.Kind {
	case yaml.SequenceNode:
		return FormatLegacyYAML, decodeLegacy(l, root)
	case yaml.MappingNode:
		return FormatYAML, decodeV1(l, root)
	case yaml.ScalarNode:
		if root.ShortTag() == "!!null" {
			l.add(root.Line, "", "empty document: no rules")
			return FormatYAML, nil
		}
	}
	l.add(root.Line, "", "top level must be a sequence of rules (legacy format) or a mapping with version and rules, got "+yamlKind(root))
	return FormatYAML, nil
}

// addYAMLError reports a go-yaml syntax error, with its line if it has one.
func addYAMLError(l *errorList, err error) {
	msg := err.Error()
	if m := yamlErrLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		l.add(line, "", "invalid YAML: "+m[2])
		return
	}
	l.add(0, "", "invalid YAML: "+strings.TrimPrefix(msg, "yaml: "))
}

// decodeLegacy decodes the old daemon's top-level sequence.
func decodeLegacy(l *errorList, seq *yaml.Node) []rawRule {
	if len(seq.Content) == 0 {
		l.add(seq.Line, "", "no rules: the list is empty")
		return nil
	}
	return yamlRules(l, seq, "", legacyRuleKeys)
}

// decodeV1 decodes the versioned mapping.
func decodeV1(l *errorList, top *yaml.Node) []rawRule {
	var version, rules *yaml.Node
	for _, kv := range yamlFields(l, top, "", v1TopKeys) {
		switch kv.key {
		case keyVersion:
			version = kv.val
		case "rules":
			rules = kv.val
		}
	}
	switch {
	case version == nil:
		l.add(top.Line, keyVersion, `missing required field; add version: `+supportedVer)
	case version.Kind != yaml.ScalarNode || version.ShortTag() != "!!str" || version.Value != supportedVer:
		l.add(version.Line, keyVersion, fmt.Sprintf("unsupported version %s; the supported version is %q", yamlDescribe(version), supportedVer))
	}
	switch {
	case rules == nil:
		l.add(top.Line, "rules", "missing required field (rules: [] for none)")
		return nil
	case rules.Kind != yaml.SequenceNode:
		l.add(rules.Line, "rules", "must be a sequence of rules, got "+yamlKind(rules))
		return nil
	}
	return yamlRules(l, rules, "rules", v1RuleKeys)
}

// yamlRules decodes each mapping of a rule sequence.
func yamlRules(l *errorList, seq *yaml.Node, path string, keys []string) []rawRule {
	raws := make([]rawRule, 0, len(seq.Content))
	for i, item := range seq.Content {
		item = deref(item)
		p := path + "[" + strconv.Itoa(i) + "]"
		if item.Kind != yaml.MappingNode {
			l.add(item.Line, p, "a rule must be a mapping, got "+yamlKind(item))
			continue
		}
		raw := rawRule{path: p, line: item.Line}
		for _, kv := range yamlFields(l, item, p, keys) {
			field := p + "." + kv.key
			switch kv.key {
			case keyMatch, keyLegacyMatch:
				raw.match = yamlString(l, kv.val, field)
			case keyCount, keyLegacyCount:
				raw.count = yamlInt(l, kv.val, field)
			case keyPermissions:
				raw.perms = yamlString(l, kv.val, field)
			case keyName:
				raw.name = yamlString(l, kv.val, field)
			case keyDangerous:
				raw.dangerous = yamlBool(l, kv.val, field)
			case keySubsystem:
				raw.subsystem = yamlString(l, kv.val, field)
			case keyProperties:
				raw.props = yamlStringMap(l, kv.val, field)
			case keyAttributes:
				raw.attrs = yamlStringMap(l, kv.val, field)
			case keyContainer:
				raw.containerPath = yamlString(l, kv.val, field)
			case keyLinks:
				raw.links = yamlBool(l, kv.val, field)
			case keyEnv:
				raw.env = yamlStringMap(l, kv.val, field)
			case keyDescribe:
				raw.describe = yamlBool(l, kv.val, field)
			case keyClass:
				raw.class = yamlString(l, kv.val, field)
			case keyWith:
				raw.with = yamlStringList(l, kv.val, field)
			case keyMounts:
				raw.mounts = yamlStringList(l, kv.val, field)
			case keyCDI:
				raw.cdi = yamlBool(l, kv.val, field)
			}
		}
		raws = append(raws, raw)
	}
	return raws
}

type yamlField struct {
	key string
	val *yaml.Node
}

// yamlFields returns the known fields of mapping m, reporting unknown,
// duplicate and non-string keys.
func yamlFields(l *errorList, m *yaml.Node, path string, known []string) []yamlField {
	var out []yamlField
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := deref(m.Content[i]), deref(m.Content[i+1])
		field := k.Value
		if path != "" {
			field = path + "." + k.Value
		}
		switch {
		case k.Kind != yaml.ScalarNode:
			l.add(k.Line, path, "a key must be a string, got "+yamlKind(k))
			continue
		case k.ShortTag() == "!!merge":
			l.add(k.Line, field, "merge keys are not supported")
			continue
		case !slices.Contains(known, k.Value):
			l.add(k.Line, field, fmt.Sprintf("unknown field %q (known: %s)", k.Value, strings.Join(known, ", ")))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			l.add(k.Line, field, "duplicate field; first set on line "+strconv.Itoa(first))
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, yamlField{key: k.Value, val: v})
	}
	return out
}

// yamlString type-checks a string field. Only a string scalar is accepted:
// an unquoted 1 or true in a regexp is more likely a mistake.
func yamlString(l *errorList, n *yaml.Node, field string) rawValue {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		l.add(n.Line, field, "must be a string, got "+yamlKind(n))
		return rawValue{bad: true, line: n.Line}
	}
	return rawValue{set: true, line: n.Line, str: n.Value}
}

// yamlStringList type-checks a sequence of strings.
func yamlStringList(l *errorList, n *yaml.Node, field string) rawValue {
	if n.Kind != yaml.SequenceNode {
		l.add(n.Line, field, "must be a list of strings, got "+yamlKind(n))
		return rawValue{bad: true, line: n.Line}
	}
	v := rawValue{set: true, line: n.Line}
	for i, item := range n.Content {
		s := yamlString(l, deref(item), field+"["+strconv.Itoa(i)+"]")
		if s.bad {
			v.bad = true
			continue
		}
		v.list = append(v.list, s.str)
	}
	return v
}

// yamlStringMap type-checks a mapping of names to string values.
func yamlStringMap(l *errorList, n *yaml.Node, field string) rawValue {
	if n.Kind != yaml.MappingNode {
		l.add(n.Line, field, "must be a mapping of names to patterns, got "+yamlKind(n))
		return rawValue{bad: true, line: n.Line}
	}
	v := rawValue{set: true, line: n.Line, m: map[string]string{}}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			l.add(k.Line, field, "a key must be a string, got "+yamlKind(k))
			v.bad = true
			continue
		}
		s := yamlString(l, val, field+"."+k.Value)
		if s.bad {
			v.bad = true
			continue
		}
		if _, dup := v.m[k.Value]; dup {
			l.add(k.Line, field+"."+k.Value, "duplicate key")
			v.bad = true
			continue
		}
		v.m[k.Value] = s.str
	}
	return v
}

// yamlBool type-checks a boolean field.
func yamlBool(l *errorList, n *yaml.Node, field string) rawValue {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		l.add(n.Line, field, "must be true or false, got "+yamlKind(n))
		return rawValue{bad: true, line: n.Line}
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		l.add(n.Line, field, "must be true or false")
		return rawValue{bad: true, line: n.Line}
	}
	return rawValue{set: true, line: n.Line, b: v}
}

// yamlInt type-checks an integer field.
func yamlInt(l *errorList, n *yaml.Node, field string) rawValue {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		l.add(n.Line, field, "must be an integer, got "+yamlKind(n))
		return rawValue{bad: true, line: n.Line}
	}
	var v int64
	if err := n.Decode(&v); err != nil {
		l.add(n.Line, field, fmt.Sprintf("integer %s is out of range", n.Value))
		return rawValue{bad: true, line: n.Line}
	}
	return rawValue{set: true, line: n.Line, num: v}
}

// deref follows an alias to the node it names.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// yamlKind describes a node's type for messages.
func yamlKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return "a string"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		}
		return "a scalar tagged " + n.ShortTag()
	}
	return "nothing"
}

// yamlDescribe shows a scalar's value with its type, else the type.
func yamlDescribe(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return yamlKind(n)
	}
	if n.ShortTag() == "!!str" {
		return strconv.Quote(n.Value)
	}
	return n.Value + " (" + yamlKind(n) + ")"
}
