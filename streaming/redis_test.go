package streaming_test

import (
	"context"
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
