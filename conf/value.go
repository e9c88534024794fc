package conf

import (
	"slices"
	"strconv"
	"strings"
)

// valueKind is the type of a rule field's value. Both decoders check it
// with the same code (valueDecoder.decode) and the same messages.
type valueKind int

const (
	kindString     valueKind = iota // a string (never an unquoted 1 or true)
	kindInt                         // an integer
	kindBool                        // true or false
	kindStringList                  // a list of strings
	kindStringMap                   // names to strings
	kindFields                      // a mapping of the field's own keys (ruleField.sub), each of its kind
)

// subField is one key of a kindFields value: owner's uid, gid and mode.
type subField struct {
	key  string
	kind valueKind // a scalar kind
}

// rawValue is one decoded field, type-checked but not validated.
type rawValue struct {
	set  bool                // present with the right type
	bad  bool                // present with the wrong type (already reported)
	line int                 // line of the value; 0 if unknown
	str  string              // kindString
	num  int64               // kindInt
	b    bool                // kindBool
	list []string            // kindStringList
	m    map[string]string   // kindStringMap
	sub  map[string]rawValue // kindFields: the keys present, each type-checked
}

// node is a value as a decoder found it: a YAML node, a decoded TOML value.
type node interface {
	line() int
	// typeName is the value's type in messages: "a string", "an integer".
	typeName() string
	// scalar reads a kindString, kindInt or kindBool value into the
	// matching field of v; ok is false for another type, and msg, when
	// not empty, says why a value of the right type cannot be held.
	scalar(k valueKind) (v rawValue, ok bool, msg string)
	list() ([]node, bool)
	// entries lists a mapping's keys and values in the order messages
	// should follow.
	entries() ([]nodeEntry, bool)
}

// nodeEntry is one key and value of a mapping node.
type nodeEntry struct {
	key     string
	keyLine int
	keyType string // the key's type when it is not a scalar; "" when it is
	val     node
}

// valueDecoder type-checks nodes of one format, reporting to l. list and
// mapping are the format's words for its sequence and mapping types.
type valueDecoder struct {
	l             *errorList
	list, mapping string // "a list", "a mapping" (YAML); "an array", "a table" (TOML)
}

// decodeField type-checks n as the value of rule field f; path names it in
// messages.
func (d valueDecoder) decodeField(f *ruleField, n node, path string) rawValue {
	if f.kind != kindFields {
		return d.decode(f.kind, n, path)
	}
	entries, ok := n.entries()
	if !ok {
		d.l.add(n.line(), path, "must be "+d.mapping+" of "+subKeys(f.sub)+", got "+n.typeName())
		return rawValue{bad: true, line: n.line()}
	}
	out := rawValue{set: true, line: n.line(), sub: map[string]rawValue{}}
	for _, e := range entries {
		i := slices.IndexFunc(f.sub, func(s subField) bool { return s.key == e.key })
		switch {
		case e.keyType != "":
			d.l.add(e.keyLine, path, "a key must be a string, got "+e.keyType)
		case i < 0:
			d.l.add(e.keyLine, path+"."+e.key, unknownField(e.key, strings.Split(subKeys(f.sub), ", ")))
		default:
			if _, dup := out.sub[e.key]; dup {
				d.l.add(e.keyLine, path+"."+e.key, "duplicate key")
				break
			}
			if v := d.decode(f.sub[i].kind, e.val, path+"."+e.key); !v.bad {
				out.sub[e.key] = v
				continue
			}
		}
		out.bad = true
	}
	return out
}

// subKeys lists a kindFields field's keys for messages: "uid, gid, mode".
func subKeys(sub []subField) string {
	keys := make([]string, len(sub))
	for i, s := range sub {
		keys[i] = s.key
	}
	return strings.Join(keys, ", ")
}

// decode type-checks n as a value of kind k; field names it in messages.
func (d valueDecoder) decode(k valueKind, n node, field string) rawValue {
	line := n.line()
	fail := func(msg string) rawValue {
		d.l.add(line, field, msg)
		return rawValue{bad: true, line: line}
	}
	got := ", got " + n.typeName()
	switch k {
	case kindString, kindInt, kindBool:
		v, ok, msg := n.scalar(k)
		switch {
		case !ok:
			return fail("must be " + scalarWant[k] + got)
		case msg != "":
			return fail(msg)
		}
		v.set, v.line = true, line
		return v
	case kindStringList:
		items, ok := n.list()
		if !ok {
			return fail("must be " + d.list + " of strings" + got)
		}
		out := rawValue{set: true, line: line}
		for i, item := range items {
			s := d.decode(kindString, item, field+"["+strconv.Itoa(i)+"]")
			if s.bad {
				out.bad = true
				continue
			}
			out.list = append(out.list, s.str)
		}
		return out
	case kindStringMap:
		entries, ok := n.entries()
		if !ok {
			return fail("must be " + d.mapping + " of names to patterns" + got)
		}
		out := rawValue{set: true, line: line, m: map[string]string{}}
		for _, e := range entries {
			if e.keyType != "" {
				d.l.add(e.keyLine, field, "a key must be a string, got "+e.keyType)
				out.bad = true
				continue
			}
			s := d.decode(kindString, e.val, field+"."+e.key)
			if s.bad {
				out.bad = true
				continue
			}
			if _, dup := out.m[e.key]; dup {
				d.l.add(e.keyLine, field+"."+e.key, "duplicate key")
				out.bad = true
				continue
			}
			out.m[e.key] = s.str
		}
		return out
	}
	panic("conf: unknown value kind " + strconv.Itoa(int(k)))
}

// scalarWant names each scalar kind in "must be …" messages.
var scalarWant = [...]string{kindString: "a string", kindInt: "an integer", kindBool: "true or false"}
