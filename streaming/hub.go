package streaming

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"runtime"
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
// Redis pub/sub connection. Channels are subscribed when their first handler
// arrives and unsubscribed when the last one leaves; one goroutine owns the
// connection and sends every SUBSCRIBE and UNSUBSCRIBE, so they reach Redis in
// the order the hub decided them. When the connection breaks, the hub
// reconnects with backoff, subscribes every channel again and asks every
// handler to resync, since pub/sub loses what is published meanwhile.
type Hub struct {
	client rueidis.Client
	cfg    HubConfig
	log    *slog.Logger
	seed   maphash.Seed

	mu       sync.RWMutex
	channels map[string]*hubChannel
	closed   bool

	// kick wakes the connection loop to reconcile subscriptions; buffered 1
	// so a wake-up is never lost and the sender never blocks.
	kick   chan struct{}
	shards []*shard
	stop   context.CancelFunc
	// done is closed by Close; it ends the waits of Subscribe calls.
	done chan struct{}
	wg   sync.WaitGroup // the connection loop and the shards

	// subscribed is what the current connection is subscribed to; owned by
	// the connection loop.
	subscribed map[string]struct{}
	connected  atomic.Bool
}

// registration is one Subscribe call; its address identifies it, so a
// handler may be any type, comparable or not, and may subscribe twice.
type registration struct{ Handler }

type hubChannel struct {
	name     string
	handlers atomic.Pointer[[]*registration] // copy-on-write, read by the dispatcher
	// ready is closed once the channel is subscribed on a connection.
	ready chan struct{}
	// live is true while the channel is subscribed on the current connection;
	// owned by the connection loop.
	live bool
}

// NewHub starts a hub on client. Close stops it.
func NewHub(client rueidis.Client, cfg HubConfig) *Hub {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		client:   client,
		cfg:      cfg,
		log:      cfg.Logger,
		seed:     maphash.MakeSeed(),
		channels: make(map[string]*hubChannel),
		kick:     make(chan struct{}, 1),
		stop:     cancel,
		done:     make(chan struct{}),
	}
	h.shards = make([]*shard, cfg.Shards)
	for i := range h.shards {
		s := &shard{hub: h, q: make(chan pubMsg, cfg.ShardQueue), wake: make(chan struct{}, 1), drops: map[string]struct{}{}}
		h.shards[i] = s
		h.wg.Add(1)
		// A shard's goroutine lives until Close cancels ctx.
		go func() { defer h.wg.Done(); s.run(ctx) }()
	}
	h.wg.Add(1)
	// The connection loop lives until Close cancels ctx.
	go func() { defer h.wg.Done(); h.connLoop(ctx) }()
	return h
}

// Connected reports whether the pub/sub connection is up.
func (h *Hub) Connected() bool { return h.connected.Load() }

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
		ch = &hubChannel{name: channel, ready: make(chan struct{})}
		ch.handlers.Store(&[]*registration{})
		h.channels[channel] = ch
		h.poke()
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
		h.poke()
	}
}

// poke wakes the connection loop without blocking.
func (h *Hub) poke() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Channels returns the number of channels subscribed on this node.
func (h *Hub) Channels() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.channels)
}

// Close unsubscribes everything, closes the pub/sub connection and waits for
// the hub's goroutines.
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
}

// onMessage runs on rueidis's reader goroutine: it must never block.
func (h *Hub) onMessage(m rueidis.PubSubMessage) {
	s := h.shards[maphash.String(h.seed, m.Channel)%uint64(len(h.shards))]
	select {
	case s.q <- pubMsg{channel: m.Channel, payload: []byte(m.Message)}:
	default:
		h.cfg.Metrics.HubDropped.Inc()
		s.dropped(m.Channel)
	}
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

// resyncAll asks every handler of every channel to resync.
func (h *Hub) resyncAll() {
	h.mu.RLock()
	chans := make([]*hubChannel, 0, len(h.channels))
	for _, ch := range h.channels {
		chans = append(chans, ch)
	}
	h.mu.RUnlock()
	for _, ch := range chans {
		for _, hd := range *ch.handlers.Load() {
			hd.OnResync(ch.name)
		}
	}
}

// shard is one dispatch goroutine and its queue.
type shard struct {
	hub *Hub
	q   chan pubMsg // buffered HubConfig.ShardQueue; filled by the reader goroutine
	// wake tells run that drops has entries; buffered 1, never blocks.
	wake  chan struct{}
	mu    sync.Mutex
	drops map[string]struct{} // channels that lost a message to a full queue
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
			for _, hd := range s.hub.lookup(m.channel) {
				hd.OnMessage(m.channel, m.payload)
			}
		case <-s.wake:
			s.mu.Lock()
			drops := s.drops
			s.drops = map[string]struct{}{}
			s.mu.Unlock()
			for ch := range drops {
				for _, hd := range s.hub.lookup(ch) {
					hd.OnResync(ch)
				}
			}
		}
	}
}

// connLoop owns the dedicated pub/sub connection: it connects, reconciles
// the subscribed channels with the wanted ones whenever kicked, and on a
// broken connection starts over after a backoff.
func (h *Hub) connLoop(ctx context.Context) {
	backoff := h.cfg.ReconnectMin
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return
		}
		err := h.session(ctx, attempt > 0)
		wasUp := h.connected.Swap(false)
		if ctx.Err() != nil {
			return
		}
		if wasUp {
			// A connection that worked starts a new series of attempts.
			backoff = h.cfg.ReconnectMin
		}
		h.log.Warn("redis pub/sub connection lost; reconnecting", "err", err, "backoff", backoff)
		// Jitter spreads the reconnects of many nodes after a Redis restart.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, h.cfg.ReconnectMax)
	}
}

// session runs one pub/sub connection until it breaks or ctx ends.
func (h *Hub) session(ctx context.Context, reconnect bool) error {
	dc, release := h.client.Dedicate()
	defer release()
	defer dc.Close()
	broken := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: h.onMessage})

	h.subscribed = make(map[string]struct{})
	h.mu.Lock()
	for _, ch := range h.channels {
		ch.live = false
	}
	h.mu.Unlock()
	if err := h.reconcile(ctx, dc); err != nil {
		return err
	}
	h.connected.Store(true)
	if reconnect {
		h.cfg.Metrics.HubReconnects.Inc()
		h.log.Info("redis pub/sub connection restored", "channels", h.Channels())
		// Everything published while we were away is gone from pub/sub.
		h.resyncAll()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-broken:
			if err == nil {
				err = errors.New("pub/sub connection closed")
			}
			return err
		case <-h.kick:
			if err := h.reconcile(ctx, dc); err != nil {
				return err
			}
		}
	}
}

// reconcile subscribes the wanted channels that are not live and
// unsubscribes the live ones no longer wanted.
func (h *Hub) reconcile(ctx context.Context, dc rueidis.DedicatedClient) error {
	h.mu.Lock()
	var add []*hubChannel
	for _, ch := range h.channels {
		if !ch.live {
			add = append(add, ch)
		}
	}
	h.mu.Unlock()

	var remove []string
	h.mu.RLock()
	for name := range h.subscribed {
		if _, ok := h.channels[name]; !ok {
			remove = append(remove, name)
		}
	}
	h.mu.RUnlock()
	if len(remove) > 0 {
		if err := dc.Do(ctx, dc.B().Unsubscribe().Channel(remove...).Build()).Error(); err != nil {
			return err
		}
		for _, name := range remove {
			delete(h.subscribed, name)
		}
	}
	if len(add) > 0 {
		names := make([]string, len(add))
		for i, ch := range add {
			names[i] = ch.name
		}
		// Redis runs one SUBSCRIBE for all of them; rueidis returns once it
		// is confirmed, and from then on every publish reaches the hooks.
		if err := dc.Do(ctx, dc.B().Subscribe().Channel(names...).Build()).Error(); err != nil {
			return err
		}
		h.mu.Lock()
		for _, ch := range add {
			ch.live = true
			h.subscribed[ch.name] = struct{}{}
			select {
			case <-ch.ready:
			default:
				close(ch.ready)
			}
		}
		h.mu.Unlock()
	}
	return nil
}
