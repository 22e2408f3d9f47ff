package streaming

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// refreshTopology asks the topology loop to read the slot map, without
// blocking.
func (h *Hub) refreshTopology() {
	select {
	case h.topo <- struct{}{}:
	default:
	}
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
			h.logger.Log(ctx, level, "redis cluster: read the slot map", "err", err, "retry_in", backoff)
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
