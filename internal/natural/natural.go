// Package natural orders strings the way people number things: runs of
// digits compare as numbers, so "ttyUSB2" sorts before "ttyUSB10" and
// "gpu.9" before "gpu.10". Used by the plugin (preferred device IDs) and
// hotplug (GPU numbers).
package natural

import (
	"cmp"
	"strings"
)

// Compare orders a and b with runs of digits compared as numbers of any
// length. Ties (leading zeros: "01" and "1") fall back to byte order, so
// the order is total and Compare returns 0 only for equal strings.
func Compare(a, b string) int {
	x, y := a, b
	for x != "" && y != "" {
		if isDigit(x[0]) && isDigit(y[0]) {
			nx, rx := splitDigits(x)
			ny, ry := splitDigits(y)
			tx, ty := strings.TrimLeft(nx, "0"), strings.TrimLeft(ny, "0")
			if c := cmp.Compare(len(tx), len(ty)); c != 0 {
				return c
			}
			if c := strings.Compare(tx, ty); c != 0 {
				return c
			}
			x, y = rx, ry
			continue
		}
		if x[0] != y[0] {
			return cmp.Compare(x[0], y[0])
		}
		x, y = x[1:], y[1:]
	}
	if c := cmp.Compare(len(x), len(y)); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// splitDigits splits s after its leading run of digits.
func splitDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}
