package natural

import (
	"slices"
	"testing"
)

func TestCompare(t *testing.T) {
	got := []string{"ttyUSB10", "ttyUSB2", "ttyUSB1", "ttyACM0", "b", "a10b", "a10a", "a9z", "ttyUSB01", "", "10", "9"}
	slices.SortFunc(got, Compare)
	want := []string{"", "9", "10", "a9z", "a10a", "a10b", "b", "ttyACM0", "ttyUSB01", "ttyUSB1", "ttyUSB2", "ttyUSB10"}
	if !slices.Equal(got, want) {
		t.Errorf("sorted = %q\nwant     %q", got, want)
	}
	for _, p := range [][2]string{{"2", "10"}, {"x2y", "x10"}, {"01", "1"}, {"a", "ab"}} {
		if Compare(p[0], p[1]) >= 0 || Compare(p[1], p[0]) <= 0 {
			t.Errorf("want %q < %q", p[0], p[1])
		}
	}
	if Compare("ttyUSB3", "ttyUSB3") != 0 {
		t.Error("equal strings do not compare equal")
	}
}

// Decimal numbers of any length order by value, then by spelling: what
// hotplug needs for the N of /sys/devices/gpu.N.
func TestCompareNumbers(t *testing.T) {
	got := []string{"10", "2", "0", "01", "1", "99999999999999999999999", "100000000000000000000000", "007"}
	slices.SortFunc(got, Compare)
	want := []string{"0", "01", "1", "2", "007", "10", "99999999999999999999999", "100000000000000000000000"}
	if !slices.Equal(got, want) {
		t.Errorf("sorted = %q\nwant     %q", got, want)
	}
}
