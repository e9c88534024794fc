package plugin

import (
	"slices"
	"testing"
)

func TestCompareNatural(t *testing.T) {
	got := []string{"ttyUSB10", "ttyUSB2", "ttyUSB1", "ttyACM0", "b", "a10b", "a10a", "a9z", "ttyUSB01", "", "10", "9"}
	slices.SortFunc(got, compareNatural)
	want := []string{"", "9", "10", "a9z", "a10a", "a10b", "b", "ttyACM0", "ttyUSB01", "ttyUSB1", "ttyUSB2", "ttyUSB10"}
	if !slices.Equal(got, want) {
		t.Errorf("sorted = %q\nwant     %q", got, want)
	}
	for _, p := range [][2]string{{"2", "10"}, {"x2y", "x10"}, {"01", "1"}, {"a", "ab"}} {
		if compareNatural(p[0], p[1]) >= 0 || compareNatural(p[1], p[0]) <= 0 {
			t.Errorf("want %q < %q", p[0], p[1])
		}
	}
	if compareNatural("ttyUSB3", "ttyUSB3") != 0 {
		t.Error("equal strings do not compare equal")
	}
}

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
