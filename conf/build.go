package conf

import (
	"cmp"
	"fmt"
)

// rawRule is one rule as a decoder found it, type-checked but not
// validated.
type rawRule struct {
	path string              // field path of the rule: "rules[0]", "rule[0]", "[0]"
	line int                 // where the rule starts; 0 if unknown
	vals map[string]rawValue // by ruleField.key, whatever the file's spelling
}

// ruleBuilder validates one raw rule into a Rule.
type ruleBuilder struct {
	l      *errorList
	legacy bool // the file spells keys the legacy way
	raw    rawRule
	r      Rule
	ok     bool       // no problem found so far
	cur    *ruleField // the field being applied, named in messages
}

// has reports whether the rule sets the field with this key.
func (b *ruleBuilder) has(key string) bool { return b.raw.vals[key].set }

// bad reports a problem with the current field's value v.
func (b *ruleBuilder) bad(v rawValue, msg string) { b.report(v, b.path(b.cur), msg) }

// badIn reports a problem with entry k of the current field's mapping v.
func (b *ruleBuilder) badIn(v rawValue, k, msg string) { b.report(v, b.path(b.cur)+"."+k, msg) }

// badField reports a problem at the field with this key, as the file spells it.
func (b *ruleBuilder) badField(key, msg string) {
	f := fieldFor(key, false)
	b.report(b.raw.vals[key], b.path(f), msg)
}

func (b *ruleBuilder) report(v rawValue, field, msg string) {
	b.l.add(b.at(v), field, msg)
	b.ok = false
}

// at is the line of v, else of the rule.
func (b *ruleBuilder) at(v rawValue) int { return cmp.Or(v.line, b.raw.line) }

func (b *ruleBuilder) path(f *ruleField) string {
	return b.raw.path + "." + cmp.Or(f.spelling(b.legacy), f.key)
}

// build validates and applies every field in table order, then the checks
// that span fields; ok is false when a problem was reported.
func (b *ruleBuilder) build() (r Rule, ok bool) {
	for i := range ruleFields {
		f := &ruleFields[i]
		b.cur = f
		switch v := b.raw.vals[f.key]; {
		case v.bad: // reported by the decoder
			b.ok = false
		case v.set:
			f.apply(b, v)
		case f.required:
			b.bad(v, "missing required field")
		case f.dflt != nil:
			f.dflt(&b.r, b.legacy)
		}
	}
	if b.r.Kind == NvidiaGPURule {
		if b.r.ContainerPath != "" || b.r.ExposeLinks {
			b.badField(keyMatch, keyContainer+" and "+keyExposeLinks+" do not apply to "+NvidiaGPUMatch)
		}
		if b.has(keySubsystem) || b.has(keyProperties) || b.has(keyAttributes) {
			b.badField(keyMatch, keySubsystem+", "+keyProperties+" and "+keyAttributes+" do not apply to "+NvidiaGPUMatch)
		}
	}
	return b.r, b.ok
}

// buildRules validates the raw rules, fills in defaults and compiles them,
// reporting every problem to l, then drops rules that another one makes
// useless.
func buildRules(l *errorList, format Format, raws []rawRule) []Rule {
	rules := make([]Rule, 0, len(raws))
	byMatch := map[string]int{} // unnamed device rules by match
	byName := map[string]int{}  // named rules by name
	gpuRule := -1
	for _, raw := range raws {
		b := &ruleBuilder{l: l, legacy: format == FormatLegacyYAML, raw: raw, ok: true,
			r: Rule{Pos: Pos{File: l.file, Line: raw.line}}}
		r, ok := b.build()
		if !ok {
			continue // duplicates are only meaningful between valid rules
		}
		switch {
		case r.Kind == NvidiaGPURule:
			if gpuRule >= 0 {
				b.badField(keyMatch, "duplicate "+NvidiaGPUMatch+" rule; the one at "+rules[gpuRule].Pos.String()+" already claims the GPUs")
				continue
			}
			gpuRule = len(rules)
		case r.nameVars != nil:
			// A template's names are told apart at resolution time.
		case r.Class != "":
			if i, dup := byName[r.Class]; dup {
				b.badField(keyClass, fmt.Sprintf("duplicate resource name %q; the rule at %s has it too", r.Class, rules[i].Pos))
				continue
			}
			byName[r.Class] = len(rules)
		case r.Name != "":
			if i, dup := byName[r.Name]; dup {
				b.badField(keyName, fmt.Sprintf("duplicate resource name %q; the rule at %s has it too", r.Name, rules[i].Pos))
				continue
			}
			byName[r.Name] = len(rules)
		default:
			if i, dup := byMatch[r.selector()]; dup {
				b.badField(keyMatch, fmt.Sprintf("duplicate rule: the rule at %s has the same match and no name, and always wins", rules[i].Pos))
				continue
			}
			byMatch[r.selector()] = len(rules)
		}
		rules = append(rules, r)
	}
	return rules
}
