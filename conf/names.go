package conf

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Limits from Kubernetes' validation (k8s.io/apimachinery/pkg/util/validation).
const (
	maxNameLen      = 63  // qualified-name name part
	maxSubdomainLen = 253 // DNS-1123 subdomain
	// requestsPrefix is prepended to an extended resource name for its
	// quota name; the apiserver requires that to be a qualified name too.
	requestsPrefix = "requests."
)

var subdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// ValidPrefix reports whether prefix can be the domain part of an extended
// resource name: a DNS-1123 subdomain that is not kubernetes.io or under it,
// and that still is one with "requests." in front (the quota name).
func ValidPrefix(prefix string) error {
	switch {
	case prefix == "":
		return errors.New("resource prefix is empty")
	case len(prefix) > maxSubdomainLen-len(requestsPrefix):
		return fmt.Errorf("resource prefix %q is longer than %d characters", prefix, maxSubdomainLen-len(requestsPrefix))
	case !subdomainRE.MatchString(prefix):
		return fmt.Errorf("resource prefix %q is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')", prefix)
	case strings.HasSuffix(prefix, "kubernetes.io"):
		// Kubernetes treats any name containing "kubernetes.io/" as native.
		return fmt.Errorf("resource prefix %q is reserved for Kubernetes", prefix)
	case strings.HasPrefix(prefix, requestsPrefix):
		return fmt.Errorf("resource prefix %q must not start with %q", prefix, requestsPrefix)
	}
	return nil
}

// ValidResourceName reports whether name is a valid Kubernetes extended
// resource name, "domain/name", as kubelet and the apiserver check it: the
// domain as ValidPrefix, the name part at most 63 characters of letters,
// digits, '-', '_' and '.', beginning and ending with a letter or digit.
func ValidResourceName(name string) error {
	return validResourceName(name, ValidPrefix)
}

// validResourceName is ValidResourceName with the domain checked by
// validDomain: Resolve checks its one prefix once, not once per device.
func validResourceName(name string, validDomain func(string) error) error {
	domain, part, ok := strings.Cut(name, "/")
	if !ok {
		return fmt.Errorf("resource name %q has no domain prefix", name)
	}
	if err := validDomain(domain); err != nil {
		return fmt.Errorf("resource name %q: %w", name, err)
	}
	if err := validNamePart(part); err != nil {
		return fmt.Errorf("resource name %q: %w", name, err)
	}
	return nil
}

// validNamePart checks the part after the slash.
func validNamePart(part string) error {
	switch {
	case part == "":
		return errors.New("name part is empty")
	case len(part) > maxNameLen:
		return fmt.Errorf("name part is longer than %d characters", maxNameLen)
	case !isNamePart(part):
		return fmt.Errorf("name part %q must consist of letters, digits, '-', '_' or '.', and begin and end with a letter or digit", part)
	}
	return nil
}

// sanitize turns a device path into a resource-name part the way the old
// daemon named resources: '/' and every character outside [A-Za-z0-9_-]
// become '_' ("net/tun" → "net_tun").
func sanitize(path string) string {
	if isClean(path) {
		return path // the common case; no allocation
	}
	b := make([]byte, 0, len(path))
	for _, r := range path {
		if r < utf8.RuneSelf && isNameByte(byte(r)) {
			b = append(b, byte(r))
		} else {
			b = append(b, '_')
		}
	}
	return string(b)
}

func isClean(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return false
		}
	}
	return true
}

func isNameByte(c byte) bool {
	return isAlnum(c) || c == '_' || c == '-'
}

// isNamePart reports whether s matches ^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$
// (Kubernetes' qualified name): it runs for every resource of every
// state read, where the regexp was 6% of a reconcile's CPU at 1,000
// resources.
func isNamePart(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || (c == '-' || c == '_' || c == '.') && i > 0 && i < len(s)-1 {
			continue
		}
		return false
	}
	return s != ""
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
