package delivery

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// refillMessages is how many of a conversation's newest messages a watcher
// gets again after a resync.
const refillMessages = 8

// refillTries bounds the reads of one refill: a read is tried again when it
// failed, or when live events arrived while it ran (it may be older than
// them).
const refillTries = 5

// ConversationSource reads a conversation and the newest messages of its
// current branch from Postgres, oldest first: what a watcher refills from.
type ConversationSource interface {
	Conversation(ctx context.Context, id string) (*chatstream.Conversation, error)
	RecentMessages(ctx context.Context, convID string, limit int) ([]*chatstream.Message, error)
}

// Watcher forwards a conversation's message events to the sockets that
// watch it. Events travel by pub/sub, which loses what is published while
// the node's connection is down or the conversation's slot moves; after such
// a resync each watching socket gets the conversation's newest messages again
// as message events. Postgres is read once per conversation for all the
// watchers waiting when the read starts; those that ask during a read get
// the next one, so every refill is at least as new as its resync.
//
// A refill must not undo a live event: both are sent under mu, and a read
// during which a live event of the conversation went out is read again
// rather than sent, so a socket never gets an older state after a newer one.
type Watcher struct {
	hub    *streaming.Hub
	keys   streaming.Keys
	msgs   ConversationSource
	logger *slog.Logger

	ctx    context.Context // ends at close
	cancel context.CancelFunc
	wg     sync.WaitGroup // refills under way

	mu      sync.Mutex
	closed  bool
	convs   map[string]*convRefill
	retryIn time.Duration // pause before a read is tried again
}

// convRefill is the refill state of one conversation; guarded by Watcher.mu.
type convRefill struct {
	waiting map[*forward]struct{} // watchers for the next read
	reading bool                  // a refill goroutine runs
	events  uint64                // live events sent, to spot a read they overtook
}

// NewWatcher returns the conversation watcher of a node.
func NewWatcher(hub *streaming.Hub, keys streaming.Keys, msgs ConversationSource, logger *slog.Logger) *Watcher {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Watcher{hub: hub, keys: keys, msgs: msgs, logger: logger, ctx: ctx, cancel: cancel,
		convs: map[string]*convRefill{}, retryIn: 200 * time.Millisecond}
}

// Watch implements server.Watcher.
func (w *Watcher) Watch(ctx context.Context, convID string, sink chatstream.Sink) (func(), error) {
	f := &forward{w: w, conv: convID, sink: sink}
	unsub, err := w.hub.Subscribe(ctx, w.keys.ConversationChannel(convID), f)
	if err != nil {
		return nil, err
	}
	return func() {
		w.mu.Lock()
		f.stopped = true
		w.mu.Unlock()
		unsub()
	}, nil
}

// Close stops the refills under way and waits for them.
func (w *Watcher) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
}

// stateLocked returns conv's refill state, made on first use; w.mu is held.
func (w *Watcher) stateLocked(conv string) *convRefill {
	c := w.convs[conv]
	if c == nil {
		c = &convRefill{waiting: map[*forward]struct{}{}}
		w.convs[conv] = c
	}
	return c
}

// dropIdleLocked forgets conv's state when nothing is pending; w.mu is held.
func (w *Watcher) dropIdleLocked(conv string, c *convRefill) {
	if !c.reading && len(c.waiting) == 0 {
		delete(w.convs, conv)
	}
}

// live sends a live event to f, counting it against reads under way.
func (w *Watcher) live(f *forward, frame []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if f.stopped {
		return
	}
	if c := w.convs[f.conv]; c != nil {
		c.events++
	}
	f.sink.Send(frame)
}

// refill puts f in line for its conversation's next read, starting the
// reader unless one runs.
func (w *Watcher) refill(f *forward) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || f.stopped {
		return
	}
	c := w.stateLocked(f.conv)
	c.waiting[f] = struct{}{}
	if c.reading {
		return
	}
	c.reading = true
	w.wg.Add(1)
	// The reader lives while watchers wait, at most until close.
	go func() { defer w.wg.Done(); w.readLoop(f.conv, c) }()
}

// readLoop serves conv's waiting watchers until none waits.
func (w *Watcher) readLoop(conv string, c *convRefill) {
	for try := 0; ; {
		w.mu.Lock()
		if len(c.waiting) == 0 || w.ctx.Err() != nil {
			c.reading = false
			c.waiting = map[*forward]struct{}{}
			w.dropIdleLocked(conv, c)
			w.mu.Unlock()
			return
		}
		batch := c.waiting
		c.waiting = map[*forward]struct{}{}
		events := c.events
		w.mu.Unlock()

		frames, err := w.refillFrames(conv)

		w.mu.Lock()
		overtaken := c.events != events
		if (err != nil || overtaken) && try < refillTries {
			// Failed, or overtaken by live events: read again, for these
			// watchers and any that came meanwhile.
			for f := range batch {
				c.waiting[f] = struct{}{}
			}
			w.mu.Unlock()
			try++
			select {
			case <-w.ctx.Done():
			case <-time.After(w.retryIn):
			}
			continue
		}
		switch {
		case err != nil:
			w.logger.Warn("refill watchers after a resync", "conversation_id", conv, "err", err)
		case overtaken:
			// Still overtaken after every try: live events keep coming,
			// and they are newer than any read; an old state is not sent.
			w.logger.Info("refill watchers after a resync: overtaken by live events", "conversation_id", conv)
		default:
			for f := range batch {
				for _, fr := range frames {
					if f.stopped || !f.sink.Send(fr) {
						break
					}
				}
			}
		}
		try = 0
		w.mu.Unlock()
	}
}

// refillFrames are what a watcher of conv gets after a resync: the
// conversation as it is now (or its deletion), then its newest messages.
func (w *Watcher) refillFrames(conv string) ([][]byte, error) {
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	c, err := w.msgs.Conversation(ctx, conv)
	if chatstream.ErrorCode(err) == chatstream.ENOTFOUND {
		return [][]byte{protocol.ConversationFrame(conv, protocol.ConversationDeleted, nil)}, nil
	} else if err != nil {
		return nil, err
	}
	msgs, err := w.msgs.RecentMessages(ctx, conv, refillMessages)
	if err != nil {
		return nil, err
	}
	frames := make([][]byte, 0, len(msgs)+1)
	frames = append(frames, protocol.ConversationFrame(conv, protocol.ConversationUpdated, c))
	for _, m := range msgs {
		frames = append(frames, protocol.MessageFrame(m))
	}
	return frames, nil
}

// forward hands a channel's messages, already frames, to one socket.
type forward struct {
	w       *Watcher
	conv    string
	sink    chatstream.Sink
	stopped bool // unwatched: nothing more is sent; guarded by Watcher.mu
}

func (f *forward) OnMessage(_ string, payload []byte) { f.w.live(f, payload) }
func (f *forward) OnResync(string)                    { f.w.refill(f) }
