package server

import (
	"sync"
	"testing"
	"time"
)

// With WriteCoalesce a socket holds its queued frames only while frames
// come closer together than the hold: the first frame after a pause goes
// at once (nothing would join it in time), one right behind another waits
// for more, a long enough batch goes at once.
func TestOutQueue_HoldsOnlyFramesThatComeClose(t *testing.T) {
	var wg sync.WaitGroup
	q := &outQueue{max: 100, writers: &wg, wake: make(chan struct{}, 1), stamp: true}
	const hold = time.Hour
	q.push([]byte("a"))
	if got := q.holdFor(hold); got != 0 {
		t.Fatalf("the first frame after a pause is held %v", got)
	}
	q.take(nil)
	q.push([]byte("b")) // right behind a
	if got := q.holdFor(hold); got <= 0 || got > hold {
		t.Fatalf("a frame right behind another is held %v, want up to %v", got, hold)
	}
	if got := q.holdFor(time.Nanosecond); got != 0 {
		t.Fatalf("held %v past a 1 ns hold", got)
	}
	for range coalesceLimit {
		q.push([]byte("c"))
	}
	if got := q.holdFor(hold); got != 0 {
		t.Fatalf("a batch of %d frames is held %v", coalesceLimit+1, got)
	}
	if got, _ := q.take(nil); len(got) != coalesceLimit+1 {
		t.Fatalf("took %d frames", len(got))
	}
	// Without WriteCoalesce nothing is stamped and nothing held.
	plain := &outQueue{max: 100, writers: &wg, wake: make(chan struct{}, 1)}
	plain.push([]byte("a"))
	plain.push([]byte("b"))
	if got := plain.holdFor(hold); got != 0 {
		t.Fatalf("a queue without WriteCoalesce is held %v", got)
	}
}
