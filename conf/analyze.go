package conf

import (
	"fmt"
	"io/fs"
	"regexp/syntax"
	"strings"
	"unicode/utf8"
)

// neverNamed returns why a device rule can never yield a valid resource
// name, or "" when it might. It looks only at what every match must start
// with: a regexp anchored at the start (^) followed by literal text fixes the
// beginning of every matching path, and so of the derived name. Anything
// less certain is let through; Resolve still skips an invalid name with a
// warning. named rules take their name from the rule, so only the
// empty-path check and the check for a path outside the device root
// apply to them.
func neverNamed(src string, named bool) string {
	re, err := syntax.Parse(src, syntax.Perl) // the flags regexp.Compile uses
	if err != nil {
		return "" // Compile reports it
	}
	prefix, anchored, complete := anchoredLiteral(re.Simplify())
	if !anchored {
		return ""
	}
	if prefix == "" {
		if complete {
			return "matches only the empty path, which no device has"
		}
		return ""
	}
	if outsideRoot(prefix, complete) {
		// Matching is on the scan's paths, which are relative and
		// clean: such a rule matches nothing, whatever its author meant.
		return fmt.Sprintf("every matching path starts with %q, which is not a path below the device root; "+
			"match is tested against paths relative to it (ttyUSB0, snd/controlC0), never absolute or with . or ..", prefix)
	}
	if named {
		return ""
	}
	part := sanitize(prefix)
	if !isAlnum(part[0]) {
		return fmt.Sprintf("every matching path starts with %q, giving a resource name that starts with %q; names must start with a letter or digit", prefix, part[:1])
	}
	if n := utf8.RuneCountInString(prefix); n > maxNameLen {
		return fmt.Sprintf("every matching path is at least %d characters long; resource names are at most %d", n, maxNameLen)
	}
	if complete && !isAlnum(part[len(part)-1]) {
		return fmt.Sprintf("matches only %q, giving resource name %q that ends with %q; names must end with a letter or digit", prefix, part, part[len(part)-1:])
	}
	return ""
}

// anchoredLiteral reports whether re only matches at the start of the text
// and, if so, the literal text every match begins with, and whether the
// match must also end right after it (complete).
func anchoredLiteral(re *syntax.Regexp) (prefix string, anchored, complete bool) {
	subs := []*syntax.Regexp{re}
	if re.Op == syntax.OpConcat {
		subs = re.Sub
	}
	i := 0
	for i < len(subs) && subs[i].Op == syntax.OpBeginText {
		i++
	}
	if i == 0 {
		return "", false, false
	}
	var lit []rune
	for ; i < len(subs) && subs[i].Op == syntax.OpLiteral; i++ {
		// Case folding changes letters only, never whether a
		// character is a letter or digit, so the checks still hold.
		lit = append(lit, subs[i].Rune...)
	}
	complete = i < len(subs)
	for ; i < len(subs); i++ {
		complete = complete && subs[i].Op == syntax.OpEndText
	}
	return string(lit), true, complete
}

// outsideRoot reports whether a path that begins with prefix (and is
// exactly prefix when complete) cannot be one below the device root: it is
// absolute, or an element it fixes is empty, "." or "..". The last element
// of an incomplete prefix is not fixed yet (".." may go on as "..x").
func outsideRoot(prefix string, complete bool) bool {
	if strings.HasPrefix(prefix, "/") {
		return true
	}
	fixed := prefix
	if !complete {
		i := strings.LastIndexByte(prefix, '/')
		if i < 0 {
			return false
		}
		fixed = prefix[:i]
	}
	return fixed == "." || !fs.ValidPath(fixed)
}
