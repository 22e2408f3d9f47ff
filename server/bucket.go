package server

import "time"

// bucket is a token bucket: burst tokens at most, refilled at rate a
// second. It is not safe for concurrent use (a socket's reader owns its own).
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

// take takes a token at now: 0 if there was one, else how long until one.
func (b *bucket) take(now time.Time) time.Duration {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}
