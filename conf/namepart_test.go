package conf

import (
	"regexp"
	"testing"
)

// isNamePart accepts exactly what Kubernetes' qualified-name regexp does:
// every string of up to 4 characters over an alphabet holding each class
// the expression tells apart (letters, digits, '-', '_', '.', others).
func TestIsNamePartIsTheRegexp(t *testing.T) {
	re := regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	alphabet := []byte("aZ9-_./ é")
	var walk func(s []byte)
	walk = func(s []byte) {
		if got, want := isNamePart(string(s)), re.Match(s); got != want {
			t.Errorf("isNamePart(%q) = %v; the regexp says %v", s, got, want)
		}
		if len(s) == 4 {
			return
		}
		for _, c := range alphabet {
			walk(append(s, c))
		}
	}
	walk(nil)
}
