package streaming

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/debug"
	"strconv"
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
	log     *slog.Logger
	seed    maphash.Seed

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
}

// link is one dedicated pub/sub connection, to one shard.
type link struct {
	hub    *Hub
	addr   string
	client rueidis.Client
	// kick wakes the link's loop to reconcile subscriptions; buffered 1 so a
	// wake-up is never lost and the sender never blocks.
	kick      chan struct{}
	stop      context.CancelFunc
	connected atomic.Bool
	// subscribed is what the current connection is subscribed to; owned by
	// the link's loop.
	subscribed map[string]struct{}
	// lost are channels Redis unsubscribed by itself (a cluster moved their
	// slot); set by rueidis's reader goroutine, taken by the loop.
	lostMu sync.Mutex
	lost   []string
}

// NewHub starts a hub on client. Close stops it.
func NewHub(client rueidis.Client, cfg HubConfig) *Hub {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		client:   client,
		sharded:  sharded(client),
		cfg:      cfg,
		log:      cfg.Logger,
		seed:     maphash.MakeSeed(),
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

// addLinkLocked starts the loop of a new link; h.mu is held.
func (h *Hub) addLinkLocked(addr string, client rueidis.Client) *link {
	ctx, cancel := context.WithCancel(h.ctx)
	l := &link{hub: h, addr: addr, client: client, kick: make(chan struct{}, 1), stop: cancel}
	h.links[addr] = l
	h.wg.Add(1)
	// A link's loop lives until the link is dropped or Close cancels ctx.
	go func() { defer h.wg.Done(); l.connLoop(ctx) }()
	return l
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

// poke wakes the link's loop without blocking.
func (l *link) poke() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// refreshTopology asks the topology loop to read the slot map, without
// blocking.
func (h *Hub) refreshTopology() {
	select {
	case h.topo <- struct{}{}:
	default:
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
			h.log.Error("panic in a pub/sub handler", "channel", channel, "panic", v, "stack", string(debug.Stack()))
		}
	}()
	if resync {
		hd.OnResync(channel)
		return
	}
	hd.OnMessage(channel, payload)
}

// connLoop owns the link's dedicated pub/sub connection: it connects,
// reconciles the subscribed channels with the wanted ones whenever kicked,
// and on a broken connection starts over after a backoff.
func (l *link) connLoop(ctx context.Context) {
	h := l.hub
	backoff := h.cfg.ReconnectMin
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return
		}
		err := l.session(ctx, attempt > 0)
		wasUp := l.connected.Swap(false)
		if ctx.Err() != nil {
			return
		}
		if wasUp {
			// A connection that worked starts a new series of attempts.
			backoff = h.cfg.ReconnectMin
		}
		h.log.Warn("redis pub/sub connection lost; reconnecting", "node", l.addr, "err", err, "backoff", backoff)
		if h.sharded {
			// The shard may have failed over to another node.
			h.refreshTopology()
		}
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
func (l *link) session(ctx context.Context, reconnect bool) error {
	h := l.hub
	client := l.client
	if h.sharded {
		// The client's connection to a node may have been replaced since
		// the link started: take the current one.
		if client = h.client.Nodes()[l.addr]; client == nil {
			return fmt.Errorf("node %s unknown to the client", l.addr)
		}
	}
	dc, release := client.Dedicate()
	defer release()
	defer dc.Close()
	broken := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: h.onMessage, OnSubscription: l.onSubscription})

	l.subscribed = make(map[string]struct{})
	h.mu.Lock()
	for _, ch := range h.channels {
		if ch.link == l {
			ch.live = false
		}
	}
	h.mu.Unlock()
	if err := l.reconcile(ctx, dc); err != nil {
		return err
	}
	l.connected.Store(true)
	if reconnect {
		h.cfg.Metrics.HubReconnects.Inc()
		h.log.Info("redis pub/sub connection restored", "node", l.addr)
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
		case <-l.kick:
			if err := l.reconcile(ctx, dc); err != nil {
				return err
			}
		}
	}
}

// onSubscription runs on rueidis's reader goroutine. A sunsubscribe the hub
// did not ask for means the cluster moved the channel's slot away from this
// shard (our own unsubscribes are told apart by the loop).
func (l *link) onSubscription(s rueidis.PubSubSubscription) {
	if s.Kind != "sunsubscribe" {
		return
	}
	l.lostMu.Lock()
	l.lost = append(l.lost, s.Channel)
	l.lostMu.Unlock()
	l.poke()
}

// reconcile subscribes the wanted channels that are not live and
// unsubscribes the live ones no longer wanted. Channels that were live
// before are resynced once live again.
func (l *link) reconcile(ctx context.Context, dc rueidis.DedicatedClient) error {
	h := l.hub
	l.lostMu.Lock()
	lost := l.lost
	l.lost = nil
	l.lostMu.Unlock()

	var add []*hubChannel
	var remove []string
	h.mu.Lock()
	for _, name := range lost {
		if _, ok := l.subscribed[name]; !ok {
			continue // the answer to our own unsubscribe
		}
		delete(l.subscribed, name)
		if ch := h.channels[name]; ch != nil && ch.link == l {
			// Its slot is served elsewhere now: it waits for the slot map
			// rather than being subscribed here again.
			ch.live, ch.link = false, nil
		}
		h.refreshTopology()
	}
	for _, ch := range h.channels {
		if ch.link == l && !ch.live {
			add = append(add, ch)
		}
	}
	for name := range l.subscribed {
		if ch, ok := h.channels[name]; !ok || ch.link != l {
			remove = append(remove, name)
		}
	}
	h.mu.Unlock()

	if len(remove) > 0 {
		if err := l.unsubscribe(ctx, dc, remove); err != nil {
			return err
		}
		for _, name := range remove {
			delete(l.subscribed, name)
		}
	}
	if len(add) == 0 {
		return nil
	}
	ok, err := l.subscribe(ctx, dc, add)
	if err != nil {
		return err
	}
	var resync []*hubChannel
	h.mu.Lock()
	for i, ch := range add {
		if !ok[i] {
			if ch.link == l {
				ch.link = nil // not served here (MOVED): wait for the slot map
			}
			continue
		}
		l.subscribed[ch.name] = struct{}{}
		if ch.link != l || h.channels[ch.name] != ch {
			continue // moved or dropped meanwhile; the next reconcile sorts it out
		}
		ch.live = true
		if ch.wasLive {
			resync = append(resync, ch)
		}
		ch.wasLive = true
		select {
		case <-ch.ready:
		default:
			close(ch.ready)
		}
	}
	h.mu.Unlock()
	if len(resync) > 0 {
		// Subscribed again: the link is up before its followers hear of it.
		l.connected.Store(true)
	}
	for _, ch := range resync {
		for _, hd := range *ch.handlers.Load() {
			h.call(hd, ch.name, nil, true)
		}
	}
	return nil
}

// subscribe subscribes chans and reports which are subscribed. Redis runs
// one SUBSCRIBE for all of them on a single Redis; on a cluster each SSUBSCRIBE
// names one slot, and one the shard does not serve (MOVED: the slot map
// changed) is left for the next topology refresh. rueidis returns once Redis
// confirmed, and from then on every publish reaches the hooks.
func (l *link) subscribe(ctx context.Context, dc rueidis.DedicatedClient, chans []*hubChannel) ([]bool, error) {
	ok := make([]bool, len(chans))
	if !l.hub.sharded {
		names := make([]string, len(chans))
		for i, ch := range chans {
			names[i] = ch.name
		}
		if err := dc.Do(ctx, dc.B().Subscribe().Channel(names...).Build()).Error(); err != nil {
			return nil, err
		}
		for i := range ok {
			ok[i] = true
		}
		return ok, nil
	}
	cmds := make(rueidis.Commands, len(chans))
	for i, ch := range chans {
		cmds[i] = dc.B().Ssubscribe().Channel(ch.name).Build()
	}
	for i, r := range dc.DoMulti(ctx, cmds...) {
		err := r.Error()
		if err == nil {
			ok[i] = true
			continue
		}
		if _, isRedis := rueidis.IsRedisErr(err); !isRedis {
			return nil, err
		}
		l.hub.log.Debug("redis cluster: channel not served here; reading the slot map", "node", l.addr, "channel", chans[i].name, "err", err)
		l.hub.refreshTopology()
	}
	return ok, nil
}

func (l *link) unsubscribe(ctx context.Context, dc rueidis.DedicatedClient, names []string) error {
	if !l.hub.sharded {
		return dc.Do(ctx, dc.B().Unsubscribe().Channel(names...).Build()).Error()
	}
	cmds := make(rueidis.Commands, len(names))
	for i, name := range names {
		cmds[i] = dc.B().Sunsubscribe().Channel(name).Build()
	}
	for _, r := range dc.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			if _, isRedis := rueidis.IsRedisErr(err); !isRedis {
				return err
			}
		}
	}
	return nil
}

// errMastersUnknown means CLUSTER SHARDS names masters the client has no
// connection to yet (it learns them on its own after a failover).
var errMastersUnknown = errors.New("masters not known to the client yet")

// topologyInterval is how often a hub on a cluster reads the slot map when
// nothing asked it to.
const topologyInterval = 10 * time.Second

// topologyLoop keeps the cluster's slot map and the links to its masters
// current: at start, when asked (a MOVED answer, a slot moved away, a lost
// connection), and every topologyInterval.
func (h *Hub) topologyLoop(ctx context.Context) {
	backoff := h.cfg.ReconnectMin
	// gather is the pause before a requested read. It doubles while requests
	// keep coming right after reads (masters that disagree about a slot
	// answer MOVED back and forth), and falls back once they stop.
	gather := h.cfg.ReconnectMin
	var lastRead time.Time
	tick := time.NewTicker(topologyInterval)
	defer tick.Stop()
	for {
		lastRead = time.Now()
		if err := h.loadTopology(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			level := slog.LevelWarn
			if errors.Is(err, errMastersUnknown) {
				level = slog.LevelInfo // a failover the client has not caught up with yet
			}
			h.log.Log(ctx, level, "redis cluster: read the slot map", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, h.cfg.ReconnectMax)
			continue
		}
		backoff = h.cfg.ReconnectMin
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			gather = h.cfg.ReconnectMin
		case <-h.topo:
			if time.Since(lastRead) < time.Second {
				gather = min(gather*2, h.cfg.ReconnectMax)
			} else {
				gather = h.cfg.ReconnectMin
			}
			// Requests come in bursts (every channel of a moved slot): let
			// them gather, then read once.
			select {
			case <-ctx.Done():
				return
			case <-time.After(gather):
			}
			select {
			case <-h.topo:
			default:
			}
		}
	}
}

// loadTopology reads CLUSTER SHARDS and points every channel at the link of
// the master that serves its slot, starting links to new masters and
// stopping those to nodes that serve nothing any more. A channel that
// changes link is subscribed on the new one and its handlers resync.
func (h *Hub) loadTopology(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	shards, err := h.client.Do(rctx, h.client.B().ClusterShards().Build()).ToArray()
	if err != nil {
		return err
	}
	nodes := h.client.Nodes()
	slots := make([]string, slotCount)
	masters := make(map[string]rueidis.Client)
	var missing []string
	for _, sh := range shards {
		m, err := sh.AsMap()
		if err != nil {
			return err
		}
		slotsMsg, nodesMsg := m["slots"], m["nodes"]
		ranges, err := slotsMsg.AsIntSlice()
		if err != nil {
			return err
		}
		members, err := nodesMsg.ToArray()
		if err != nil {
			return err
		}
		addr, client := "", rueidis.Client(nil)
		for _, n := range members {
			nm, err := n.AsMap()
			if err != nil {
				return err
			}
			role, portMsg, tlsPortMsg := nm["role"], nm["port"], nm["tls-port"]
			if r, _ := role.ToString(); r != "master" {
				continue
			}
			port, _ := portMsg.AsInt64()
			if port == 0 {
				port, _ = tlsPortMsg.AsInt64() // a TLS-only cluster names only tls-port
			}
			for _, host := range []string{"endpoint", "ip"} {
				hm := nm[host]
				if v, err := hm.ToString(); err == nil && v != "" {
					a := net.JoinHostPort(v, strconv.FormatInt(port, 10))
					if c := nodes[a]; c != nil {
						addr, client = a, c
						break
					}
					if addr == "" {
						addr = a
					}
				}
			}
		}
		if addr == "" || len(ranges) == 0 {
			continue // a shard without a master or without slots
		}
		if client == nil {
			missing = append(missing, addr) // the client has not met it yet
			continue
		}
		masters[addr] = client
		for i := 0; i+1 < len(ranges); i += 2 {
			for s := ranges[i]; s <= ranges[i+1] && s < slotCount; s++ {
				slots[s] = addr
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.slots = slots
	for addr, l := range h.links {
		if _, ok := masters[addr]; !ok {
			l.stop()
			delete(h.links, addr)
		}
	}
	for addr, c := range masters {
		if h.links[addr] == nil {
			h.addLinkLocked(addr, c)
		}
	}
	for _, ch := range h.channels {
		if nl := h.links[slots[ch.slot]]; nl != ch.link {
			if ch.link != nil {
				ch.link.poke() // the old link unsubscribes it
			}
			if ch.wasLive && nl != nil {
				h.cfg.Metrics.HubMoved.Inc()
			}
			ch.link, ch.live = nl, false
			if nl != nil {
				nl.poke()
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %v", errMastersUnknown, missing)
	}
	return nil
}
