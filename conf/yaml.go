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

// v1TopKeys are the top-level keys of a versioned YAML file.
var v1TopKeys = []string{keyVersion, "rules"}

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
	return yamlRules(l, seq, "", true)
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
	return yamlRules(l, rules, "rules", false)
}

// yamlRules decodes each mapping of a rule sequence, with the keys of
// legacy or versioned files.
func yamlRules(l *errorList, seq *yaml.Node, path string, legacy bool) []rawRule {
	dec := valueDecoder{l: l, list: "a list", mapping: "a mapping"}
	known := knownKeys(legacy)
	raws := make([]rawRule, 0, len(seq.Content))
	for i, item := range seq.Content {
		item = deref(item)
		p := path + "[" + strconv.Itoa(i) + "]"
		if item.Kind != yaml.MappingNode {
			l.add(item.Line, p, "a rule must be a mapping, got "+yamlKind(item))
			continue
		}
		raw := rawRule{path: p, line: item.Line, vals: map[string]rawValue{}}
		for _, kv := range yamlFields(l, item, p, known) {
			f := fieldFor(kv.key, legacy)
			raw.vals[f.key] = dec.decodeField(f, yamlNode{kv.val}, p+"."+kv.key)
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
			l.add(k.Line, field, unknownField(k.Value, known))
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

// yamlNode is a YAML value for the shared type checks. Only a string
// scalar is a string: an unquoted 1 or true in a regexp is more likely a
// mistake.
type yamlNode struct{ n *yaml.Node }

func (y yamlNode) line() int        { return y.n.Line }
func (y yamlNode) typeName() string { return yamlKind(y.n) }

// yamlTags are the tags a scalar of each kind must have.
var yamlTags = map[valueKind]string{kindString: "!!str", kindInt: "!!int", kindBool: "!!bool"}

func (y yamlNode) scalar(k valueKind) (v rawValue, ok bool, msg string) {
	if y.n.Kind != yaml.ScalarNode || y.n.ShortTag() != yamlTags[k] {
		return v, false, ""
	}
	switch k {
	case kindString:
		v.str = y.n.Value
	case kindInt:
		if err := y.n.Decode(&v.num); err != nil {
			return v, true, fmt.Sprintf("integer %s is out of range", y.n.Value)
		}
	case kindBool:
		if err := y.n.Decode(&v.b); err != nil {
			return v, true, "must be true or false"
		}
	}
	return v, true, ""
}

func (y yamlNode) list() ([]node, bool) {
	if y.n.Kind != yaml.SequenceNode {
		return nil, false
	}
	items := make([]node, len(y.n.Content))
	for i, item := range y.n.Content {
		items[i] = yamlNode{deref(item)}
	}
	return items, true
}

// entries lists a mapping's pairs in file order; any scalar is a key.
func (y yamlNode) entries() ([]nodeEntry, bool) {
	if y.n.Kind != yaml.MappingNode {
		return nil, false
	}
	var out []nodeEntry
	for i := 0; i+1 < len(y.n.Content); i += 2 {
		k, v := deref(y.n.Content[i]), deref(y.n.Content[i+1])
		e := nodeEntry{key: k.Value, keyLine: k.Line, val: yamlNode{v}}
		if k.Kind != yaml.ScalarNode {
			e.keyType = yamlKind(k)
		}
		out = append(out, e)
	}
	return out, true
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
