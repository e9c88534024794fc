// Package backoff is the doubling delay between retries shared by the
// plugin servers (listen, registration) and the uevent monitor (reconnect).
package backoff

import "time"

// Defaults for a zero or negative bound.
const (
	DefaultMin = 100 * time.Millisecond
	DefaultMax = 30 * time.Second
)

// Bounds returns lo and hi with a zero or negative value replaced by its
// default, and hi raised to lo where it is smaller.
func Bounds(lo, hi time.Duration) (time.Duration, time.Duration) {
	if lo <= 0 {
		lo = DefaultMin
	}
	if hi <= 0 {
		hi = DefaultMax
	}
	return lo, max(hi, lo)
}

// Backoff is a delay that doubles from its minimum up to its maximum. Make
// it with New; it is not safe for concurrent use.
type Backoff struct {
	min, max, cur time.Duration
}

// New returns a backoff between lo and hi, with Bounds applied.
func New(lo, hi time.Duration) Backoff {
	lo, hi = Bounds(lo, hi)
	return Backoff{min: lo, max: hi}
}

// Next returns the delay before the next retry: the minimum first, then
// twice the previous one, up to the maximum.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur
}

// Reset makes the next delay the minimum again.
func (b *Backoff) Reset() { b.cur = 0 }
