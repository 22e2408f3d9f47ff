package streaming_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

func TestSlot_MatchesRedis(t *testing.T) {
	cluster := testenv.StartRedisCluster(t, 1)
	keys := []string{"", "foo", "{user1000}.following", "{user1000}.followers", "foo{}{bar}", "foo{{bar}}zap",
		"foo{bar}{zap}", "{}", "{", "}", "a{b", "stream:{5f0c7b7e-4a53-4d6f-9d36-1b7f8a3e2c10}:meta",
		"t-123:conversation:{c}", "ünïcödé{tag}", "{queue}:pending"}
	for i := range 200 {
		keys = append(keys, fmt.Sprintf("k%d-%x", i, i*7919))
	}
	for _, k := range keys {
		want, _ := strconv.Atoi(cluster.Nodes[0].Do("CLUSTER", "KEYSLOT", k)[0])
		if got := streaming.Slot(k); got != want {
			t.Errorf("Slot(%q) = %d, Redis says %d", k, got, want)
		}
	}
}

func TestCheckCluster(t *testing.T) {
	ctx := context.Background()
	if err := streaming.CheckCluster(ctx, hubClient(t, testenv.StartRedisCluster(t, 1).URL())); err != nil {
		t.Fatalf("a Redis 7 cluster: %v", err)
	}
	if err := streaming.CheckCluster(ctx, hubClient(t, testenv.RedisURL(t))); err != nil {
		t.Fatalf("a single Redis: %v", err)
	}
}

// pubsubClients counts the pub/sub connections a Redis node holds.
func pubsubClients(t *testing.T, r *testenv.RedisServer) int {
	t.Helper()
	list := r.Do("CLIENT", "LIST", "TYPE", "pubsub")[0]
	return strings.Count(list, "id=")
}

// On a Redis Cluster the hub holds one pub/sub connection per master, each
// channel subscribed (sharded) on the master of its slot; when a slot moves,
// its channels follow it to the new master and their handlers resync.
func TestHub_Cluster(t *testing.T) {
	cluster := testenv.StartRedisCluster(t, 3)
	client := hubClient(t, cluster.URL())
	if client.Mode() != rueidis.ClientModeCluster {
		t.Fatalf("client mode %v on a cluster", client.Mode())
	}
	reg := prometheus.NewRegistry()
	hub := streaming.NewHub(client, streaming.HubConfig{Metrics: streaming.NewMetrics(reg)})
	defer hub.Close()
	ctx := context.Background()
	spublish := func(ch, msg string) int64 {
		t.Helper()
		n, err := client.Do(ctx, client.B().Spublish().Channel(ch).Message(msg).Build()).AsInt64()
		if err != nil {
			t.Fatalf("SPUBLISH %s: %v", ch, err)
		}
		return n
	}
	rec := newHubRecorder()
	const channels = 60
	names := make([]string, channels)
	owners := map[int]bool{}
	for i := range names {
		names[i] = fmt.Sprintf("stream:{%d-%x}", i, i*104729)
		owners[cluster.Owner(streaming.Slot(names[i]))] = true
		defer hubSubscribe(t, hub, names[i], rec)()
	}
	if len(owners) != 3 {
		t.Fatalf("the channels fall on %d of 3 masters; pick others", len(owners))
	}
	for _, ch := range names {
		if n := spublish(ch, "1"); n != 1 {
			t.Errorf("%s: SPUBLISH right after Subscribe reached %d subscribers, want 1", ch, n)
		}
	}
	for _, ch := range names {
		rec.await(t, ch+" got 1", func(r *hubRecorder) bool { return len(r.msgs[ch]) == 1 })
	}
	for i, r := range cluster.Nodes {
		if n := pubsubClients(t, r); n != 1 {
			t.Errorf("master %d holds %d pub/sub connections for %d channels, want 1", i, n, channels)
		}
	}

	// The slot of names[0] moves to another master: Redis unsubscribes it
	// there, the hub subscribes it on the new owner and resyncs it.
	moved := names[0]
	slot := streaming.Slot(moved)
	from := cluster.Owner(slot)
	to := (from + 1) % 3
	cluster.MigrateSlot(slot, from, to)
	rec.await(t, moved+" resynced", func(r *hubRecorder) bool { return r.resyncs[moved] == 1 })
	// Handlers resync once the channel is subscribed again: the new owner
	// has it by now.
	if n := spublish(moved, "2"); n != 1 {
		t.Fatalf("%s after its resync: SPUBLISH reached %d subscribers on its new master, want 1", moved, n)
	}
	rec.await(t, moved+" got 2", func(r *hubRecorder) bool {
		m := r.msgs[moved]
		return len(m) >= 2 && m[len(m)-1] == "2"
	})
	for _, ch := range names[1:] {
		if n := spublish(ch, "3"); n != 1 {
			t.Errorf("%s: after the move SPUBLISH reached %d subscribers, want 1", ch, n)
		}
		rec.await(t, ch+" got 3", func(r *hubRecorder) bool { return len(r.msgs[ch]) == 2 })
		rec.mu.Lock()
		resyncs := rec.resyncs[ch]
		rec.mu.Unlock()
		if resyncs != 0 && streaming.Slot(ch) != slot {
			t.Errorf("%s resynced %d times though its slot did not move", ch, resyncs)
		}
	}
	for i, r := range cluster.Nodes {
		if n := pubsubClients(t, r); n != 1 {
			t.Errorf("after the move master %d holds %d pub/sub connections, want 1", i, n)
		}
	}
	inSlot := 0
	for _, ch := range names {
		if streaming.Slot(ch) == slot {
			inSlot++
		}
	}
	if v := hubCounter(t, reg, "chatstream_hub_moved_channels_total"); v != float64(inSlot) {
		t.Errorf("chatstream_hub_moved_channels_total = %v, want %d (the channels of the moved slot)", v, inSlot)
	}
}

// The chunk log's scripts and the conversation events run on a cluster and
// publish with SPUBLISH, which the hub's sharded subscriptions receive.
func TestLog_Cluster(t *testing.T) {
	cluster := testenv.StartRedisCluster(t, 3)
	client := hubClient(t, cluster.URL())
	hub := streaming.NewHub(client, streaming.HubConfig{})
	defer hub.Close()
	ctx := context.Background()
	log := streaming.NewChunkLog(client, streaming.Keys{Prefix: "t:"}, time.Minute)
	rec := newHubRecorder()
	for i := range 6 {
		id := fmt.Sprintf("s%d", i)
		ch := log.Keys().Channel(id)
		defer hubSubscribe(t, hub, ch, rec)()
		cancels := log.Keys().ControlChannel(id)
		defer hubSubscribe(t, hub, cancels, rec)()
		if err := log.Create(ctx, id, "u", "c"); err != nil {
			t.Fatal(err)
		}
		m, err := log.Claim(ctx, id, "w")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := log.Append(ctx, id, m.Epoch, 0, protocol.AppendChunk(nil, id, 0, "hi", 1)); err != nil {
			t.Fatal(err)
		}
		if held, err := log.Cancel(ctx, id); err != nil || !held {
			t.Fatalf("cancel: %v, %v", held, err)
		}
		if err := log.Finish(ctx, id, m.Epoch, 1, streaming.End{Status: chatstream.StatusCancelled}); err != nil {
			t.Fatal(err)
		}
		rec.await(t, id+" chunk and done", func(r *hubRecorder) bool { return len(r.msgs[ch]) == 2 })
		rec.await(t, id+" cancel", func(r *hubRecorder) bool { return len(r.msgs[cancels]) == 1 })
		hist, err := log.Read(ctx, id, 0)
		if err != nil || len(hist.Frames) != 1 || hist.Meta.Status != chatstream.StatusCancelled {
			t.Fatalf("read: %+v, %v", hist, err)
		}
	}
	events := streaming.NewEvents(client, log.Keys(), nil)
	for i := range 6 {
		conv := fmt.Sprintf("c%d", i)
		ch := log.Keys().ConversationChannel(conv)
		defer hubSubscribe(t, hub, ch, rec)()
		events.Publish(ctx, &chatstream.Message{ID: "m", ConversationID: conv, Status: chatstream.StatusComplete})
		rec.await(t, conv+" event", func(r *hubRecorder) bool { return len(r.msgs[ch]) == 1 })
	}
}
