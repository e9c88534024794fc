package backoff

import (
	"slices"
	"testing"
	"time"
)

func TestNextDoublesUpToMax(t *testing.T) {
	b := New(time.Millisecond, 5*time.Millisecond)
	var got []time.Duration
	for range 5 {
		got = append(got, b.Next())
	}
	want := []time.Duration{1, 2, 4, 5, 5}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(got, want) {
		t.Errorf("Next = %v, want %v", got, want)
	}
	b.Reset()
	if d := b.Next(); d != time.Millisecond {
		t.Errorf("Next after Reset = %v, want the minimum", d)
	}
}

func TestBounds(t *testing.T) {
	for _, tc := range []struct{ lo, hi, wantLo, wantHi time.Duration }{
		{0, 0, DefaultMin, DefaultMax},
		{-1, -1, DefaultMin, DefaultMax},
		{time.Second, 0, time.Second, DefaultMax},
		{time.Minute, time.Second, time.Minute, time.Minute}, // hi raised to lo
		{time.Millisecond, time.Second, time.Millisecond, time.Second},
	} {
		lo, hi := Bounds(tc.lo, tc.hi)
		if lo != tc.wantLo || hi != tc.wantHi {
			t.Errorf("Bounds(%v, %v) = %v, %v; want %v, %v", tc.lo, tc.hi, lo, hi, tc.wantLo, tc.wantHi)
		}
	}
}
