package worker_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/llm/llmtest"
	"github.com/chatstream/chatstream/streaming"
)

// countingClient is a Redis client that records every round trip it makes:
// a Do is one, a DoMulti (one pipelined write, one read) is one, and so are
// the commands of its dedicated connections (the hub's SUBSCRIBEs).
type countingClient struct {
	rueidis.Client
	trips *trips
}

// trips holds the commands of each round trip, copied.
type trips struct {
	mu   sync.Mutex
	list [][][]string
}

func (r *trips) add(cmds ...rueidis.Completed) {
	trip := make([][]string, len(cmds))
	for i := range cmds {
		for _, a := range cmds[i].Commands() {
			trip[i] = append(trip[i], strings.Clone(a)) // args may alias reused buffers
		}
	}
	r.mu.Lock()
	r.list = append(r.list, trip)
	r.mu.Unlock()
}

// about returns the round trips with a command whose arguments mention s.
func (r *trips) about(s string) [][][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][][]string
	for _, trip := range r.list {
		if mentions(trip, s) {
			out = append(out, trip)
		}
	}
	return out
}

func mentions(trip [][]string, s string) bool {
	for _, cmd := range trip {
		for _, a := range cmd {
			if strings.Contains(a, s) {
				return true
			}
		}
	}
	return false
}

func (c *countingClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.trips.add(cmd)
	return c.Client.Do(ctx, cmd)
}

func (c *countingClient) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	c.trips.add(multi...)
	return c.Client.DoMulti(ctx, multi...)
}

func (c *countingClient) Dedicate() (rueidis.DedicatedClient, func()) {
	dc, release := c.Client.Dedicate()
	return &countingDedicated{DedicatedClient: dc, trips: c.trips}, release
}

type countingDedicated struct {
	rueidis.DedicatedClient
	trips *trips
}

func (c *countingDedicated) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.trips.add(cmd)
	return c.DedicatedClient.Do(ctx, cmd)
}

func (c *countingDedicated) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	c.trips.add(multi...)
	return c.DedicatedClient.DoMulti(ctx, multi...)
}

// TestPool_RoundTripsPerChunk proves that a chunk costs one Redis round
// trip: a generation of N tokens makes N append round trips, each a single
// script call that carries the chunk, plus a number of round trips that does
// not depend on N (send, claim, cancel subscription, final status, done).
func TestPool_RoundTripsPerChunk(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := &trips{}
	n := e.startNode(t, nodeOpts{client: func() rueidis.Client {
		c, err := streaming.NewClient(testenv.RedisURL(t), streaming.ClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return &countingClient{Client: c, trips: rec}
	}})
	generate := func(tokens []string) (id string, trips [][][]string) {
		t.Helper()
		e.llm.Enqueue(llmtest.Script{Tokens: tokens})
		m := e.final(t, n.send(t, e.conversation(t), "q").ID)
		if m.Status != chatstream.StatusComplete || m.Content != strings.Join(tokens, "") {
			t.Fatalf("message = %+v", m)
		}
		e.checkStream(t, m)
		// The done frame is out: what is left of this stream's round trips
		// is the removal of the finished job and the hub's unsubscribe of
		// the cancel channel; they are the last.
		streamtest.Eventually(t, 10*time.Second, func() bool {
			var removed, unsubscribed bool
			for _, trip := range rec.about(m.ID) {
				removed = removed || trip[0][0] == "LREM"
				unsubscribed = unsubscribed || trip[0][0] == "UNSUBSCRIBE"
			}
			return removed && unsubscribed
		}, "the finished job was never removed, or its cancel channel never unsubscribed")
		return m.ID, rec.about(m.ID)
	}
	generate(streamtest.Tokens(2)) // loads the scripts, so that no EVALSHA falls back to EVAL below

	_, small := generate(streamtest.Tokens(3))
	_, large := generate(streamtest.Tokens(40))
	for _, c := range []struct {
		trips  [][][]string
		chunks int
	}{{small, 3}, {large, 40}} {
		appends := 0
		for _, trip := range c.trips {
			for _, cmd := range trip {
				for _, a := range cmd {
					if strings.HasPrefix(a, `{"type":"chunk"`) {
						if len(trip) != 1 || cmd[0] != "EVALSHA" {
							t.Fatalf("a chunk went out in %q, not as one script call", trip)
						}
						appends++
					}
				}
			}
		}
		if appends != c.chunks {
			t.Fatalf("%d append round trips for %d chunks", appends, c.chunks)
		}
	}
	if extra := (len(large) - 40) - (len(small) - 3); extra != 0 {
		t.Fatalf("3 chunks: %d round trips, 40 chunks: %d; the difference is not 1 per chunk", len(small), len(large))
	}
	var names []string
	for _, trip := range small {
		var cmds []string
		for _, cmd := range trip {
			cmds = append(cmds, cmd[0])
		}
		names = append(names, strings.Join(cmds, "+"))
	}
	t.Logf("a generation of N chunks costs N + %d Redis round trips; with 3: %s", len(small)-3, strings.Join(names, " "))
}
