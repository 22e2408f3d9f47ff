package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/streaming"
)

// Two nodes on a three-master Redis Cluster: followers on both nodes drop and
// resume at random while the slots of the streams being written are
// resharded, keys and all, to other masters. Every follower still gets every
// chunk once, and no master ever holds more than one pub/sub connection per
// node.
func TestRedisCluster_StreamsSurviveResharding(t *testing.T) {
	cluster := testenv.StartRedisCluster(t, 3)
	nodes := demoNodes(t, app.Config{RedisURL: cluster.URL()}, 2, 2)
	streamsThrough(t, cluster, nodes, "reshard", func(ids []string) {
		// Each stream's slot (its list, its meta and its channel) moves to
		// the next master while chunks are being appended to it.
		keys := streaming.Keys{}
		for _, id := range ids {
			slot := streaming.Slot(keys.Channel(id))
			from := cluster.Owner(slot)
			cluster.MigrateSlot(slot, from, (from+1)%3)
			t.Logf("stream %s: slot %d moved from master %d to %d", id, slot, from, (from+1)%3)
		}
	})
}

// Two nodes on a three-master Redis Cluster with a replica each: every
// master fails over to its replica (CLUSTER FAILOVER) while followers on
// both nodes drop and resume at random. Every follower still gets every
// chunk once; afterwards the nodes serve a new stream from the new masters.
func TestRedisCluster_StreamsSurviveFailover(t *testing.T) {
	cluster := testenv.StartRedisCluster(t, 3)
	cluster.AddReplicas()
	nodes := demoNodes(t, app.Config{RedisURL: cluster.URL()}, 2, 2)
	streamsThrough(t, cluster, nodes, "failover", func([]string) {
		for i := range cluster.Nodes {
			cluster.Failover(i)
			t.Logf("master %d failed over to its replica", i)
		}
	})
	tok := nodes[0].devToken(t, "alice")
	conv := nodes[0].conversation(t, tok)
	id := nodes[1].send(t, tok, conv, demoPrompt(20, 40, "after")).StreamID
	f := &hubFollower{t: t, nodes: nodes, token: tok, stream: id, rng: rand.New(rand.NewPCG(1, 1))}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.check(nodes[0].message(t, tok, conv, id), 20); err != nil {
		t.Fatal(err)
	}
}

// streamsThrough runs four answers of 60 chunks, each followed by three
// followers that drop once and resume on a random node; once every follower
// is past index 10 it calls disrupt with the stream ids. It checks that the
// answers were still being written when disrupt returned (else the test
// proves nothing), that every follower got every chunk once with the text
// Postgres stored, and, on a cluster (nil: a single Redis), that no master
// held more than one pub/sub connection per node before and after disrupt.
func streamsThrough(t *testing.T, cluster *testenv.RedisCluster, nodes []*node, label string, disrupt func(ids []string)) {
	t.Helper()
	seed := seed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	tok := nodes[0].devToken(t, "alice")
	const streams, followers, chunks = 4, 3, 60
	type streamRun struct{ conv, id string }
	sr := make([]streamRun, streams)
	ids := make([]string, streams)
	for i := range sr {
		sr[i].conv = nodes[0].conversation(t, tok)
		// 60 chunks at 15 a second: long enough to be disrupted mid-answer.
		sr[i].id = nodes[i%2].send(t, tok, sr[i].conv, demoPrompt(chunks, 15, fmt.Sprintf("%s %d", label, i))).StreamID
		ids[i] = sr[i].id
	}
	var started sync.WaitGroup
	started.Add(streams * followers)
	fs := make([]*hubFollower, 0, streams*followers)
	releases := make([]func(), 0, streams*followers)
	for i := range sr {
		for range followers {
			release := sync.OnceFunc(started.Done)
			releases = append(releases, release)
			frng := rand.New(rand.NewPCG(seed, rng.Uint64()))
			fs = append(fs, &hubFollower{t: t, nodes: nodes, token: tok, stream: sr[i].id, rng: frng,
				drops: []int64{frng.Int64N(chunks) - 1},
				progress: func(index int64) {
					if index >= 10 {
						release()
					}
				}})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	for i, f := range fs {
		wg.Go(func() {
			errs[i] = f.run(ctx)
			releases[i]() // a follower that failed early must not hold up the test
		})
	}
	started.Wait()
	if cluster != nil {
		awaitConns(t, cluster, len(nodes), "before "+label)
	}
	disrupt(ids)
	for _, s := range sr {
		if m := nodes[0].message(t, tok, s.conv, s.id); m.Status != "streaming" {
			t.Fatalf("stream %s was %s before the %s ended; make the answers longer", s.id, m.Status, label)
		}
	}
	if cluster != nil {
		awaitConns(t, cluster, len(nodes), "after "+label)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for i, f := range fs {
		s := sr[i/followers]
		if err := f.check(nodes[0].message(t, tok, s.conv, s.id), chunks); err != nil {
			t.Fatalf("follower %d: %v", i, err)
		}
	}
}

// awaitConns waits until some master holds a sharded subscription (streams
// are followed, so subscriptions must settle somewhere), failing the test
// meanwhile if any master holds more than one pub/sub connection per node.
func awaitConns(t *testing.T, cluster *testenv.RedisCluster, nodes int, when string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for conns(t, cluster, nodes, when) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no pub/sub connection on any master after 10 s while streams are followed", when)
		}
		time.Sleep(10 * time.Millisecond) // polling Redis, bounded above
	}
}

// conns counts, on each master, the connections with sharded subscriptions
// (ssub=N, N > 0); it fails the test if a master holds more than one per
// node, and returns the total.
func conns(t *testing.T, cluster *testenv.RedisCluster, nodes int, when string) int {
	t.Helper()
	total := 0
	for i, r := range cluster.Nodes {
		list := r.Do("CLIENT", "LIST")[0]
		n := 0
		for _, l := range strings.Split(list, "\n") {
			if strings.Contains(l, " ssub=") && !strings.Contains(l, " ssub=0 ") {
				n++
			}
		}
		if n > nodes {
			t.Errorf("%s: master %d holds %d pub/sub connections for %d nodes:\n%s", when, i, n, nodes, list)
		}
		total += n
	}
	return total
}
