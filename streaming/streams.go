package streaming

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// Sink is where a follower's frames go: a socket's outbound queue. Send
// must not block; false means the queue is full and the socket is being
// closed (the client resumes from its last index), so nothing more is sent.
type Sink interface {
	Send(frame []byte) bool
	// Room is how many more frames Send takes now; history is handed over
	// in slices that fit, so a long catch-up never overflows the queue.
	Room() int
}

// roomReserve is the room a catch-up leaves for live frames and answers.
const roomReserve = 8

// pace is the pause before a catch-up that filled its socket's queue goes
// on; maxPace the longest, for a socket that takes nothing.
const (
	pace    = 2 * time.Millisecond
	maxPace = 250 * time.Millisecond
)

// MessageSource finds a stream's message in Postgres: the record that
// answers a resume after the chunk log expired.
type MessageSource interface {
	Message(ctx context.Context, id string) (*chatstream.Message, error)
}

// StreamsConfig tunes Streams. Zero values take the defaults.
type StreamsConfig struct {
	// ReadTimeout bounds one history read. Default 10s.
	ReadTimeout time.Duration
	// RetryDelay is the pause before a history read is tried again after an
	// error, or while a stream lost from Redis is still open in Postgres.
	// Default 250ms.
	RetryDelay time.Duration
	// GiveUpAfter ends a follow with an error frame when history cannot be
	// read for this long. Default 30s.
	GiveUpAfter time.Duration
	Logger      *slog.Logger
	Metrics     *Metrics
}

func (c *StreamsConfig) setDefaults() {
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 10 * time.Second
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = 250 * time.Millisecond
	}
	if c.GiveUpAfter <= 0 {
		c.GiveUpAfter = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// Streams delivers streams to the followers of one node, each index exactly
// once and in order, whatever their starting point. A stream followed on the
// node has one entry here: one hub subscription for all its followers, and
// one history read at a time that serves every follower waiting for one.
//
// A follower starts catching up: history is read from its next index (the
// channel being subscribed already, anything published later reaches it
// live); live messages seen meanwhile are not delivered but remembered, and
// if any lies beyond what history returned, it reads again. Once caught up
// it is live: a message with its next index is delivered, an older one is a
// duplicate and dropped, a newer one reveals a gap and sends it back to
// catching up. A resync from the hub does the same for every follower.
type Streams struct {
	hub  *Hub
	log  *Log
	msgs MessageSource
	cfg  StreamsConfig
	slog *slog.Logger

	mu      sync.Mutex
	streams map[string]*stream
	closed  bool
	ctx     context.Context // ends at Close; bounds the readers
	cancel  context.CancelFunc
	readers sync.WaitGroup // history readers

	readersMu     sync.Mutex
	readersClosed bool
}

// NewStreams returns the stream delivery of a node.
func NewStreams(hub *Hub, log *Log, msgs MessageSource, cfg StreamsConfig) *Streams {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Streams{hub: hub, log: log, msgs: msgs, cfg: cfg, slog: cfg.Logger,
		streams: make(map[string]*stream), ctx: ctx, cancel: cancel}
}

// Close stops every history reader and waits for them. Followers get
// nothing more; their sockets are closed by their owner.
func (s *Streams) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.readersMu.Lock()
	s.readersClosed = true
	s.readersMu.Unlock()
	s.cancel()
	s.readers.Wait()
}

// startReader counts a history reader about to start; false after Close.
// Its own lock (taken under a stream's) keeps Add from racing Close's Wait.
func (s *Streams) startReader() bool {
	s.readersMu.Lock()
	defer s.readersMu.Unlock()
	if s.readersClosed {
		return false
	}
	s.readers.Add(1)
	return true
}

// Follower is one socket following one stream.
type Follower struct {
	st   *stream
	sink Sink
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
}

// MaxLastIndex is the largest lastIndex Follow takes as given; a larger one
// is taken as this one. Positions stay far from overflowing: a client that
// claims more chunks than a stream has gets a snapshot either way.
const MaxLastIndex = 1 << 53

// Follow starts delivering stream streamID to sink from index lastIndex+1.
// The caller has checked that the socket's user may see the stream.
func (s *Streams) Follow(ctx context.Context, streamID string, lastIndex int64, sink Sink) (*Follower, error) {
	lastIndex = min(max(lastIndex, -1), MaxLastIndex)
	for {
		st, err := s.acquire(ctx, streamID)
		if err != nil {
			return nil, err
		}
		f := &Follower{st: st, sink: sink, next: lastIndex + 1, seenMax: -1}
		st.mu.Lock()
		if st.released {
			st.mu.Unlock()
			continue // the last follower left meanwhile: take a fresh entry
		}
		st.followers[f] = struct{}{}
		st.enqueueLocked(f)
		st.mu.Unlock()
		return f, nil
	}
}

// acquire returns the stream's entry, subscribed in the hub.
func (s *Streams) acquire(ctx context.Context, streamID string) (*stream, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrHubClosed
		}
		st := s.streams[streamID]
		if st == nil {
			st = &stream{owner: s, id: streamID, ready: make(chan struct{}), followers: make(map[*Follower]struct{})}
			s.streams[streamID] = st
			s.mu.Unlock()
			unsub, err := s.hub.Subscribe(ctx, s.log.keys.Channel(streamID), st)
			if err != nil {
				// Gone from the map before ready closes, so that a waiter
				// that tries again makes a fresh entry.
				s.mu.Lock()
				if s.streams[streamID] == st {
					delete(s.streams, streamID)
				}
				s.mu.Unlock()
			}
			st.unsub, st.err = unsub, err
			close(st.ready)
			if err != nil {
				return nil, err
			}
			return st, nil
		}
		s.mu.Unlock()
		select {
		case <-st.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if st.err != nil {
			if ctx.Err() == nil && (errors.Is(st.err, context.Canceled) || errors.Is(st.err, context.DeadlineExceeded)) {
				// The follower that made the entry gave up (its socket
				// closed); this one has not: it makes a new entry.
				continue
			}
			return nil, st.err
		}
		return st, nil
	}
}

// release drops st once it has no follower.
func (s *Streams) release(st *stream) {
	s.mu.Lock()
	st.mu.Lock()
	if len(st.followers) > 0 || st.released {
		st.mu.Unlock()
		s.mu.Unlock()
		return
	}
	st.released = true
	st.mu.Unlock()
	if s.streams[st.id] == st {
		delete(s.streams, st.id)
	}
	s.mu.Unlock()
	<-st.ready
	if st.unsub != nil {
		st.unsub()
	}
}

// enqueueLocked puts f in line for a history read and starts the reader.
func (st *stream) enqueueLocked(f *Follower) {
	f.live = false
	if f.waiting || f.ended {
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

// OnMessage implements Handler: a live chunk or done frame of the stream.
func (st *stream) OnMessage(_ string, payload []byte) {
	typ, idx, ok := protocol.Scan(payload)
	if !ok {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.cache.observe(typ, idx, payload)
	if st.recording != nil {
		*st.recording = append(*st.recording, payload)
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
				st.sendLocked(f, payload)
			default: // a gap: something was lost on the way
				f.seenMax = idx
				st.enqueueLocked(f)
			}
		case protocol.TypeDone:
			if idx == f.next-1 {
				st.sendLocked(f, payload)
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

// endLocked marks f over; it stays in followers until its owner closes it.
func (st *stream) endLocked(f *Follower) { f.ended = true }

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
		hist, err := s.log.Read(rctx, st.id, b.from)
		cancel()
		s.cfg.Metrics.HistoryReads.Inc()
		st.stopRecording(hist, err, b)
		if err == nil && !hist.Meta.Exists {
			err = st.fromRecord(ctx, b.followers)
			if err == nil {
				continue
			}
		} else if err == nil && hist.From+int64(len(hist.Frames)) < hist.Meta.N {
			// The meta counts chunks the list no longer holds.
			err = st.fromRecord(ctx, b.followers)
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
			done = hist.Meta.doneFrame(st.id)
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
	hist   History
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
func (st *stream) stopRecording(hist History, err error, b *readBatch) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.recording = nil
	if err == nil && hist.Meta.Exists && hist.From+int64(len(hist.Frames)) == hist.Meta.N && st.resyncs == b.resyncs {
		st.cache.fill(st.id, hist, b.live)
	}
}

// readLoopSafe is readLoop that survives a panic: it is logged, the
// followers waiting for history get an error frame (their clients
// resubscribe), and the stream's other followers and the node go on.
func (st *stream) readLoopSafe(ctx context.Context) {
	defer func() {
		if v := recover(); v != nil {
			st.owner.slog.Error("panic reading stream history; its waiting followers get an error",
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
func safeSend(sink Sink, frame []byte) {
	defer func() { _ = recover() }()
	sink.Send(frame)
}

// deliver serves a history read to the followers of batch; done is the
// stream's done frame when the read found it over.
func (st *stream) deliver(ctx context.Context, batch []*Follower, hist History, done []byte) {
	if ahead := st.serve(batch, hist, done); len(ahead) > 0 {
		if err := st.snapshotFromLog(ctx, ahead); err != nil {
			st.retryLater(ctx, ahead, err)
		}
	}
}

// serve hands a history read to the followers of batch, and returns those
// ahead of it: they claim chunks the stream does not have.
func (st *stream) serve(batch []*Follower, hist History, done []byte) (ahead []*Follower) {
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
// text it holds, then lets them continue from there.
func (st *stream) snapshotFromLog(ctx context.Context, batch []*Follower) error {
	s := st.owner
	rctx, cancel := context.WithTimeout(ctx, s.cfg.ReadTimeout)
	defer cancel()
	hist, err := s.log.Read(rctx, st.id, 0)
	if err != nil {
		return err
	}
	var text []byte
	for _, fr := range hist.Frames {
		var c protocol.Chunk
		if err := json.Unmarshal(fr, &c); err != nil {
			return err
		}
		text = append(text, c.Content...)
	}
	last := int64(len(hist.Frames)) - 1
	frame := protocol.SnapshotFrame(st.id, string(text), last)
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
			st.sendLocked(f, hist.Meta.doneFrame(st.id))
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
	snap := protocol.SnapshotFrame(st.id, m.Content, m.LastIndex)
	done := protocol.MessageDone(m)
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, f := range batch {
		if f.ended {
			continue
		}
		if f.next != m.LastIndex+1 {
			st.sendLocked(f, snap)
		}
		if !f.ended {
			f.next = m.LastIndex + 1
			st.sendLocked(f, done)
			st.endLocked(f)
		}
	}
	return nil
}

// retryLater puts batch back in line after a pause, or ends the follows
// that have failed for too long with an error frame.
func (st *stream) retryLater(ctx context.Context, batch []*Follower, cause error) {
	s := st.owner
	if ctx.Err() != nil {
		return
	}
	if !errors.Is(cause, errStillOpen) {
		s.slog.Warn("read stream history", "stream_id", st.id, "err", cause)
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
