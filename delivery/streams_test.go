package delivery

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

func chunkFrames(id string, from, to int64) [][]byte {
	var out [][]byte
	for i := from; i < to; i++ {
		out = append(out, protocol.AppendChunk(nil, id, i, fmt.Sprintf(" t%d", i), 1))
	}
	return out
}

func TestLogCache(t *testing.T) {
	const id = "s"
	frames := chunkFrames(id, 0, 10)
	observe := func(c *logCache, fr []byte) {
		typ, idx, ok := protocol.Scan(fr)
		if !ok {
			t.Fatalf("not a frame: %s", fr)
		}
		c.observe(typ, idx, fr)
	}
	wantRange := func(c *logCache, from, end int64) {
		t.Helper()
		if !c.valid || c.from != from || c.end() != end {
			t.Fatalf("cache valid=%v [%d, %d), want [%d, %d)", c.valid, c.from, c.end(), from, end)
		}
		for i, fr := range c.frames {
			if !slices.Equal(fr, frames[c.from+int64(i)]) {
				t.Fatalf("frame %d is %s", c.from+int64(i), fr)
			}
		}
	}

	// A read of [2, 5) while 3, 4 (published before it) and 5, 6 (after)
	// arrived live: the cache is [2, 7).
	var c logCache
	c.fill(id, streaming.History{Meta: streaming.Meta{Exists: true, Status: chatstream.StatusStreaming, N: 5}, From: 2, Frames: frames[2:5]}, frames[3:7])
	wantRange(&c, 2, 7)
	if h, done := c.history(4); h.From != 4 || len(h.Frames) != 3 || h.Meta.N != 7 || done != nil {
		t.Fatalf("history(4) = from %d, %d frames, n %d, done %s", h.From, len(h.Frames), h.Meta.N, done)
	}
	if !c.covers(2, 7) || c.covers(1, 5) {
		t.Fatal("covers: want from 2 on only")
	}
	// A follower that holds chunks the node has not seen yet (it got them
	// through another node) is not answered from the cache: only Redis can
	// say whether chunk 7 exists, and "ahead of the log" would be wrong.
	if c.covers(3, 8) {
		t.Fatal("covers a follower whose next index is beyond the cache")
	}
	// Live: a duplicate changes nothing, the next chunk extends it.
	observe(&c, frames[6])
	observe(&c, frames[7])
	wantRange(&c, 2, 8)
	// The done frame for the last chunk completes it.
	done := protocol.DoneFrame(id, chatstream.StatusComplete, 7, nil)
	observe(&c, done)
	if _, d := c.history(8); !slices.Equal(d, done) {
		t.Fatalf("done %s", d)
	}
	// A gap invalidates it.
	c.fill(id, streaming.History{Meta: streaming.Meta{Exists: true, Status: chatstream.StatusStreaming, N: 5}, From: 0, Frames: frames[0:5]}, nil)
	observe(&c, frames[6])
	if c.valid || c.covers(0, 0) {
		t.Fatal("a gap left the cache valid")
	}
	// So does a done frame that is not for the last chunk.
	c.fill(id, streaming.History{Meta: streaming.Meta{Exists: true, Status: chatstream.StatusStreaming, N: 5}, From: 0, Frames: frames[0:5]}, nil)
	observe(&c, protocol.DoneFrame(id, chatstream.StatusComplete, 7, nil))
	if c.valid {
		t.Fatal("a done frame beyond the cache left it valid")
	}
	// A read that found the stream over carries its done frame.
	c.fill(id, streaming.History{Meta: streaming.Meta{Exists: true, Status: chatstream.StatusFailed, N: 3, Failure: &chatstream.Failure{Code: "x", Message: "y"}}, From: 0, Frames: frames[0:3]}, nil)
	if _, d := c.history(3); !slices.Equal(d, protocol.DoneFrame(id, chatstream.StatusFailed, 2, &chatstream.Failure{Code: "x", Message: "y"})) {
		t.Fatalf("done %s", d)
	}
	// Old frames give way beyond cacheMaxBytes; the newest stay.
	big := chunkFrames(id, 0, 2000)
	frames = big
	c.fill(id, streaming.History{Meta: streaming.Meta{Exists: true, Status: chatstream.StatusStreaming, N: 1}, From: 0, Frames: big[:1]}, nil)
	for _, fr := range big[1:] {
		observe(&c, fr)
	}
	if c.size > cacheMaxBytes || c.end() != 2000 || c.from == 0 {
		t.Fatalf("after 2,000 frames: [%d, %d), %d bytes", c.from, c.end(), c.size)
	}
	wantRange(&c, c.from, 2000)
}

// sinkLog records what a follower receives.
type sinkLog struct {
	mu     sync.Mutex
	frames [][]byte
	wake   chan struct{}
}

func newSinkLog() *sinkLog { return &sinkLog{wake: make(chan struct{}, 1)} }

func (s *sinkLog) Send(fr []byte) bool {
	s.mu.Lock()
	s.frames = append(s.frames, fr)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}
func (s *sinkLog) Room() int { return 1 << 20 }

// await waits until the sink holds a frame with type typ and index idx.
func (s *sinkLog) await(t *testing.T, typ string, idx int64) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.frames)
		var last []byte
		if n > 0 {
			last = s.frames[n-1]
		}
		s.mu.Unlock()
		if ty, i, ok := protocol.Scan(last); ok && ty == typ && i == idx {
			return
		}
		select {
		case <-s.wake:
		case <-timeout:
			t.Fatalf("no %s %d after 20 s; last frame %s", typ, idx, last)
		}
	}
}

// indexes checks that the sink got chunks from..to-1 once each, in order,
// then (if done) the done frame, and nothing else.
func (s *sinkLog) check(t *testing.T, from, to int64, done bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	want := to - from
	if done {
		want++
	}
	if int64(len(s.frames)) != want {
		t.Fatalf("%d frames, want %d", len(s.frames), want)
	}
	for i, fr := range s.frames {
		typ, idx, _ := protocol.Scan(fr)
		if int64(i) == to-from {
			if typ != protocol.TypeDone || idx != to-1 {
				t.Fatalf("frame %d: %s", i, fr)
			}
			continue
		}
		if typ != protocol.TypeChunk || idx != from+int64(i) {
			t.Fatalf("frame %d: %s, want chunk %d", i, fr, from+int64(i))
		}
	}
}

// streamsEnv is a node's Streams on the test Redis, with one open stream
// claimed by a writer; everything is closed when the test ends.
type streamsEnv struct {
	ctx     context.Context
	client  rueidis.Client
	keys    streaming.Keys
	log     *streaming.ChunkLog
	streams *Streams
	metrics *Metrics
	epoch   int64
}

func newStreamsEnv(t *testing.T, id string) *streamsEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	client, err := streaming.NewClient(testenv.RedisURL(t), streaming.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	e := &streamsEnv{ctx: ctx, client: client, keys: streaming.Keys{Prefix: testenv.Namespace(t)}, metrics: NewMetrics(nil)}
	e.log = streaming.NewChunkLog(client, e.keys, time.Minute)
	hub := streaming.NewHub(client, streaming.HubConfig{})
	t.Cleanup(hub.Close)
	e.streams = NewStreams(hub, e.log, nil, StreamsConfig{Metrics: e.metrics})
	t.Cleanup(e.streams.Close)
	if err := e.log.Create(ctx, id, "u", "c"); err != nil {
		t.Fatal(err)
	}
	meta, err := e.log.Claim(ctx, id, "w")
	if err != nil {
		t.Fatal(err)
	}
	e.epoch = meta.Epoch
	return e
}

// While a stream is followed on a node, followers that join or resume from
// an index the node's copy holds catch up from it: one history read serves
// them all. A resync throws the copy away.
func TestStreams_CatchUpFromNodeCopy(t *testing.T) {
	const id = "0b7c9e1a-5d1f-4c7e-9b0e-3f6c2d8a4e11"
	e := newStreamsEnv(t, id)
	ctx, log, streams, metrics, meta := e.ctx, e.log, e.streams, e.metrics, streaming.Meta{Epoch: e.epoch}
	var n int64
	appendN := func(k int) {
		for range k {
			if _, err := log.Append(ctx, id, meta.Epoch, n, chunkFrames(id, n, n+1)[0]); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	reads := func() float64 { return testutil.ToFloat64(metrics.HistoryReads) }

	appendN(20)
	first := newSinkLog()
	f, err := streams.Follow(ctx, id, -1, first)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first.await(t, protocol.TypeChunk, 19)
	if got := reads(); got != 1 {
		t.Fatalf("%v reads for the first follower, want 1", got)
	}
	appendN(10) // live: the node's copy grows with them
	first.await(t, protocol.TypeChunk, 29)

	// 50 followers resume from every index the copy holds: no read.
	sinks := make([]*sinkLog, 50)
	for i := range sinks {
		sinks[i] = newSinkLog()
		fi, err := streams.Follow(ctx, id, int64(i%30)-1, sinks[i])
		if err != nil {
			t.Fatal(err)
		}
		defer fi.Close()
	}
	for _, s := range sinks {
		s.await(t, protocol.TypeChunk, 29)
	}
	appendN(5)
	for _, s := range sinks {
		s.await(t, protocol.TypeChunk, 34)
	}
	if got := reads(); got != 1 {
		t.Fatalf("%v reads after 50 resumes, want 1 (the copy serves them)", got)
	}
	if got := testutil.ToFloat64(metrics.HistoryCached); got == 0 {
		t.Fatal("no catch-up counted as served from the copy")
	}

	// A resync: live messages may have been lost, so the copy is not
	// trusted; the next catch-up reads (and the live follower re-reads).
	streams.mu.Lock()
	st := streams.streams[id]
	streams.mu.Unlock()
	st.OnResync("")
	late := newSinkLog()
	fl, err := streams.Follow(ctx, id, 9, late)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	late.await(t, protocol.TypeChunk, 34)
	if got := reads(); got < 2 {
		t.Fatalf("%v reads after a resync, want a new one", got)
	}

	// The end: every follower gets done once, and one that resumes after it
	// gets done from the copy.
	if err := log.Finish(ctx, id, meta.Epoch, n, streaming.End{Status: chatstream.StatusComplete}); err != nil {
		t.Fatal(err)
	}
	for _, s := range append(sinks, first, late) {
		s.await(t, protocol.TypeDone, n-1)
	}
	before := reads()
	end := newSinkLog()
	fe, err := streams.Follow(ctx, id, n-3, end)
	if err != nil {
		t.Fatal(err)
	}
	defer fe.Close()
	end.await(t, protocol.TypeDone, n-1)
	if got := reads(); got != before {
		t.Fatalf("a resume after done read history (%v reads, was %v)", got, before)
	}
	first.check(t, 0, n, true)
	for i, s := range sinks {
		s.check(t, int64(i%30), n, true)
	}
	late.check(t, 10, n, true)
	end.check(t, n-2, n, true)
}

// A client that resumes on this node with chunks the node has not received
// yet (it got them live through another node) continues from Redis: no
// snapshot, nothing lost, nothing twice.
func TestStreams_FollowerAheadOfNodeCopy(t *testing.T) {
	const id = "7a1c2e3f-0b4d-4e5f-8a9b-0c1d2e3f4a5b"
	e := newStreamsEnv(t, id)
	ctx, client, keys, log, streams, meta := e.ctx, e.client, e.keys, e.log, e.streams, streaming.Meta{Epoch: e.epoch}
	for i := range int64(5) {
		if _, err := log.Append(ctx, id, meta.Epoch, i, chunkFrames(id, i, i+1)[0]); err != nil {
			t.Fatal(err)
		}
	}
	first := newSinkLog()
	f, err := streams.Follow(ctx, id, -1, first)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first.await(t, protocol.TypeChunk, 4) // the node's copy holds 0..4
	// Chunk 5 is in Redis but its publish has not reached this node (written
	// here without one), as when another node's client got it first.
	fr := chunkFrames(id, 5, 6)[0]
	if err := client.Do(ctx, client.B().Rpush().Key(keys.Chunks(id)).Element(string(fr)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := client.Do(ctx, client.B().Hset().Key(keys.Meta(id)).FieldValue().FieldValue("n", "6").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	ahead := newSinkLog()
	fa, err := streams.Follow(ctx, id, 5, ahead) // holds 0..5
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	if _, err := log.Append(ctx, id, meta.Epoch, 6, chunkFrames(id, 6, 7)[0]); err != nil {
		t.Fatal(err)
	}
	if err := log.Finish(ctx, id, meta.Epoch, 7, streaming.End{Status: chatstream.StatusComplete}); err != nil {
		t.Fatal(err)
	}
	ahead.await(t, protocol.TypeDone, 6)
	ahead.check(t, 6, 7, true) // chunk 6, then done: no snapshot
}

// A client that claims more chunks than the stream has (Redis lost some, or
// the client is confused) gets a snapshot, then done — also when it is the
// only one asking, so that the read starts past the end of the log.
func TestStreams_ClientAheadOfTheLogGetsSnapshot(t *testing.T) {
	const id = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"
	e := newStreamsEnv(t, id)
	for i := range int64(3) {
		if _, err := e.log.Append(e.ctx, id, e.epoch, i, chunkFrames(id, i, i+1)[0]); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.log.Finish(e.ctx, id, e.epoch, 3, streaming.End{Status: chatstream.StatusComplete}); err != nil {
		t.Fatal(err)
	}
	s := newSinkLog()
	f, err := e.streams.Follow(e.ctx, id, 7, s)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s.await(t, protocol.TypeDone, 2)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.frames) != 2 || !strings.Contains(string(s.frames[0]), `"type":"snapshot"`) ||
		!strings.Contains(string(s.frames[0]), `"content":" t0 t1 t2"`) {
		t.Fatalf("frames %q, want a snapshot of the 3 chunks, then done", s.frames)
	}
}

// A client may claim any index up to the largest int64. Followers that
// claim it, alone or between others in one history read, get a snapshot and
// done; the others are served as usual. (last_index+1 used to overflow into
// a negative start that also meant "no start": a panic that took the node
// down, or a follow that never ended.)
func TestStreams_LargestClaimedIndex(t *testing.T) {
	const id = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
	e := newStreamsEnv(t, id)
	for i := range int64(3) {
		if _, err := e.log.Append(e.ctx, id, e.epoch, i, chunkFrames(id, i, i+1)[0]); err != nil {
			t.Fatal(err)
		}
	}
	claims := []int64{-1, math.MaxInt64, -1, math.MaxInt64 - 1, MaxLastIndex + 1}
	sinks := make([]*sinkLog, len(claims))
	for i, last := range claims {
		sinks[i] = newSinkLog()
		f, err := e.streams.Follow(e.ctx, id, last, sinks[i])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	if err := e.log.Finish(e.ctx, id, e.epoch, 3, streaming.End{Status: chatstream.StatusComplete}); err != nil {
		t.Fatal(err)
	}
	for i, s := range sinks {
		s.await(t, protocol.TypeDone, 2)
		if claims[i] == -1 {
			s.check(t, 0, 3, true)
			continue
		}
		s.mu.Lock()
		if len(s.frames) != 2 || !strings.Contains(string(s.frames[0]), `"type":"snapshot"`) {
			t.Errorf("follower claiming %d: frames %q, want a snapshot, then done", claims[i], s.frames)
		}
		s.mu.Unlock()
	}
}

// panicSink panics on its first Send, as a socket's code with a bug might.
type panicSink struct {
	*sinkLog
	once sync.Once
}

func (p *panicSink) Send(fr []byte) bool {
	panicked := false
	p.once.Do(func() { panicked = true })
	if panicked {
		panic("sink bug")
	}
	return p.sinkLog.Send(fr)
}

// A panic while a history read is handed over is logged and counted; the
// followers of that read get an error frame, and the stream and the node
// go on serving.
func TestStreams_PanicInAHistoryReadIsContained(t *testing.T) {
	const id = "6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c"
	e := newStreamsEnv(t, id)
	for i := range int64(3) {
		if _, err := e.log.Append(e.ctx, id, e.epoch, i, chunkFrames(id, i, i+1)[0]); err != nil {
			t.Fatal(err)
		}
	}
	bad := &panicSink{sinkLog: newSinkLog()}
	f, err := e.streams.Follow(e.ctx, id, -1, bad)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bad.await(t, "error", 0) // sent after the panic, to the same sink
	if !f.Ended() {
		t.Fatal("the follower whose sink panicked goes on")
	}
	if got := testutil.ToFloat64(e.metrics.Panics); got != 1 {
		t.Fatalf("%v panics counted, want 1", got)
	}
	good := newSinkLog()
	g, err := e.streams.Follow(e.ctx, id, -1, good)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := e.log.Finish(e.ctx, id, e.epoch, 3, streaming.End{Status: chatstream.StatusComplete}); err != nil {
		t.Fatal(err)
	}
	good.await(t, protocol.TypeDone, 2)
	good.check(t, 0, 3, true)
}

// liveSinkLog is a sinkLog that writes live frames itself (a LiveSink),
// recording the indexes that came through SendLive.
type liveSinkLog struct {
	*sinkLog
	live map[int64]bool
}

func (s *liveSinkLog) SendLive(fr []byte) bool {
	_, idx, _ := protocol.Scan(fr)
	s.mu.Lock()
	s.live[idx] = true
	s.mu.Unlock()
	return s.sinkLog.Send(fr)
}

// A live frame goes to at most liveWrites followers of a stream through
// SendLive (written at once by the dispatch goroutine) and to the others
// through Send (their own goroutines write it); once every follower is
// live, exactly liveWrites get it through SendLive. A catch-up from
// history always goes through Send, so that a socket writes it in one
// batch.
func TestStreams_LiveFramesThroughSendLive(t *testing.T) {
	const id = "6d2f1b3c-8a4e-4f0b-9c7d-2e5a1b8c3f90"
	e := newStreamsEnv(t, id)
	ctx := e.ctx
	if _, err := e.log.Append(ctx, id, e.epoch, 0, chunkFrames(id, 0, 1)[0]); err != nil {
		t.Fatal(err)
	}
	sinks := make([]*liveSinkLog, liveWrites+100)
	for i := range sinks {
		sinks[i] = &liveSinkLog{sinkLog: newSinkLog(), live: map[int64]bool{}}
		f, err := e.streams.Follow(ctx, id, -1, sinks[i])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	// Chunks follow until one reaches exactly liveWrites followers through
	// SendLive (the followers are live by then); none may reach more.
	for i := int64(1); ; i++ {
		if i == 50 {
			t.Fatal("49 live chunks and never one written by SendLive for liveWrites followers")
		}
		if _, err := e.log.Append(ctx, id, e.epoch, i, chunkFrames(id, i, i+1)[0]); err != nil {
			t.Fatal(err)
		}
		live := 0
		for _, s := range sinks {
			s.await(t, protocol.TypeChunk, i)
			s.mu.Lock()
			if s.live[i] {
				live++
			}
			s.mu.Unlock()
		}
		if live > liveWrites {
			t.Fatalf("chunk %d went to %d followers through SendLive, more than %d", i, live, liveWrites)
		}
		if live == liveWrites {
			break
		}
	}
	for _, s := range sinks {
		n := int64(len(s.frames))
		s.check(t, 0, n, false)
		if s.live[0] {
			t.Fatal("chunk 0, read from history, came through SendLive")
		}
	}

	// While the node is behind (messages wait on the dispatch goroutine),
	// every live frame is queued through Send.
	e.streams.behind = func(string) bool { return true }
	from := int64(len(sinks[0].frames))
	for i := from; i < from+3; i++ {
		if _, err := e.log.Append(ctx, id, e.epoch, i, chunkFrames(id, i, i+1)[0]); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range sinks {
		s.await(t, protocol.TypeChunk, from+2)
		s.check(t, 0, from+3, false)
		s.mu.Lock()
		for i := from; i < from+3; i++ {
			if s.live[i] {
				t.Fatalf("chunk %d came through SendLive while the node was behind", i)
			}
		}
		s.mu.Unlock()
	}
}
