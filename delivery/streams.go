package delivery

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/streaming"
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
	hub    *streaming.Hub
	chunks *streaming.ChunkLog
	msgs   MessageSource
	cfg    StreamsConfig
	logger *slog.Logger
	// behind is hub.Behind (a test makes the node behind).
	behind func(channel string) bool

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
func NewStreams(hub *streaming.Hub, chunks *streaming.ChunkLog, msgs MessageSource, cfg StreamsConfig) *Streams {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Streams{hub: hub, chunks: chunks, msgs: msgs, cfg: cfg, logger: cfg.Logger, behind: hub.Behind,
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

// MaxLastIndex is the largest lastIndex Follow takes as given; a larger one
// is taken as this one. Positions stay far from overflowing: a client that
// claims more chunks than a stream has gets a snapshot either way.
const MaxLastIndex = 1 << 53

// Follow starts delivering stream streamID to sink from index lastIndex+1.
// The caller has checked that the socket's user may see the stream.
func (s *Streams) Follow(ctx context.Context, streamID string, lastIndex int64, sink chatstream.Sink) (*Follower, error) {
	lastIndex = min(max(lastIndex, -1), MaxLastIndex)
	for {
		st, err := s.acquire(ctx, streamID)
		if err != nil {
			return nil, err
		}
		f := &Follower{st: st, sink: sink, next: lastIndex + 1, seenMax: -1}
		f.liveSink, _ = sink.(chatstream.LiveSink)
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
			return nil, streaming.ErrHubClosed
		}
		st := s.streams[streamID]
		if st == nil {
			st = &stream{owner: s, id: streamID, ready: make(chan struct{}), followers: make(map[*Follower]struct{})}
			s.streams[streamID] = st
			s.mu.Unlock()
			unsub, err := s.hub.Subscribe(ctx, s.chunks.Keys().Channel(streamID), st)
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
