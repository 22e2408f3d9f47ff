package streaming

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// Handler receives the messages of the channels it subscribed to.
type Handler interface {
	// OnMessage is called with each message of channel, in publish order, on
	// the channel's dispatch goroutine. It must return quickly and must not
	// keep payload beyond the call unless it treats it as read-only: the same
	// bytes go to every handler of the channel.
	OnMessage(channel string, payload []byte)
	// OnResync is called when messages of channel may have been lost: after
	// a reconnect of the pub/sub connection, or when the node could not keep
	// up. The handler refills from history.
	OnResync(channel string)
}

// HubConfig tunes the hub. Zero values take the defaults.
type HubConfig struct {
	// Shards is the number of dispatch goroutines; a channel always goes to
	// the same one, so its order is kept. Default 4×GOMAXPROCS.
	Shards int
	// ShardQueue is each dispatch goroutine's queue. When it is full the
	// message is dropped and the channel's handlers resync. Default 8192.
	ShardQueue int
	// BehindAfter is how long a message may wait for its dispatch goroutine
	// before the hub counts as behind (Behind). Default 20ms.
	BehindAfter time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between reconnects.
	// Defaults 50ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	Logger                     *slog.Logger
	// Metrics, if set, counts the hub's events.
	Metrics *Metrics
}

func (c *HubConfig) setDefaults() {
	if c.Shards <= 0 {
		c.Shards = 4 * runtime.GOMAXPROCS(0)
	}
	if c.ShardQueue <= 0 {
		c.ShardQueue = 8192
	}
	if c.BehindAfter <= 0 {
		c.BehindAfter = 20 * time.Millisecond
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = 50 * time.Millisecond
	}
	if c.ReconnectMax <= 0 {
		c.ReconnectMax = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// ErrHubClosed is returned by Subscribe after Close.
var ErrHubClosed = errors.New("hub closed")

// Hub multiplexes every channel subscription of a node over one dedicated
// Redis pub/sub connection per Redis shard: one on a single Redis (classic
// SUBSCRIBE), one per master on a Redis Cluster (sharded SSUBSCRIBE, each
// channel on the shard that serves its slot). Channels are subscribed when
// their first handler arrives and unsubscribed when the last one leaves; one
// goroutine per connection owns it and sends every subscribe and
// unsubscribe, so they reach Redis in the order the hub decided them. When a
// connection breaks, the hub reconnects with backoff and subscribes its
// channels again; when a cluster moves a slot, its channels move to the new
// shard's connection. Either way pub/sub lost what was published meanwhile,
// so the handlers of every channel that was live before are asked to resync.
type Hub struct {
	client  rueidis.Client
	sharded bool // a Redis Cluster: sharded pub/sub, one link per master
	cfg     HubConfig
	logger  *slog.Logger
	seed    maphash.Seed
	start   time.Time // the messages' queueing times are since then

	mu       sync.RWMutex
	channels map[string]*hubChannel
	closed   bool
	links    map[string]*link // by master address; "" is the single Redis
	slots    []string         // cluster: slot → master address ("" unknown)

	ctx    context.Context // ends at Close
	shards []*shard
	stop   context.CancelFunc
	// done is closed by Close; it ends the waits of Subscribe calls.
	done chan struct{}
	// topo asks the topology loop to read the cluster's slot map again;
	// buffered 1, never blocks.
	topo chan struct{}
	wg   sync.WaitGroup // the links' loops, the topology loop, the shards
}

// registration is one Subscribe call; its address identifies it, so a
// handler may be any type, comparable or not, and may subscribe twice.
type registration struct{ Handler }

type hubChannel struct {
	name     string
	slot     int
	handlers atomic.Pointer[[]*registration] // copy-on-write, read by the dispatcher
	// ready is closed once the channel is subscribed on a connection.
	ready chan struct{}
	// The fields below are guarded by Hub.mu.
	link    *link // the connection it belongs on; nil until the slot's shard is known
	live    bool  // subscribed on link's current connection
	wasLive bool  // was live before: when live again, its handlers resync
	// liveOn is the master it was last live on: live again on another one
	// counts as moved (a stale slot map on the way does not).
	liveOn string
}

// NewHub starts a hub on client. Close stops it.
func NewHub(client rueidis.Client, cfg HubConfig) *Hub {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		client:   client,
		sharded:  sharded(client),
		cfg:      cfg,
		logger:   cfg.Logger,
		seed:     maphash.MakeSeed(),
		start:    time.Now(),
		channels: make(map[string]*hubChannel),
		links:    make(map[string]*link),
		ctx:      ctx,
		stop:     cancel,
		done:     make(chan struct{}),
		topo:     make(chan struct{}, 1),
	}
	h.shards = make([]*shard, cfg.Shards)
	for i := range h.shards {
		s := &shard{hub: h, q: make(chan pubMsg, cfg.ShardQueue), wake: make(chan struct{}, 1), drops: map[string]struct{}{}}
		h.shards[i] = s
		h.wg.Add(1)
		// A shard's goroutine lives until Close cancels ctx.
		go func() { defer h.wg.Done(); s.run(ctx) }()
	}
	if h.sharded {
		h.slots = make([]string, slotCount)
		h.wg.Add(1)
		// The topology loop lives until Close cancels ctx.
		go func() { defer h.wg.Done(); h.topologyLoop(ctx) }()
	} else {
		h.mu.Lock()
		h.addLinkLocked("", client)
		h.mu.Unlock()
	}
	return h
}

// Connected reports whether every pub/sub connection is up.
func (h *Hub) Connected() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if len(h.links) == 0 {
		return false
	}
	for _, l := range h.links {
		if !l.connected.Load() {
			return false
		}
	}
	return true
}

// Subscribe adds handler to channel and returns once the channel is
// subscribed in Redis, so that everything published after Subscribe returns
// reaches handler (or a resync says it may not have). The returned function
// removes the handler; it is safe to call more than once.
func (h *Hub) Subscribe(ctx context.Context, channel string, handler Handler) (unsubscribe func(), err error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrHubClosed
	}
	ch := h.channels[channel]
	if ch == nil {
		ch = &hubChannel{name: channel, slot: Slot(channel), ready: make(chan struct{})}
		ch.handlers.Store(&[]*registration{})
		h.channels[channel] = ch
		ch.link = h.linkForLocked(ch.slot)
		if ch.link != nil {
			ch.link.poke()
		} else {
			h.refreshTopology()
		}
	}
	reg := &registration{handler}
	old := *ch.handlers.Load()
	next := make([]*registration, len(old), len(old)+1)
	copy(next, old)
	next = append(next, reg)
	ch.handlers.Store(&next)
	h.mu.Unlock()

	var once sync.Once
	unsubscribe = func() { once.Do(func() { h.remove(ch, reg) }) }
	select {
	case <-ch.ready:
		return unsubscribe, nil
	case <-ctx.Done():
		unsubscribe()
		return nil, ctx.Err()
	case <-h.done:
		unsubscribe()
		return nil, ErrHubClosed
	}
}

// linkForLocked returns the link of slot; h.mu is held.
func (h *Hub) linkForLocked(slot int) *link {
	if !h.sharded {
		return h.links[""]
	}
	return h.links[h.slots[slot]]
}

func (h *Hub) remove(ch *hubChannel, reg *registration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := *ch.handlers.Load()
	next := make([]*registration, 0, len(old))
	for _, x := range old {
		if x != reg {
			next = append(next, x)
		}
	}
	ch.handlers.Store(&next)
	if len(next) == 0 && h.channels[ch.name] == ch {
		delete(h.channels, ch.name)
		if ch.link != nil {
			ch.link.poke()
		}
	}
}

// Channels returns the number of channels subscribed on this node.
func (h *Hub) Channels() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.channels)
}

// Close unsubscribes everything, closes the pub/sub connections and waits
// for the hub's goroutines.
func (h *Hub) Close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
	h.mu.Unlock()
	h.stop()
	h.wg.Wait()
}

// pubMsg is one message on its way to a dispatch goroutine.
type pubMsg struct {
	channel string
	payload []byte
	at      time.Duration // when it was queued, since Hub.start
}

// onMessage runs on rueidis's reader goroutine: it must never block.
func (h *Hub) onMessage(m rueidis.PubSubMessage) {
	s := h.shardOf(m.Channel)
	select {
	case s.q <- pubMsg{channel: m.Channel, payload: []byte(m.Message), at: time.Since(h.start)}:
	default:
		h.cfg.Metrics.HubDropped.Inc()
		s.dropped(m.Channel)
	}
}

// Behind reports whether the message of channel being dispatched (or the
// last one dispatched on its goroutine) waited longer than
// HubConfig.BehindAfter to be: the node is not keeping up with what Redis
// publishes. A handler then queues its frames for the sockets' writers,
// which write a socket's queued frames together, rather than write each at
// once.
func (h *Hub) Behind(channel string) bool {
	return h.shardOf(channel).late.Load()
}

func (h *Hub) shardOf(channel string) *shard {
	return h.shards[maphash.String(h.seed, channel)%uint64(len(h.shards))]
}

func (h *Hub) lookup(channel string) []*registration {
	h.mu.RLock()
	ch := h.channels[channel]
	h.mu.RUnlock()
	if ch == nil {
		return nil
	}
	return *ch.handlers.Load()
}

// shard is one dispatch goroutine and its queue.
type shard struct {
	hub *Hub
	q   chan pubMsg // buffered HubConfig.ShardQueue; filled by the reader goroutine
	// wake tells run that drops has entries; buffered 1, never blocks.
	wake  chan struct{}
	mu    sync.Mutex
	drops map[string]struct{} // channels that lost a message to a full queue
	// late: the message being dispatched waited longer than BehindAfter.
	late atomic.Bool
}

func (s *shard) dropped(channel string) {
	s.mu.Lock()
	s.drops[channel] = struct{}{}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *shard) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-s.q:
			s.late.Store(time.Since(s.hub.start)-m.at > s.hub.cfg.BehindAfter)
			for _, hd := range s.hub.lookup(m.channel) {
				s.hub.call(hd, m.channel, m.payload, false)
			}
		case <-s.wake:
			s.mu.Lock()
			drops := s.drops
			s.drops = map[string]struct{}{}
			s.mu.Unlock()
			for ch := range drops {
				for _, hd := range s.hub.lookup(ch) {
					s.hub.call(hd, ch, nil, true)
				}
			}
		}
	}
}

// call hands one message (or a resync) to a handler. A handler's panic is
// logged and goes no further: the shard (or the link) goes on serving its
// other channels.
func (h *Hub) call(hd Handler, channel string, payload []byte, resync bool) {
	defer func() {
		if v := recover(); v != nil {
			h.cfg.Metrics.HubPanics.Inc()
			h.logger.Error("panic in a pub/sub handler", "channel", channel, "panic", v, "stack", string(debug.Stack()))
		}
	}()
	if resync {
		hd.OnResync(channel)
		return
	}
	hd.OnMessage(channel, payload)
}
