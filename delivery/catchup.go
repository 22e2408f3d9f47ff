package delivery

import (
	"context"
	"errors"
	"runtime/debug"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// readLoop reads history for the waiting followers until none waits. The
// node's copy of the log serves them when it covers their next index;
// otherwise a read serves every follower waiting when it started, and
// rebuilds the copy. Every section under st.mu releases it with a defer, so
// that a panic (a bug) leaves the stream usable: readLoopSafe recovers it.
func (st *stream) readLoop(ctx context.Context) {
	s := st.owner
	for {
		b := st.nextBatch(ctx)
		switch {
		case b.stop:
			return
		case b.followers == nil:
			continue
		case b.cached:
			s.cfg.Metrics.HistoryCached.Inc()
			st.deliver(ctx, b.followers, b.hist, b.done)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.ReadTimeout)
		hist, err := s.chunks.Read(rctx, st.id, b.from)
		cancel()
		s.cfg.Metrics.HistoryReads.Inc()
		st.stopRecording(hist, err, b)
		if err == nil && !hist.Meta.Exists {
			err = st.fromRecord(ctx, b.followers)
			if err == nil {
				continue
			}
		} else if err == nil && hist.From+int64(len(hist.Frames)) < hist.Meta.N {
			// The meta counts chunks the list no longer holds: an ended
			// stream's compacted parts stand in for them, else Postgres's.
			if err = st.fromCompacted(ctx, b.followers, hist.Meta); errors.Is(err, errNotCompacted) {
				err = st.fromRecord(ctx, b.followers)
			}
			if err == nil {
				continue
			}
		}
		if err != nil {
			st.retryLater(ctx, b.followers, err)
			continue
		}
		var done []byte
		if hist.Meta.Status.Final() {
			done = hist.Meta.DoneFrame(st.id)
		}
		st.deliver(ctx, b.followers, hist, done)
	}
}

// readBatch is what one turn of readLoop serves.
type readBatch struct {
	stop      bool        // nobody waits (or Streams closed): the reader ends
	followers []*Follower // nil: nothing to serve this turn
	from      int64       // the lowest next index among them
	// cached says the node's copy serves them: hist and done are its.
	cached bool
	hist   streaming.History
	done   []byte
	// live collects the frames published while the read is in flight;
	// resyncs is the count of resyncs when it started.
	live    [][]byte
	resyncs uint64
}

// nextBatch takes the waiting followers for one read, or serves them from
// the node's copy of the log.
func (st *stream) nextBatch(ctx context.Context) *readBatch {
	st.mu.Lock()
	defer st.mu.Unlock()
	batch := st.waiting
	st.waiting = nil
	if len(batch) == 0 || ctx.Err() != nil {
		st.reading = false
		return &readBatch{stop: true}
	}
	// from and upTo are the lowest and highest next index of the
	// batch's open follows; found says there is one.
	var from, upTo int64
	found := false
	for _, f := range batch {
		f.waiting = false
		f.resync = false // this read starts after the resync: it covers the loss
		if f.ended {
			continue
		}
		if !found || f.next < from {
			from = f.next
		}
		if !found || f.next > upTo {
			upTo = f.next
		}
		found = true
	}
	if !found {
		return &readBatch{}
	}
	b := &readBatch{followers: batch, from: from}
	if st.cache.covers(from, upTo) {
		b.cached = true
		b.hist, b.done = st.cache.history(from)
		return b
	}
	st.recording = &b.live
	b.resyncs = st.resyncs
	return b
}

// stopRecording ends the recording of live frames of a read, and rebuilds
// the node's copy from the read if it saw the whole log and no resync came.
func (st *stream) stopRecording(hist streaming.History, err error, b *readBatch) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.recording = nil
	if err == nil && hist.Meta.Exists && hist.From+int64(len(hist.Frames)) == hist.Meta.N && st.resyncs == b.resyncs && st.gone == nil {
		st.cache.fill(st.id, hist, b.live)
	}
}

// readLoopSafe is readLoop that survives a panic: it is logged, the
// followers waiting for history get an error frame (their clients
// resubscribe), and the stream's other followers and the node go on.
func (st *stream) readLoopSafe(ctx context.Context) {
	defer func() {
		if v := recover(); v != nil {
			st.owner.logger.Error("panic reading stream history; its waiting followers get an error",
				"stream_id", st.id, "panic", v, "stack", string(debug.Stack()))
			st.owner.cfg.Metrics.Panics.Inc()
			st.abandonWaiting()
		}
	}()
	st.readLoop(ctx)
}

// abandonWaiting ends, with an error frame, every follower that is not live:
// those waiting for a read and those of the read that panicked.
func (st *stream) abandonWaiting() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.reading = false
	st.recording = nil
	st.waiting = nil
	st.cache.invalidate()
	frame := protocol.ErrorFrame(st.id, protocol.CodeInternal, "The stream's history could not be read; resubscribe.")
	for f := range st.followers {
		if f.ended || f.live {
			continue
		}
		f.waiting = false
		safeSend(f.sink, frame)
		st.endLocked(f)
	}
}

// safeSend sends frame to sink, ignoring a panic: the sink that just
// panicked may panic again.
func safeSend(sink chatstream.Sink, frame []byte) {
	defer func() { _ = recover() }()
	sink.Send(frame)
}

// deliver serves a history read to the followers of batch; done is the
// stream's done frame when the read found it over.
func (st *stream) deliver(ctx context.Context, batch []*Follower, hist streaming.History, done []byte) {
	if ahead := st.serve(batch, hist, done); len(ahead) > 0 {
		if err := st.snapshotFromLog(ctx, ahead); err != nil {
			st.retryLater(ctx, ahead, err)
		}
	}
}

// serve hands a history read to the followers of batch, and returns those
// ahead of it: they claim chunks the stream does not have.
func (st *stream) serve(batch []*Follower, hist streaming.History, done []byte) (ahead []*Follower) {
	end := hist.From + int64(len(hist.Frames)) // one past the last index read
	// have is how many chunks the stream is known to have: the meta's count,
	// or more if the list read after it already held more. An empty read
	// says nothing (its start is only what was asked for).
	have := hist.Meta.N
	if len(hist.Frames) > 0 {
		have = max(have, end)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, f := range batch {
		if f.ended {
			continue
		}
		f.firstError = time.Time{}
		if f.next > have {
			// The client claims chunks the stream does not have: its
			// sequence cannot be continued; it gets a snapshot.
			ahead = append(ahead, f)
			continue
		}
		room := f.sink.Room() - roomReserve
		from := f.next
		for i := f.next; i < end && !f.ended && room > 0; i++ {
			f.next = i + 1
			room--
			st.sendLocked(f, hist.Frames[i-hist.From])
		}
		if f.ended {
			continue
		}
		if f.next < end {
			// The socket's queue is full of history: go on once it drained.
			st.paceLocked(f, f.next > from)
			continue
		}
		switch {
		case done != nil && f.next == hist.Meta.N:
			st.sendLocked(f, done)
			st.endLocked(f)
		case f.seenMax >= f.next || f.resync:
			st.enqueueLocked(f) // more was published than this read saw
		default:
			f.live = true
		}
	}
	return ahead
}

// snapshotFromLog sends followers that are ahead of the chunk log the whole
// parts it holds, then lets them continue from there.
func (st *stream) snapshotFromLog(ctx context.Context, batch []*Follower) error {
	s := st.owner
	rctx, cancel := context.WithTimeout(ctx, s.cfg.ReadTimeout)
	defer cancel()
	hist, err := s.chunks.Read(rctx, st.id, 0)
	if err != nil {
		return err
	}
	parts, err := protocol.PartsOf(hist.Frames)
	if err != nil {
		return err
	}
	last := int64(len(hist.Frames)) - 1
	frame := protocol.SnapshotFrame(st.id, parts, last)
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, f := range batch {
		if f.ended {
			continue
		}
		f.next = last + 1
		st.sendLocked(f, frame)
		if f.ended {
			continue
		}
		if hist.Meta.Status.Final() {
			st.sendLocked(f, hist.Meta.DoneFrame(st.id))
			st.endLocked(f)
		} else {
			st.enqueueLocked(f)
		}
	}
	return nil
}

// errStillOpen means Redis lost a stream that Postgres says is running.
var errStillOpen = errors.New("stream lost from redis while still open")

// fromRecord serves followers of a stream the chunk log no longer has, from
// the final message in Postgres: a snapshot, then done.
func (st *stream) fromRecord(ctx context.Context, batch []*Follower) error {
	s := st.owner
	rctx, cancel := context.WithTimeout(ctx, s.cfg.ReadTimeout)
	defer cancel()
	m, err := s.msgs.Message(rctx, st.id)
	if err != nil {
		return err
	}
	if !m.Status.Final() {
		// Its worker, or a reaper, will end it; then Postgres can answer.
		return errStillOpen
	}
	st.snapshotThenDone(batch, protocol.SnapshotFrame(st.id, m.PartsOrText(), m.LastIndex), protocol.MessageDone(m), m.LastIndex)
	return nil
}

// errNotCompacted says a stream has no compacted value to answer from.
var errNotCompacted = errors.New("no compacted parts")

// fromCompacted answers batch from the compacted parts of ended stream
// st (the chunks are gone): a snapshot, then done.
func (st *stream) fromCompacted(ctx context.Context, batch []*Follower, meta streaming.Meta) error {
	if !meta.Status.Final() {
		return errNotCompacted
	}
	s := st.owner
	rctx, cancel := context.WithTimeout(ctx, s.cfg.ReadTimeout)
	defer cancel()
	parts, err := s.chunks.Compacted(rctx, st.id)
	if err != nil {
		return err
	}
	if parts == nil {
		return errNotCompacted
	}
	s.cfg.Metrics.HistoryCompacted.Inc()
	st.snapshotThenDone(batch, protocol.SnapshotFrame(st.id, parts, meta.LastIndex()), meta.DoneFrame(st.id), meta.LastIndex())
	return nil
}

// snapshotThenDone ends the follows of an ended stream whose chunks are
// gone: a snapshot up to last (unless a follower holds it all), then done.
func (st *stream) snapshotThenDone(batch []*Follower, snap, done []byte, last int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, f := range batch {
		if f.ended {
			continue
		}
		if f.next != last+1 {
			st.sendLocked(f, snap)
		}
		if !f.ended {
			f.next = last + 1
			st.sendLocked(f, done)
			st.endLocked(f)
		}
	}
}

// retryLater puts batch back in line after a pause, or ends the follows
// that have failed for too long with an error frame.
func (st *stream) retryLater(ctx context.Context, batch []*Follower, cause error) {
	s := st.owner
	if ctx.Err() != nil {
		return
	}
	if !errors.Is(cause, errStillOpen) {
		s.logger.Warn("read stream history", "stream_id", st.id, "err", cause)
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(s.cfg.RetryDelay):
	}
	frame := protocol.ErrorFrame(st.id, protocol.CodeUnavailable, "The stream's history cannot be read right now; resubscribe later.")
	code := chatstream.ErrorCode(cause)
	if code == chatstream.ENOTFOUND {
		frame = protocol.ErrorFrame(st.id, protocol.CodeNotFound, chatstream.ErrorMessage(protocol.ErrStreamNotFound))
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now()
	for _, f := range batch {
		if f.ended {
			continue
		}
		if f.firstError.IsZero() {
			f.firstError = now
		}
		if code == chatstream.ENOTFOUND || now.Sub(f.firstError) > s.cfg.GiveUpAfter {
			st.sendLocked(f, frame)
			st.endLocked(f)
			continue
		}
		st.enqueueLocked(f)
	}
}
