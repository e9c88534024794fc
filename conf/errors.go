package conf

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem found in a rule file.
type Error struct {
	File  string // file name as given to Parse or Load
	Line  int    // 1-based line; 0 when the decoder gives none
	Field string // field path such as "rules[2].count"; empty for the whole file
	Msg   string
}

// Error formats the problem as "file:line: field: msg", leaving out the line
// when it is 0 and the field when it is empty.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one run of Parse or Load.
type Errors []*Error

// Error lists the problems one per line, ordered by file and line.
func (es Errors) Error() string {
	sorted := slices.Clone(es)
	sortErrors(sorted)
	lines := make([]string, len(sorted))
	for i, e := range sorted {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// sortErrors orders by file, then line; stable, so problems on one line keep
// the order in which they were found: type errors in the file's key order,
// then each rule's values in the order of ruleFields, then the checks that
// span fields.
func sortErrors(es Errors) {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
}

// errorList collects the problems of one file.
type errorList struct {
	file string
	errs Errors
}

func (l *errorList) add(line int, field, msg string) {
	l.errs = append(l.errs, &Error{File: l.file, Line: line, Field: field, Msg: msg})
}

// err returns the collected problems sorted, or nil when there are none (a
// nil Errors stored in an error interface would not compare equal to nil).
func (l *errorList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	sortErrors(l.errs)
	return l.errs
}

// unknownField is the message for a key outside the known ones, which it
// lists: decoding is strict, and a misspelt key should not pass unnoticed.
func unknownField(key string, known []string) string {
	return fmt.Sprintf("unknown field %q (known: %s)", key, strings.Join(known, ", "))
}
