package streaming_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/streaming"
)

// hubRecorder is a Handler that records, per channel, the messages and the
// resyncs it got.
type hubRecorder struct {
	mu      sync.Mutex
	msgs    map[string][]string
	resyncs map[string]int
	changed chan struct{} // closed and replaced on every call
}

func newHubRecorder() *hubRecorder {
	return &hubRecorder{msgs: map[string][]string{}, resyncs: map[string]int{}, changed: make(chan struct{})}
}

func (r *hubRecorder) OnMessage(channel string, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs[channel] = append(r.msgs[channel], string(payload))
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *hubRecorder) OnResync(channel string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resyncs[channel]++
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *hubRecorder) messages(channel string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs[channel]...)
}

// await waits until cond, called under the recorder's lock, holds.
func (r *hubRecorder) await(tb testing.TB, what string, cond func(r *hubRecorder) bool) {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ok, changed := cond(r), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("not within 10 s: %s", what)
		}
	}
}

// hubClient connects to the Redis at url; the client is closed when the
// test ends.
func hubClient(tb testing.TB, url string) rueidis.Client {
	tb.Helper()
	client, err := streaming.NewClient(url, streaming.ClientConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(client.Close)
	return client
}

// hubPublish publishes payload on channel and returns the number of
// subscribers that got it.
func hubPublish(tb testing.TB, client rueidis.Client, channel, payload string) int64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := client.Do(ctx, client.B().Publish().Channel(channel).Message(payload).Build()).AsInt64()
	if err != nil {
		tb.Fatalf("publish on %s: %v", channel, err)
	}
	return n
}

// hubNumsub returns the number of subscribers of channel in Redis.
func hubNumsub(tb testing.TB, client rueidis.Client, channel string) int64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := client.Do(ctx, client.B().PubsubNumsub().Channel(channel).Build()).ToArray()
	if err != nil || len(v) != 2 {
		tb.Fatalf("pubsub numsub %s: %v %v", channel, v, err)
	}
	n, err := v[1].AsInt64()
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// hubAwaitNumsub polls Redis until channel has want subscribers.
func hubAwaitNumsub(tb testing.TB, client rueidis.Client, channel string, want int64) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := hubNumsub(tb, client, channel)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s has %d subscribers in Redis, want %d", channel, n, want)
		}
		time.Sleep(5 * time.Millisecond) // polling Redis, bounded by the deadline
	}
}

func hubSubscribe(tb testing.TB, hub *streaming.Hub, channel string, h streaming.Handler) func() {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unsub, err := hub.Subscribe(ctx, channel, h)
	if err != nil {
		tb.Fatalf("subscribe %s: %v", channel, err)
	}
	return unsub
}

func TestHub_SubscribeIsActiveWhenItReturns(t *testing.T) {
	client := hubClient(t, testenv.RedisURL(t))
	hub := streaming.NewHub(client, streaming.HubConfig{})
	defer hub.Close()
	prefix := testenv.Namespace(t)
	rec := newHubRecorder()

	// One after another, and many at once: a PUBLISH made right after
	// Subscribe returns finds the subscription in Redis and reaches the handler.
	var wg sync.WaitGroup
	for i := range 60 {
		ch := fmt.Sprintf("%slive:%d", prefix, i)
		sub := func() {
			unsub := hubSubscribe(t, hub, ch, rec)
			defer unsub()
			if n := hubPublish(t, client, ch, "first"); n != 1 {
				t.Errorf("%s: PUBLISH right after Subscribe reached %d subscribers, want 1", ch, n)
			}
			rec.await(t, ch+" delivered", func(r *hubRecorder) bool { return len(r.msgs[ch]) == 1 })
		}
		if i < 10 {
			sub()
		} else {
			wg.Go(sub)
		}
	}
	wg.Wait()
}

func TestHub_RefCount(t *testing.T) {
	client := hubClient(t, testenv.RedisURL(t))
	hub := streaming.NewHub(client, streaming.HubConfig{})
	defer hub.Close()
	ch := testenv.Namespace(t) + "refcount"
	a, b := newHubRecorder(), newHubRecorder()

	unsubA := hubSubscribe(t, hub, ch, a)
	unsubB := hubSubscribe(t, hub, ch, b)
	if n := hubNumsub(t, client, ch); n != 1 {
		t.Fatalf("two handlers on one node: %d subscriptions in Redis, want 1", n)
	}
	hubPublish(t, client, ch, "1")
	a.await(t, "a got 1", func(r *hubRecorder) bool { return len(r.msgs[ch]) == 1 })
	b.await(t, "b got 1", func(r *hubRecorder) bool { return len(r.msgs[ch]) == 1 })

	unsubA()
	unsubA() // safe to call twice
	if hub.Channels() != 1 {
		t.Fatalf("Channels() = %d with one handler left", hub.Channels())
	}
	hubPublish(t, client, ch, "2")
	b.await(t, "b got 2", func(r *hubRecorder) bool { return len(r.msgs[ch]) == 2 })
	if got := a.messages(ch); len(got) != 1 {
		t.Fatalf("a removed, yet got %q", got)
	}

	unsubB()
	if hub.Channels() != 0 {
		t.Fatalf("Channels() = %d with no handler left", hub.Channels())
	}
	hubAwaitNumsub(t, client, ch, 0)

	// The channel can be taken again.
	unsubA = hubSubscribe(t, hub, ch, a)
	defer unsubA()
	if n := hubPublish(t, client, ch, "3"); n != 1 {
		t.Fatalf("resubscribed channel: PUBLISH reached %d", n)
	}
	a.await(t, "a got 3", func(r *hubRecorder) bool { return len(r.msgs[ch]) == 2 })
}

func TestHub_OrderPerChannel(t *testing.T) {
	client := hubClient(t, testenv.RedisURL(t))
	// Fewer shards than channels: channels share dispatch goroutines.
	hub := streaming.NewHub(client, streaming.HubConfig{Shards: 3})
	defer hub.Close()
	prefix := testenv.Namespace(t)
	rec := newHubRecorder()
	const channels, msgs = 24, 300
	for i := range channels {
		defer hubSubscribe(t, hub, fmt.Sprintf("%sorder:%d", prefix, i), rec)()
	}
	var wg sync.WaitGroup
	for i := range channels {
		ch := fmt.Sprintf("%sorder:%d", prefix, i)
		wg.Go(func() {
			for j := range msgs {
				hubPublish(t, client, ch, strconv.Itoa(j))
			}
		})
	}
	wg.Wait()
	for i := range channels {
		ch := fmt.Sprintf("%sorder:%d", prefix, i)
		rec.await(t, ch+" complete", func(r *hubRecorder) bool { return len(r.msgs[ch]) >= msgs })
		for j, m := range rec.messages(ch) {
			if m != strconv.Itoa(j) {
				t.Fatalf("%s: message %d is %q", ch, j, m)
			}
		}
	}
	if n := len(rec.resyncs); n != 0 {
		t.Fatalf("resyncs without a reason: %v", rec.resyncs)
	}
}

func TestHub_ChurnLeavesNothing(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	client, err := streaming.NewClient(testenv.RedisURL(t), streaming.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	hub := streaming.NewHub(client, streaming.HubConfig{})
	prefix := testenv.Namespace(t)
	channels := make([]string, 6)
	for i := range channels {
		channels[i] = fmt.Sprintf("%schurn:%d", prefix, i)
	}
	// A steady handler on half the channels, through all the churn.
	steady := newHubRecorder()
	var steadyUnsubs []func()
	for _, ch := range channels[:3] {
		steadyUnsubs = append(steadyUnsubs, hubSubscribe(t, hub, ch, steady))
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			h := newHubRecorder()
			for range 150 {
				ch := channels[rng.IntN(len(channels))]
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if rng.IntN(8) == 0 {
					cancel() // a caller that gives up while subscribing
				}
				unsub, err := hub.Subscribe(ctx, ch, h)
				cancel()
				if err == nil {
					if rng.IntN(2) == 0 {
						hubPublish(t, client, ch, "churn")
					}
					unsub()
				}
			}
		})
	}
	wg.Wait()

	for _, ch := range channels[:3] {
		if n := hubPublish(t, client, ch, "after"); n != 1 {
			t.Errorf("%s: PUBLISH after the churn reached %d subscribers, want 1", ch, n)
		}
		steady.await(t, ch+": the steady handler got the message after the churn", func(r *hubRecorder) bool {
			m := r.msgs[ch]
			return len(m) > 0 && m[len(m)-1] == "after"
		})
	}
	if n := hub.Channels(); n != 3 {
		t.Errorf("Channels() = %d after the churn, want 3", n)
	}
	for _, unsub := range steadyUnsubs {
		unsub()
	}
	if n := hub.Channels(); n != 0 {
		t.Errorf("Channels() = %d once every handler left", n)
	}
	for _, ch := range channels {
		hubAwaitNumsub(t, client, ch, 0)
	}
	hub.Close()
	client.Close()
	goleak.VerifyNone(t, ignore)
}

// startHubRedis starts a redis-server of the test's own.
func startHubRedis(tb testing.TB) *testenv.RedisServer { return testenv.StartRedisServer(tb) }

// hubCounter returns the value of a counter of reg.
func hubCounter(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

func TestHub_ReconnectsAfterRedisRestart(t *testing.T) {
	redis := startHubRedis(t)
	client := hubClient(t, redis.URL())
	reg := prometheus.NewRegistry()
	hub := streaming.NewHub(client, streaming.HubConfig{Metrics: streaming.NewMetrics(reg)})
	defer hub.Close()
	rec := newHubRecorder()
	defer hubSubscribe(t, hub, "before", rec)()
	hubPublish(t, client, "before", "1")
	rec.await(t, "first message", func(r *hubRecorder) bool { return len(r.msgs["before"]) == 1 })

	redis.Kill()
	// A channel wanted while Redis is down is subscribed once it is back.
	during := make(chan func(), 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		unsub, err := hub.Subscribe(ctx, "during", rec)
		if err != nil {
			t.Errorf("subscribe during the outage: %v", err)
			unsub = func() {}
		}
		during <- unsub
	}()
	redis.Start()

	// The hub tells its handlers to resync once it is subscribed again.
	rec.await(t, "resync after the restart", func(r *hubRecorder) bool { return r.resyncs["before"] >= 1 })
	if !hub.Connected() {
		t.Fatal("resync before the connection is up")
	}
	// The old client's connection died with the server; PUBLISH is not
	// retried, so a fresh client publishes.
	pub := hubClient(t, redis.URL())
	if n := hubPublish(t, pub, "before", "2"); n != 1 {
		t.Fatalf("after the restart PUBLISH reached %d subscribers", n)
	}
	rec.await(t, "message after the restart", func(r *hubRecorder) bool { return len(r.msgs["before"]) == 2 })
	defer (<-during)()
	if n := hubPublish(t, pub, "during", "x"); n != 1 {
		t.Fatalf("channel subscribed during the outage: PUBLISH reached %d", n)
	}
	rec.await(t, "message on the channel subscribed during the outage", func(r *hubRecorder) bool { return len(r.msgs["during"]) == 1 })
	if v := hubCounter(t, reg, "chatstream_hub_reconnects_total"); v < 1 {
		t.Fatalf("chatstream_hub_reconnects_total = %v", v)
	}
}

func TestHub_CloseEndsPendingSubscribe(t *testing.T) {
	redis := startHubRedis(t)
	client := hubClient(t, redis.URL())
	hub := streaming.NewHub(client, streaming.HubConfig{})
	defer hubSubscribe(t, hub, "up", newHubRecorder())()
	redis.Kill()
	// With Redis down the subscription cannot be made; the caller waits
	// without a deadline of its own, until Close.
	errc := make(chan error, 1)
	go func() {
		_, err := hub.Subscribe(context.Background(), "pending", newHubRecorder())
		errc <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); hub.Channels() < 2; {
		if time.Now().After(deadline) {
			t.Fatal("Subscribe did not register its channel")
		}
		time.Sleep(time.Millisecond) // polling the hub's state, bounded
	}
	hub.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, streaming.ErrHubClosed) {
			t.Fatalf("pending Subscribe after Close: %v, want ErrHubClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe still waits 10 s after Close")
	}
	if _, err := hub.Subscribe(context.Background(), "late", newHubRecorder()); !errors.Is(err, streaming.ErrHubClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}

// hubPanicker panics on every message.
type hubPanicker struct{}

func (hubPanicker) OnMessage(string, []byte) { panic("handler bug") }
func (hubPanicker) OnResync(string)          {}

// A handler's panic stops at the dispatch: the other handlers of the
// channel and of the shard go on getting every message, and it is counted.
func TestHub_HandlerPanicIsContained(t *testing.T) {
	client := hubClient(t, testenv.RedisURL(t))
	metrics := streaming.NewMetrics(nil)
	hub := streaming.NewHub(client, streaming.HubConfig{Metrics: metrics})
	defer hub.Close()
	ch := testenv.Namespace(t) + "panics"
	rec := newHubRecorder()
	defer hubSubscribe(t, hub, ch, hubPanicker{})()
	defer hubSubscribe(t, hub, ch, rec)()
	for i := range 3 {
		hubPublish(t, client, ch, strconv.Itoa(i))
	}
	rec.await(t, "3 messages beside a panicking handler", func(r *hubRecorder) bool { return len(r.msgs[ch]) == 3 })
	if got := testutil.ToFloat64(metrics.HubPanics); got != 3 {
		t.Fatalf("%v panics counted, want 3", got)
	}
}

// gateHandler blocks its dispatch goroutine at its first message until
// open is closed.
type gateHandler struct {
	entered, open chan struct{}
}

func (g *gateHandler) OnMessage(string, []byte) {
	select {
	case <-g.entered:
	default:
		close(g.entered)
		<-g.open
	}
}
func (g *gateHandler) OnResync(string) {}

// behindRecorder records, at each message, whether the hub said it was
// behind on the channel.
type behindRecorder struct {
	hub    *streaming.Hub
	mu     sync.Mutex
	behind []bool
	done   chan struct{} // closed at the want-th message
	want   int
}

func (r *behindRecorder) OnMessage(channel string, _ []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.behind = append(r.behind, r.hub.Behind(channel))
	if len(r.behind) == r.want {
		close(r.done)
	}
}
func (r *behindRecorder) OnResync(string) {}

// Behind says whether the message being dispatched waited longer than
// BehindAfter for its dispatch goroutine: messages held up behind a slow
// handler did, a message that finds the goroutine free did not.
func TestHub_Behind(t *testing.T) {
	client := hubClient(t, testenv.RedisURL(t))
	const after = 100 * time.Millisecond
	hub := streaming.NewHub(client, streaming.HubConfig{Shards: 1, BehindAfter: after})
	defer hub.Close()
	ns := testenv.Namespace(t)
	gate := &gateHandler{entered: make(chan struct{}), open: make(chan struct{})}
	rec := &behindRecorder{hub: hub, done: make(chan struct{}), want: 3}
	defer hubSubscribe(t, hub, ns+"gate", gate)()
	defer hubSubscribe(t, hub, ns+"b", rec)()
	if hub.Behind(ns + "b") {
		t.Fatal("behind before any message")
	}
	hubPublish(t, client, ns+"gate", "x")
	<-gate.entered
	for i := range 3 {
		hubPublish(t, client, ns+"b", strconv.Itoa(i))
	}
	// The pub/sub reader queues them behind the held message; nothing
	// signals that, so the test polls for it.
	deadline := time.Now().Add(10 * time.Second)
	for hub.Queued(ns+"b") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 messages queued after 10 s", hub.Queued(ns+"b"))
		}
		time.Sleep(time.Millisecond)
	}
	queued := time.Now()
	time.Sleep(after) // what is measured is time: they wait longer than BehindAfter
	close(gate.open)
	<-rec.done
	rec.mu.Lock()
	if want := []bool{true, true, true}; !slices.Equal(rec.behind, want) {
		t.Fatalf("behind at each of the 3 messages held up %v: %v, want %v", time.Since(queued), rec.behind, want)
	}
	rec.done, rec.want = make(chan struct{}), 4
	done := rec.done
	rec.mu.Unlock()
	hubPublish(t, client, ns+"b", "3")
	<-done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// A message to a free goroutine waits microseconds; under -race on a
	// loaded machine far less than 100 ms all the same.
	if rec.behind[3] {
		t.Fatal("a message dispatched at once counted as behind")
	}
}
