package streaming_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/streaming"
)

func newQueues(tb testing.TB, cfg streaming.QueueConfig, nodes ...string) (rueidis.Client, streaming.Keys, []*streaming.Queue) {
	tb.Helper()
	client, keys := newRedis(tb)
	var qs []*streaming.Queue
	for _, n := range nodes {
		qs = append(qs, streaming.NewQueue(client, keys, n, cfg))
	}
	return client, keys, qs
}

func lrange(tb testing.TB, client rueidis.Client, key string) []string {
	tb.Helper()
	v, err := client.Do(ctxT(tb), client.B().Lrange().Key(key).Start(0).Stop(-1).Build()).AsStrSlice()
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func take(tb testing.TB, q *streaming.Queue) streaming.Taken {
	tb.Helper()
	t, ok, err := q.Take(ctxT(tb))
	if err != nil || !ok {
		tb.Fatalf("take: ok=%v err=%v", ok, err)
	}
	return t
}

func TestQueue_Take(t *testing.T) {
	client, keys, qs := newQueues(t, streaming.QueueConfig{BlockTimeout: 100 * time.Millisecond}, "a")
	q := qs[0]
	ctx := ctxT(t)

	t.Run("times out without a job", func(t *testing.T) {
		start := time.Now()
		_, ok, err := q.Take(ctx)
		if err != nil || ok {
			t.Fatalf("take from an empty queue: ok=%v err=%v", ok, err)
		}
		if time.Since(start) < 50*time.Millisecond {
			t.Fatalf("take returned after %s without blocking", time.Since(start))
		}
	})
	t.Run("first in, first out, into the processing list", func(t *testing.T) {
		for _, id := range []string{"j1", "j2"} {
			if err := q.Enqueue(ctx, chatstream.Job{StreamID: id, ConversationID: "c", UserID: "u", EnqueuedAt: 1}); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := q.Pending(ctx); err != nil || n != 2 {
			t.Fatalf("pending = %d, %v", n, err)
		}
		j1 := take(t, q)
		if j1.Job != (chatstream.Job{StreamID: "j1", ConversationID: "c", UserID: "u", EnqueuedAt: 1}) {
			t.Fatalf("took %+v, want j1", j1.Job)
		}
		if got := lrange(t, client, keys.Processing("a")); !slices.Equal(got, []string{j1.Raw}) {
			t.Fatalf("processing = %q", got)
		}
		j2 := take(t, q)
		if j2.Job.StreamID != "j2" {
			t.Fatalf("took %+v, want j2", j2.Job)
		}
		for _, j := range []streaming.Taken{j1, j2} {
			if err := q.Done(ctx, j.Raw); err != nil {
				t.Fatal(err)
			}
		}
		if got := lrange(t, client, keys.Processing("a")); len(got) != 0 {
			t.Fatalf("processing after done = %q", got)
		}
	})
	t.Run("a malformed job is dropped", func(t *testing.T) {
		client.Do(ctx, client.B().Lpush().Key(keys.Pending()).Element("not json").Build())
		if _, ok, err := q.Take(ctx); err == nil || ok {
			t.Fatalf("take of a malformed job: ok=%v err=%v", ok, err)
		}
		if got := lrange(t, client, keys.Processing("a")); len(got) != 0 {
			t.Fatalf("processing = %q", got)
		}
	})
}

func TestQueue_Requeue(t *testing.T) {
	client, keys, qs := newQueues(t, streaming.QueueConfig{BlockTimeout: 100 * time.Millisecond}, "a")
	q := qs[0]
	ctx := ctxT(t)
	if err := q.Enqueue(ctx, chatstream.Job{StreamID: "j1"}); err != nil {
		t.Fatal(err)
	}
	j1 := take(t, q)
	for _, id := range []string{"j2", "j3"} {
		if err := q.Enqueue(ctx, chatstream.Job{StreamID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Requeue(ctx, j1.Raw); err != nil {
		t.Fatal(err)
	}
	if got := lrange(t, client, keys.Processing("a")); len(got) != 0 {
		t.Fatalf("processing after requeue = %q", got)
	}
	var order []string
	for range 3 {
		order = append(order, take(t, q).Job.StreamID)
	}
	if !slices.Equal(order, []string{"j1", "j2", "j3"}) {
		t.Fatalf("order after requeue = %v, want j1 first", order)
	}
	// A job no longer in the processing list is not requeued twice.
	if err := q.Requeue(ctx, j1.Raw); err != nil {
		t.Fatal(err)
	}
	if err := q.Requeue(ctx, j1.Raw); err != nil {
		t.Fatal(err)
	}
	if n, _ := q.Pending(ctx); n != 1 {
		t.Fatalf("pending = %d, want 1", n)
	}
}

func TestQueue_Adopt(t *testing.T) {
	cfg := streaming.QueueConfig{HeartbeatTTL: 200 * time.Millisecond, BlockTimeout: 100 * time.Millisecond}
	client, keys, qs := newQueues(t, cfg, "alive", "dying")
	alive, dying := qs[0], qs[1]
	ctx := ctxT(t)
	for _, q := range qs {
		if err := q.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if dead, err := alive.DeadNodes(ctx); err != nil || len(dead) != 0 {
		t.Fatalf("dead nodes while all beat = %v, %v", dead, err)
	}
	for _, id := range []string{"j1", "j2"} {
		if err := dying.Enqueue(ctx, chatstream.Job{StreamID: id}); err != nil {
			t.Fatal(err)
		}
	}
	taken := []streaming.Taken{take(t, dying), take(t, dying)}

	// The dying node stops beating; the alive one keeps on.
	deadline := time.Now().Add(10 * time.Second)
	var dead []string
	for {
		if err := alive.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
		var err error
		if dead, err = alive.DeadNodes(ctx); err != nil {
			t.Fatal(err)
		}
		if len(dead) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // poll tick
	}
	if !slices.Equal(dead, []string{"dying"}) {
		t.Fatalf("dead nodes = %v, want [dying]", dead)
	}
	var adopted []string
	for {
		tk, ok, err := alive.Adopt(ctx, "dying")
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		adopted = append(adopted, tk.Raw)
	}
	slices.Sort(adopted)
	want := []string{taken[0].Raw, taken[1].Raw}
	slices.Sort(want)
	if !slices.Equal(adopted, want) {
		t.Fatalf("adopted %q, want %q", adopted, want)
	}
	got := lrange(t, client, keys.Processing("alive"))
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("processing of the adopter = %q", got)
	}
	// The emptied dead node is forgotten.
	members, err := client.Do(ctx, client.B().Smembers().Key(keys.Nodes()).Build()).AsStrSlice()
	if err != nil || !slices.Equal(members, []string{"alive"}) {
		t.Fatalf("nodes = %v, %v; want [alive]", members, err)
	}
	if dead, err := alive.DeadNodes(ctx); err != nil || len(dead) != 0 {
		t.Fatalf("dead nodes after adoption = %v, %v", dead, err)
	}

	if err := alive.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if members, _ := client.Do(ctx, client.B().Smembers().Key(keys.Nodes()).Build()).AsStrSlice(); len(members) != 0 {
		t.Fatalf("nodes after leave = %v", members)
	}
}

// One user's backlog does not delay another user's first job behind it:
// jobs are served a round at a time, one per user per round.
func TestQueue_FairBetweenUsers(t *testing.T) {
	_, _, qs := newQueues(t, streaming.QueueConfig{BlockTimeout: 100 * time.Millisecond}, "a")
	q := qs[0]
	ctx := ctxT(t)
	enqueue := func(user string, n int) {
		for i := range n {
			if err := q.Enqueue(ctx, chatstream.Job{StreamID: fmt.Sprintf("%s%d", user, i), UserID: user}); err != nil {
				t.Fatal(err)
			}
		}
	}
	enqueue("greedy", 20)
	take(t, q) // greedy0 runs
	enqueue("b", 1)
	enqueue("c", 2)
	var order []string
	for range 22 {
		order = append(order, take(t, q).Job.StreamID)
	}
	want := []string{"greedy1", "b0", "c0", "greedy2", "c1", "greedy3"}
	if !slices.Equal(order[:len(want)], want) {
		t.Fatalf("order %q, want it to start %q", order, want)
	}
	if n, err := q.Pending(ctx); err != nil || n != 0 {
		t.Fatalf("pending after taking all = %d, %v", n, err)
	}
}

// A ticket left in a dead node's processing list (it died between taking
// the ticket and swapping it for its job) goes back to the queue, and the
// job behind it is taken by another node.
func TestQueue_TicketOfADeadNode(t *testing.T) {
	client, keys, qs := newQueues(t, streaming.QueueConfig{BlockTimeout: 100 * time.Millisecond}, "dead", "alive")
	dead, alive := qs[0], qs[1]
	ctx := ctxT(t)
	if err := dead.Enqueue(ctx, chatstream.Job{StreamID: "j1", UserID: "u"}); err != nil {
		t.Fatal(err)
	}
	// What the dead node's BLMOVE did before it died.
	if err := client.Do(ctx, client.B().Lmove().Source(keys.Pending()).Destination(keys.Processing("dead")).Right().Left().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := alive.Adopt(ctx, "dead"); ok || err != nil {
		t.Fatalf("adopt of a ticket alone: ok=%v err=%v, want nothing to adopt", ok, err)
	}
	if got := take(t, alive); got.Job.StreamID != "j1" {
		t.Fatalf("took %+v, want j1", got.Job)
	}
}
