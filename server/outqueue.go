package server

import (
	"sync"
	"time"
)

// outQueue is a socket's bounded outbound queue. Unlike a buffered channel
// it holds memory only for the frames queued, and its writer goroutine runs
// only while frames come (it lingers one to two writerLinger periods after the last): an idle
// socket costs neither.
type outQueue struct {
	mu      sync.Mutex
	frames  [][]byte
	max     int
	writing bool // a writer goroutine runs
	closed  bool // the socket is closing: nothing more is queued
	// claimed: a frame is being written by Send's caller (see claim);
	// rest: what such a write left of its frame waits for the writer; idle:
	// the writer found nothing to do and waits.
	claimed, rest, idle bool
	writers             *sync.WaitGroup // the writer goroutines, for the session to wait on
	// wake tells a lingering writer that frames are queued; buffered 1, so
	// a push never blocks and a wake-up is never lost.
	wake chan struct{}
	// stamp records when the oldest queued frame came and the gap before
	// the last one (for WriteCoalesce).
	stamp  bool
	oldest time.Time
	last   time.Time
	gap    time.Duration
}

// coalesceLimit is the queue length at which a held batch goes out at once.
const coalesceLimit = 32

// holdFor says how much longer the writer may hold the queued frames for
// more to join them: what is left of hold since the oldest came; 0 when
// nothing is queued, the batch is long enough, the time is up, or frames
// come further apart than hold (holding would only delay them: no second
// frame would come in time to share the write).
func (q *outQueue) holdFor(hold time.Duration) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) == 0 || len(q.frames) >= coalesceLimit || q.closed || q.gap > hold {
		return 0
	}
	return max(0, hold-time.Since(q.oldest))
}

// writerLinger is how long a writer waits for more frames before it ends:
// long enough that a streaming socket keeps one writer, short enough that
// an idle socket soon holds none.
const writerLinger = time.Second

// pushResult says what push did.
type pushResult int

const (
	pushed      pushResult = iota
	pushedStart            // queued; the caller must start the writer
	queueFull
	queueClosed
)

// push queues frame.
func (q *outQueue) push(frame []byte) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed:
		return queueClosed
	case len(q.frames) >= q.max:
		return queueFull
	}
	if q.stamp {
		now := time.Now()
		q.gap, q.last = now.Sub(q.last), now
		if len(q.frames) == 0 {
			q.oldest = now
		}
	}
	q.frames = append(q.frames, frame)
	if q.writing {
		q.nudge()
		return pushed
	}
	if q.claimed {
		return pushed // the claim's release starts the writer
	}
	q.writing = true
	q.writers.Add(1) // under q.mu, so never after the session's Wait
	return pushedStart
}

// claim lets the caller write a frame itself, now (session.SendLive): when
// nothing is queued or held, no rest of a frame waits, and no writer is at
// work (none runs, or it waits idle), it marks the queue claimed and
// reports true. Frames pushed during the claim wait for its release, and a
// writer takes nothing meanwhile, so they follow the caller's frame.
func (q *outQueue) claim() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.claimed || q.rest || q.stamp || len(q.frames) > 0 || (q.writing && !q.idle) {
		return false
	}
	q.claimed = true
	return true
}

// release ends a claim; rest says the caller's write left part of its frame
// for the writer. When frames were pushed meanwhile or a rest waits, the
// writer carries on: a waiting one is woken; with none running, start
// reports that the caller must start one.
func (q *outQueue) release(rest bool) (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.claimed = false
	q.rest = q.rest || rest
	if q.closed || (!q.rest && len(q.frames) == 0) {
		return false
	}
	if q.writing {
		q.nudge()
		return false
	}
	q.writing = true
	q.writers.Add(1) // under q.mu, so never after the session's Wait
	return true
}

// nudge wakes the writer, if it waits; it never blocks.
func (q *outQueue) nudge() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns every queued frame, reusing buf's storage, and whether a
// rest of a frame waits to be written before them (see claim). During a
// claim it returns nothing: the claim's release wakes the writer again.
func (q *outQueue) take(buf [][]byte) (_ [][]byte, rest bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.claimed {
		q.idle = true
		return buf[:0], false
	}
	rest, q.rest = q.rest, false
	q.idle = len(q.frames) == 0 && !rest
	buf = append(buf[:0], q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	if cap(q.frames) > 64 && len(buf) < 16 {
		q.frames = nil // let a burst's storage go once it is over
	}
	return buf, rest
}

// retire ends the writer if nothing is queued: it reports whether the
// writer must return. A push after it starts a new writer.
func (q *outQueue) retire() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if (len(q.frames) > 0 || q.rest) && !q.closed {
		return false
	}
	q.writing, q.idle = false, false
	return true
}

// close refuses further frames and drops the queued ones.
func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.frames = nil
	q.mu.Unlock()
}

func (q *outQueue) room() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.max - len(q.frames)
}

func (q *outQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frames)
}
