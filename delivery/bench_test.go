package delivery

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// countSink counts frames; it never fills.
type countSink struct{ n atomic.Int64 }

func (s *countSink) Send([]byte) bool { s.n.Add(1); return true }
func (s *countSink) Room() int        { return 1 << 20 }

// BenchmarkFanOut measures the node's in-process fan-out: one live
// chunk handed to 1,000 live followers of a stream (no sockets; the cost per
// delivery of the dispatch itself). Reported per chunk; ns/delivery too.
func BenchmarkFanOut(b *testing.B) {
	ctx := context.Background()
	client, err := streaming.NewClient(testenv.RedisURL(b), streaming.ClientConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	keys := streaming.Keys{Prefix: testenv.Namespace(b)}
	log := streaming.NewChunkLog(client, keys, time.Minute)
	hub := streaming.NewHub(client, streaming.HubConfig{})
	defer hub.Close()
	streams := NewStreams(hub, log, nil, StreamsConfig{})
	defer streams.Close()
	const id = "5f0c7b7e-4a53-4d6f-9d36-1b7f8a3e2c10"
	if err := log.Create(ctx, id, "u", "c"); err != nil {
		b.Fatal(err)
	}
	const followers = 1000
	sinks := make([]*countSink, followers)
	for i := range sinks {
		sinks[i] = &countSink{}
		f, err := streams.Follow(ctx, id, -1, sinks[i])
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
	}
	st := streams.streams[id]
	deadline := time.Now().Add(30 * time.Second)
	for { // wait until every follower is live (its history read done), bounded
		if time.Now().After(deadline) {
			b.Fatal("followers not live after 30 s")
		}
		st.mu.Lock()
		live := 0
		for f := range st.followers {
			if f.live {
				live++
			}
		}
		st.mu.Unlock()
		if live == followers {
			break
		}
		time.Sleep(time.Millisecond)
	}
	frames := make([][]byte, 1<<16)
	for i := range frames {
		frames[i] = protocol.AppendChunk(nil, id, int64(i), " word", time.Now().UnixMicro())
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if i == len(frames) {
			b.StopTimer()
			for f := range st.followers { // start the sequence over
				f.next = 0
			}
			i = 0
			b.StartTimer()
		}
		st.OnMessage("", frames[i])
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*followers), "ns/delivery")
	if sinks[0].n.Load() == 0 || !strings.HasPrefix(string(frames[0]), `{"type":"chunk"`) {
		b.Fatal("nothing delivered")
	}
}
