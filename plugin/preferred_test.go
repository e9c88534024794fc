package plugin

import (
	"slices"
	"testing"
)

func TestPreferred(t *testing.T) {
	health := map[string]bool{"1": true, "2": true, "10": true, "3": false}
	for _, tc := range []struct {
		name            string
		must, available []string
		size            int
		want            []string
	}{
		{"natural order", nil, []string{"10", "2", "1"}, 2, []string{"1", "2"}},
		{"must first", []string{"10"}, []string{"10", "2", "1"}, 2, []string{"10", "1"}},
		{"unhealthy and unknown skipped", nil, []string{"3", "x", "10"}, 3, []string{"10"}},
		{"all must kept", []string{"2", "1"}, []string{"1", "2", "10"}, 1, []string{"2", "1"}},
		{"duplicates once", []string{"2", "2"}, []string{"2", "2", "1", "1"}, 3, []string{"2", "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := preferred(health, tc.must, tc.available, tc.size); !slices.Equal(got, tc.want) {
				t.Errorf("preferred = %q, want %q", got, tc.want)
			}
		})
	}
}
