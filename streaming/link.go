package streaming

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

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

// poke wakes the link's loop without blocking.
func (l *link) poke() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
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
		h.logger.Warn("redis pub/sub connection lost; reconnecting", "node", l.addr, "err", err, "backoff", backoff)
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
		h.logger.Info("redis pub/sub connection restored", "node", l.addr)
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
			if ch.liveOn != l.addr {
				h.cfg.Metrics.HubMoved.Inc()
			}
		}
		ch.wasLive, ch.liveOn = true, l.addr
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
		l.hub.logger.Debug("redis cluster: channel not served here; reading the slot map", "node", l.addr, "channel", chans[i].name, "err", err)
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
