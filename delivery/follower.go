package delivery

import (
	"sync"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// roomReserve is the room a catch-up leaves for live frames and answers.
const roomReserve = 8

// pace is the pause before a catch-up that filled its socket's queue goes
// on; maxPace the longest, for a socket that takes nothing.
const (
	pace    = 2 * time.Millisecond
	maxPace = 250 * time.Millisecond
)

// liveWrites is how many followers of a stream have a live frame written
// on the dispatch goroutine itself (chatstream.LiveSink: no socket
// goroutine woken per frame); a stream's further followers have theirs
// queued, written by their sockets' own goroutines, which run in parallel —
// one goroutine writing to thousands of sockets one after the other would
// hold the stream's frames back. While the node is behind (streaming.Hub.
// Behind), every follower's frame is queued.
const liveWrites = 512

// Follower is one socket following one stream.
type Follower struct {
	st   *stream
	sink chatstream.Sink
	// liveSink is sink, when it writes live frames itself; else nil.
	liveSink chatstream.LiveSink
	// The fields below are guarded by st.mu.
	next       int64 // the next index to deliver
	live       bool  // caught up: live messages are delivered
	waiting    bool  // in st.waiting
	resync     bool  // a resync came while its history read was in flight
	seenMax    int64 // highest index seen live while not live
	ended      bool  // done (or an error) sent, or closed
	firstError time.Time
	paceDelay  time.Duration // pause before the next slice of history
}

// Ended reports whether the follow is over: done was sent, or it was closed.
func (f *Follower) Ended() bool {
	f.st.mu.Lock()
	defer f.st.mu.Unlock()
	return f.ended
}

// Close stops the follow. It is safe to call more than once.
func (f *Follower) Close() {
	st := f.st
	st.mu.Lock()
	f.ended = true
	delete(st.followers, f)
	empty := len(st.followers) == 0
	st.mu.Unlock()
	if empty {
		st.owner.release(st)
	}
}

// stream is the node's state of one followed stream.
type stream struct {
	owner *Streams
	id    string
	ready chan struct{} // closed once the hub subscription is made (or failed)
	err   error         // the subscription's error, set before ready closes
	unsub func()

	mu        sync.Mutex
	followers map[*Follower]struct{}
	waiting   []*Follower // followers that need a history read
	reading   bool        // a reader goroutine runs
	released  bool        // removed from Streams; no follower may join
	cache     logCache    // the node's copy of the log; see logCache
	// recording collects live frames while a history read that may rebuild
	// the cache is in flight (nil otherwise): chunks published after the
	// read reach the node live, possibly before the read's answer.
	recording *[][]byte
	resyncs   uint64 // resyncs so far; a read that spans one fills nothing
	// gone is the error frame that said the stream was deleted (with its
	// conversation): every follower, and any that joins, gets it and ends.
	gone []byte
}

// enqueueLocked puts f in line for a history read and starts the reader.
func (st *stream) enqueueLocked(f *Follower) {
	f.live = false
	if f.waiting || f.ended {
		return
	}
	if st.gone != nil {
		st.sendLocked(f, st.gone)
		st.endLocked(f)
		return
	}
	s := st.owner
	if !st.reading && !s.startReader() {
		return // Streams closed: no reader may start
	}
	f.waiting = true
	st.waiting = append(st.waiting, f)
	if !st.reading {
		st.reading = true
		// The reader lives while followers wait for history, at most until
		// Streams.Close.
		go func() { defer s.readers.Done(); st.readLoopSafe(s.ctx) }()
	}
}

// paceLocked reads on for f after a pause, while its socket drains. The
// pause doubles, up to maxPace, while the socket takes nothing: a stuck
// socket costs a read now and then until its write timeout closes it.
func (st *stream) paceLocked(f *Follower, progressed bool) {
	f.live = false
	if progressed || f.paceDelay == 0 {
		f.paceDelay = pace
	} else {
		f.paceDelay = min(2*f.paceDelay, maxPace)
	}
	time.AfterFunc(f.paceDelay, func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		st.enqueueLocked(f)
	})
}

// OnMessage implements Handler: a live chunk or done frame of the stream,
// or the error frame of its deletion.
func (st *stream) OnMessage(channel string, payload []byte) {
	typ, idx, ok := protocol.Scan(payload)
	if !ok {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if typ == protocol.TypeError {
		// The stream was deleted: its followers end, and the node's copy
		// of its log goes.
		st.gone = payload
		st.cache.invalidate()
		for f := range st.followers {
			if !f.ended {
				st.sendLocked(f, payload)
				st.endLocked(f)
			}
		}
		return
	}
	st.cache.observe(typ, idx, payload)
	if st.recording != nil {
		*st.recording = append(*st.recording, payload)
	}
	// Live frames written by SendLive, up to liveWrites; none while the
	// node is behind: frames queued then are written a socket's several
	// at once, where writing each at once would fall further behind.
	writes := 0
	if st.owner.behind(channel) {
		writes = liveWrites
	}
	for f := range st.followers {
		if f.ended {
			continue
		}
		if !f.live {
			if typ == protocol.TypeChunk && idx > f.seenMax {
				f.seenMax = idx
			} else if typ == protocol.TypeDone && idx+1 > f.seenMax {
				// A done frame says the stream is over: history has the end.
				f.seenMax = idx + 1
			}
			continue
		}
		switch typ {
		case protocol.TypeChunk:
			switch {
			case idx < f.next: // a duplicate
			case idx == f.next:
				f.next++
				st.sendLiveLocked(f, payload, &writes)
			default: // a gap: something was lost on the way
				f.seenMax = idx
				st.enqueueLocked(f)
			}
		case protocol.TypeDone:
			if idx == f.next-1 {
				st.sendLiveLocked(f, payload, &writes)
				st.endLocked(f)
			} else if idx >= f.next {
				f.seenMax = idx + 1
				st.enqueueLocked(f)
			}
		}
	}
}

// OnResync implements Handler: live messages may have been lost. A live
// follower reads history again; one whose read is in flight reads again
// after it, since that read may have ended before what was lost, and the
// lost messages did not raise its seenMax.
func (st *stream) OnResync(string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.cache.invalidate()
	st.resyncs++
	for f := range st.followers {
		switch {
		case f.ended:
		case f.live:
			st.enqueueLocked(f)
		case !f.waiting:
			f.resync = true
		}
	}
}

// sendLocked hands a frame to f's sink; a full sink ends the follow (its
// socket is being closed).
func (st *stream) sendLocked(f *Follower, frame []byte) {
	if !f.sink.Send(frame) {
		st.endLocked(f)
	}
}

// sendLiveLocked hands a live frame to f's sink, to be written at once by
// SendLive while *writes is below liveWrites (counting it), else queued.
func (st *stream) sendLiveLocked(f *Follower, frame []byte, writes *int) {
	if f.liveSink == nil || *writes >= liveWrites {
		st.sendLocked(f, frame)
		return
	}
	*writes++
	if !f.liveSink.SendLive(frame) {
		st.endLocked(f)
	}
}

// endLocked marks f over; it stays in followers until its owner closes it.
func (st *stream) endLocked(f *Follower) { f.ended = true }
