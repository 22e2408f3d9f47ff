package streaming_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/streaming"
)

// newRedis connects to the test Redis and returns a key namespace of the
// test's own; the namespace's keys are deleted when the test ends.
func newRedis(tb testing.TB) (rueidis.Client, streaming.Keys) {
	tb.Helper()
	client, err := streaming.NewClient(testenv.RedisURL(tb), streaming.ClientConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	keys := streaming.Keys{Prefix: testenv.Namespace(tb)}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var cursor uint64
		for {
			e, err := client.Do(ctx, client.B().Scan().Cursor(cursor).Match(keys.Prefix+"*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				tb.Errorf("clean up keys: %v", err)
				break
			}
			if len(e.Elements) > 0 {
				client.Do(ctx, client.B().Del().Key(e.Elements...).Build())
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
		client.Close()
	})
	return client, keys
}

// subscriber records what a channel carries, from a dedicated pub/sub
// connection of its own.
type subscriber struct {
	mu      sync.Mutex
	msgs    []string
	changed chan struct{} // closed and replaced on every message
}

// subscribe subscribes to channel and returns once Redis confirmed it.
func subscribe(tb testing.TB, client rueidis.Client, channel string) *subscriber {
	tb.Helper()
	s := &subscriber{changed: make(chan struct{})}
	dc, release := client.Dedicate()
	tb.Cleanup(func() { dc.Close(); release() })
	dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: func(m rueidis.PubSubMessage) {
		s.mu.Lock()
		s.msgs = append(s.msgs, m.Message)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := dc.Do(ctx, dc.B().Subscribe().Channel(channel).Build()).Error(); err != nil {
		tb.Fatalf("subscribe %s: %v", channel, err)
	}
	return s
}

// wait waits until n messages arrived and returns them.
func (s *subscriber) wait(tb testing.TB, n int) []string {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		msgs, changed := append([]string(nil), s.msgs...), s.changed
		s.mu.Unlock()
		if len(msgs) >= n {
			return msgs
		}
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("got %d messages, want %d: %q", len(msgs), n, msgs)
		}
	}
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// A Redis with a memory limit and a policy that evicts is named as a risk;
// noeviction, or no limit at all, is not.
func TestEvictionRisk(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedisServer(t)
	client := hubClient(t, r.URL())
	for _, c := range []struct {
		maxmemory, policy string
		risk              bool
	}{
		{"0", "noeviction", false},
		{"0", "allkeys-lru", false}, // no limit: nothing is evicted
		{"100mb", "noeviction", false},
		{"100mb", "allkeys-lru", true},
		{"100mb", "volatile-ttl", true},
	} {
		r.Do("CONFIG", "SET", "maxmemory", c.maxmemory)
		r.Do("CONFIG", "SET", "maxmemory-policy", c.policy)
		risk, err := streaming.EvictionRisk(ctx, client)
		if err != nil {
			t.Fatal(err)
		}
		if got := risk != ""; got != c.risk || (c.risk && !strings.Contains(risk, c.policy)) {
			t.Errorf("maxmemory %s, %s: risk %q, want a risk: %v", c.maxmemory, c.policy, risk, c.risk)
		}
	}
	// On a cluster every master is read, and the risk names it.
	cluster := testenv.StartRedisCluster(t, 3)
	cc := hubClient(t, cluster.URL())
	if risk, err := streaming.EvictionRisk(ctx, cc); err != nil || risk != "" {
		t.Fatalf("a cluster with noeviction: %q, %v", risk, err)
	}
	cluster.Nodes[1].Do("CONFIG", "SET", "maxmemory", "100mb")
	cluster.Nodes[1].Do("CONFIG", "SET", "maxmemory-policy", "allkeys-lfu")
	risk, err := streaming.EvictionRisk(ctx, cc)
	if err != nil || strings.Count(risk, "allkeys-lfu") != 1 || !strings.Contains(risk, ":") {
		t.Fatalf("one master evicting: %q, %v", risk, err)
	}
}
