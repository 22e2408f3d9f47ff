package app

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/streaming"
)

// refillMessages is how many of a conversation's newest messages a watcher
// gets again after a resync.
const refillMessages = 8

// recentMessages reads a conversation's newest messages, oldest first.
type recentMessages interface {
	RecentMessages(ctx context.Context, convID string, limit int) ([]*chatstream.Message, error)
}

// watcher forwards a conversation's message events to the sockets that
// watch it. Events travel by pub/sub, which loses what is published while
// the node's connection is down or the conversation's slot moves; after such
// a resync each watching socket gets the conversation's newest messages again
// as message events, read from Postgres once per conversation for all its
// watchers on the node. A client may so see a message's state twice, never
// miss its last one.
type watcher struct {
	hub  *streaming.Hub
	keys streaming.Keys
	msgs recentMessages
	log  *slog.Logger

	ctx    context.Context // ends at close
	cancel context.CancelFunc
	wg     sync.WaitGroup // refills under way

	mu      sync.Mutex
	closed  bool
	pending map[string][]*forward // conversation → watchers waiting for a refill
}

func newWatcher(hub *streaming.Hub, keys streaming.Keys, msgs recentMessages, log *slog.Logger) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &watcher{hub: hub, keys: keys, msgs: msgs, log: log, ctx: ctx, cancel: cancel, pending: map[string][]*forward{}}
}

// Watch implements server.Watcher.
func (w *watcher) Watch(ctx context.Context, convID string, sink server.Sink) (func(), error) {
	f := &forward{w: w, conv: convID, sink: sink}
	unsub, err := w.hub.Subscribe(ctx, w.keys.ConversationChannel(convID), f)
	if err != nil {
		return nil, err
	}
	return func() { f.stopped.Store(true); unsub() }, nil
}

// close stops the refills under way and waits for them.
func (w *watcher) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
}

// refill queues f for the conversation's next read, starting one unless it
// is under way.
func (w *watcher) refill(f *forward) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	waiting, busy := w.pending[f.conv]
	w.pending[f.conv] = append(waiting, f)
	if !busy {
		w.wg.Add(1)
	}
	w.mu.Unlock()
	if busy {
		return
	}
	// The read lives at most 10 s, or until close.
	go func() {
		defer w.wg.Done()
		ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
		defer cancel()
		msgs, err := w.msgs.RecentMessages(ctx, f.conv, refillMessages)
		w.mu.Lock()
		fs := w.pending[f.conv]
		delete(w.pending, f.conv)
		w.mu.Unlock()
		if err != nil {
			w.log.Warn("refill watchers after a resync", "conversation_id", f.conv, "err", err)
			return
		}
		frames := make([][]byte, len(msgs))
		for i, m := range msgs {
			frames[i] = streaming.MessageFrame(m)
		}
		for _, f := range fs {
			for _, fr := range frames {
				if f.stopped.Load() || !f.sink.Send(fr) {
					break
				}
			}
		}
	}()
}

// forward hands a channel's messages, already frames, to one socket.
type forward struct {
	w       *watcher
	conv    string
	sink    server.Sink
	stopped atomic.Bool // unwatched: nothing more is sent
}

func (f *forward) OnMessage(_ string, payload []byte) { f.sink.Send(payload) }
func (f *forward) OnResync(string)                    { f.w.refill(f) }
