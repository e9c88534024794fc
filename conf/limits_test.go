package conf

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// TestAtTheLimits pins each limit from the side a user stands on when a
// value is exactly at it: accepted. (Over it is refused elsewhere:
// TestParseErrors, TestTooLarge, TestOwner.) Found by make mutate, where
// turning each > into >= left every other test green.
func TestAtTheLimits(t *testing.T) {
	rule := func(match string) string {
		return fmt.Sprintf("version: v1\nrules:\n- match: '%s'\n", match)
	}
	tests := []struct{ name, data string }{
		// A resource name part is at most 63 characters; a match whose
		// literal start is exactly that long can still name one.
		{"a literal start of 63 characters", rule("^" + strings.Repeat("a", maxNameLen))},
		// 'z' is a letter at either end of a name.
		{"a name that starts with z", rule("^zram[0-9]+$")},
		{"a name that ends with z", rule("^fooz$")},
		// "^" alone is anchored with no literal: it names nothing in
		// particular and is no error.
		{"a bare ^", rule("^")},
		{"uid and gid at MaxInt32", fmt.Sprintf("version: v1\nrules:\n- {match: ^ttyUSB0$, cdi: true, owner: {uid: %d, gid: %d}}\n", math.MaxInt32, math.MaxInt32)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse("r.yaml", []byte(tt.data)); err != nil {
				t.Errorf("Parse(%q): %v", tt.data, err)
			}
		})
	}

	t.Run("a file of exactly MaxFileSize bytes", func(t *testing.T) {
		data := rule("^ttyUSB[0-9]+$") + "#"
		data += strings.Repeat("x", MaxFileSize-len(data)-1) + "\n"
		if len(data) != MaxFileSize {
			t.Fatalf("built %d bytes", len(data))
		}
		c, err := Parse("r.yaml", []byte(data))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if len(c.Rules) != 1 {
			t.Errorf("rules = %+v", c.Rules)
		}
	})

	t.Run("owner IDs above MaxInt32 are refused", func(t *testing.T) {
		data := fmt.Sprintf("version: v1\nrules:\n- {match: ^ttyUSB0$, cdi: true, owner: {uid: %d}}\n", int64(math.MaxInt32)+1)
		if _, err := Parse("r.yaml", []byte(data)); err == nil || !strings.Contains(err.Error(), "must be between 0 and 2147483647") {
			t.Errorf("Parse: %v", err)
		}
	})

	// An unknown line (0, a rule from an inline TOML array) is left out
	// of a position rather than shown as line 0.
	for _, tt := range []struct {
		pos  Pos
		want string
	}{{Pos{"r.toml", 0}, "r.toml"}, {Pos{"r.yaml", 1}, "r.yaml:1"}, {Pos{"r.yaml", -1}, "r.yaml"}} {
		if got := tt.pos.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.pos, got, tt.want)
		}
	}
}
