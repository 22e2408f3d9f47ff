package integration

// The hub's end-to-end proof (issue 4): randomized resume across nodes, a
// Redis restart under running streams, one pub/sub connection per node, a
// slow reader closed with 1013, a resume storm sharing history reads, watch
// and unsubscribe, and no goroutine outliving its socket.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/limits"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/worker"
)

// hubFollower follows one stream to its end over as many sockets as it
// takes. After each index in drops (ascending; -1: right after subscribing)
// it drops its socket, or resubscribes on the same one, and resumes with
// the last index it holds on a node picked at random. It checks that every
// index arrives exactly once and in order.
type hubFollower struct {
	t      *testing.T
	nodes  []*node
	token  string
	stream string
	rng    *rand.Rand
	drops  []int64
	// progress, if set, is called after each chunk with its index.
	progress func(index int64)

	next    int64 // the next index expected
	text    strings.Builder
	done    frame
	sockets int
	trace   []string // what happened, for failure reports
	rid     int
}

func (f *hubFollower) tracef(format string, args ...any) {
	f.trace = append(f.trace, fmt.Sprintf(format, args...))
}

func (f *hubFollower) fail(format string, args ...any) error {
	return fmt.Errorf("stream %s: %s; trace: %s", f.stream, fmt.Sprintf(format, args...), strings.Join(f.trace, " | "))
}

func (f *hubFollower) run(ctx context.Context) error {
	var conn *wsClient
	for {
		if conn == nil {
			n := f.nodes[f.rng.IntN(len(f.nodes))]
			c, err := n.connect(f.t, ctx, f.token, nil)
			if err != nil {
				return f.fail("%v", err)
			}
			conn = c
			f.sockets++
			f.tracef("dial %s", n.url)
		}
		f.rid++
		rid := strconv.Itoa(f.rid)
		if err := conn.send(ctx, map[string]any{"type": "subscribe", "stream_id": f.stream, "last_index": f.next - 1, "request_id": rid}); err != nil {
			return f.fail("write subscribe: %v", err)
		}
		f.tracef("subscribe %s last_index %d", rid, f.next-1)
		drop, err := f.follow(ctx, conn, rid)
		if err != nil {
			conn.conn.CloseNow()
			return err
		}
		if !drop {
			conn.conn.Close(websocket.StatusNormalClosure, "")
			return nil
		}
		switch f.rng.IntN(3) {
		case 0:
			f.tracef("close now at %d", f.next-1)
			conn.conn.CloseNow()
			conn = nil
		case 1:
			f.tracef("close normally at %d", f.next-1)
			conn.conn.Close(websocket.StatusNormalClosure, "")
			conn = nil
		default:
			f.tracef("resubscribe on the same socket at %d", f.next-1)
		}
	}
}

// follow reads the frames of one subscription: it returns drop when the
// follower is to drop it, and false once done arrived.
func (f *hubFollower) follow(ctx context.Context, conn *wsClient, rid string) (drop bool, err error) {
	dropNow := func() bool {
		if len(f.drops) > 0 && f.drops[0] == f.next-1 {
			f.drops = f.drops[1:]
			return true
		}
		return false
	}
	acked := false
	for {
		fr, err := conn.next(ctx)
		if err != nil {
			return false, f.fail("read after index %d: %v", f.next-1, err)
		}
		if !acked {
			// Frames before the acknowledgement belong to an earlier
			// subscription of this socket.
			switch {
			case fr.Type == "subscribed" && string(fr.RequestID) == `"`+rid+`"`:
				acked = true
				if dropNow() {
					return true, nil
				}
			case fr.Type == "error":
				return false, f.fail("error frame %s: %s", fr.Code, fr.Message)
			}
			continue
		}
		if fr.StreamID != f.stream {
			return false, f.fail("frame %s of stream %s", fr.Type, fr.StreamID)
		}
		switch fr.Type {
		case "chunk":
			if fr.Index != f.next {
				return false, f.fail("got index %d, want %d", fr.Index, f.next)
			}
			f.next++
			f.text.WriteString(fr.Content)
			if f.progress != nil {
				f.progress(fr.Index)
			}
			if dropNow() {
				return true, nil
			}
		case "done":
			if fr.LastIndex != f.next-1 {
				return false, f.fail("done last_index %d after index %d", fr.LastIndex, f.next-1)
			}
			f.done = fr
			return false, nil
		default:
			return false, f.fail("unexpected %s frame (%s %s) content %q last_index %d at next %d", fr.Type, fr.Code, fr.Message, fr.Content, fr.LastIndex, f.next)
		}
	}
}

// check compares what the follower got with the stored message.
func (f *hubFollower) check(stored apiMessage, chunks int64) error {
	switch {
	case f.done.Status != "complete":
		return f.fail("done status %q", f.done.Status)
	case chunks >= 0 && f.next != chunks:
		return f.fail("%d chunks, want %d", f.next, chunks)
	case f.text.String() != stored.Content:
		return f.fail("text %q, stored %q", f.text.String(), stored.Content)
	case stored.Status != "complete":
		return f.fail("stored status %q", stored.Status)
	}
	return nil
}

func TestWS_RandomizedResume(t *testing.T) {
	seed := seed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	// One node writes every frame at once, the other holds frames up to
	// 20 ms so that several share a write (WS_WRITE_COALESCE): followers
	// drop and resume on either.
	c := newDemoCluster(t, 0)
	cfg := app.Config{Workers: 2, Limits: limits.Off()}
	coalescing := cfg
	coalescing.WS.WriteCoalesce = 20 * time.Millisecond
	nodes := []*node{c.start(t, cfg), c.start(t, coalescing)}
	tok := nodes[0].devToken(t, "alice")
	const runs, streams, followers = 8, 4, 6
	rates := []float64{0, 150, 400}
	for run := range runs {
		type streamRun struct {
			conv, id string
			chunks   int64
		}
		sr := make([]streamRun, streams)
		for i := range sr {
			sr[i].conv = nodes[0].conversation(t, tok)
			sr[i].chunks = int64(10 + rng.IntN(70))
			n := nodes[rng.IntN(len(nodes))]
			sr[i].id = n.send(t, tok, sr[i].conv, demoPrompt(int(sr[i].chunks), rates[rng.IntN(len(rates))], fmt.Sprintf("run %d stream %d", run, i))).StreamID
		}
		var wg sync.WaitGroup
		fs := make([]*hubFollower, 0, streams*followers)
		for i := range sr {
			for range followers {
				frng := rand.New(rand.NewPCG(seed, rng.Uint64()))
				var drops []int64
				for range 1 + frng.IntN(3) {
					drops = append(drops, frng.Int64N(sr[i].chunks+1)-1)
				}
				slices.Sort(drops)
				f := &hubFollower{t: t, nodes: nodes, token: tok, stream: sr[i].id, rng: frng, drops: slices.Compact(drops)}
				fs = append(fs, f)
			}
		}
		errs := make([]error, len(fs))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		for i, f := range fs {
			wg.Go(func() { errs[i] = f.run(ctx) })
		}
		wg.Wait()
		cancel()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		sockets := 0
		for i, f := range fs {
			s := sr[i/followers]
			if err := f.check(nodes[0].message(t, tok, s.conv, s.id), s.chunks); err != nil {
				t.Fatalf("run %d follower %d: %v", run, i, err)
			}
			sockets += f.sockets
		}
		t.Logf("run %d: %d followers over %d sockets", run, len(fs), sockets)
	}
}

func TestWS_RedisRestart(t *testing.T) {
	redis := testenv.StartRedisServer(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("redis log:\n%s", redis.Log())
		}
	})
	nodes := demoNodes(t, app.Config{RedisURL: redis.URL()}, 2, 2)
	streamsThrough(t, nil, nodes, "outage", func([]string) {
		redis.Kill()
		t.Log("redis-server killed; starting it again")
		redis.Start()
	})
	for i, n := range nodes {
		if v := n.metric(t, "chatstream_hub_reconnects_total"); v < 1 {
			t.Errorf("node %d: chatstream_hub_reconnects_total = %v after a Redis restart", i, v)
		}
	}
}

func TestWS_OnePubSubConnectionPerNode(t *testing.T) {
	redis := testenv.StartRedisServer(t)
	keys := streaming.Keys{Prefix: testenv.Namespace(t)}
	// Node 0 runs generations too: their cancel channels share the hub's
	// connection.
	nodes := demoNodes(t, app.Config{RedisURL: redis.URL(), KeyPrefix: keys.Prefix}, 2, 0)
	tok := nodes[0].devToken(t, "alice")
	const streams = 50
	ids := make([]string, streams)
	for i := range ids {
		conv := nodes[0].conversation(t, tok)
		ids[i] = nodes[0].send(t, tok, conv, demoPrompt(1000, 5, "slow")).StreamID
	}
	// End the slow generations before the nodes shut down (cleanups run
	// last registered first), so that shutdown need not wait for them.
	t.Cleanup(func() {
		for _, id := range ids {
			nodes[0].call(t, "POST", "/v1/streams/"+id+"/cancel", tok, nil, nil)
		}
	})
	ctx := context.Background()
	// 100 sockets: each stream followed by one socket on each node.
	for i := range 2 * streams {
		conn, err := nodes[i%2].connect(t, ctx, tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.send(ctx, map[string]any{"type": "subscribe", "stream_id": ids[i/2]}); err != nil {
			t.Fatal(err)
		}
	}
	streamtest.Eventually(t, 20*time.Second, func() bool {
		args := []string{"PUBSUB", "NUMSUB"}
		for _, id := range ids {
			args = append(args, keys.Channel(id))
		}
		res := redis.Do(args...)
		for i := 1; i < len(res); i += 2 {
			if res[i] != "2" {
				return false
			}
		}
		return true
	}, "every stream channel subscribed once per node")
	list := strings.TrimSpace(redis.Do("CLIENT", "LIST", "TYPE", "pubsub")[0])
	conns := strings.Split(list, "\n")
	if len(conns) != 2 {
		t.Fatalf("CLIENT LIST TYPE pubsub shows %d connections, want 2 (one per node):\n%s", len(conns), list)
	}
	t.Logf("pub/sub connections:\n%s", list)
}

// hubSlowDialer dials sockets whose receive buffer is small, so that a
// client that stops reading fills the path to it quickly.
func hubSlowDialer() *http.Client {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// hubFlood is a model that answers every request with n deltas of size
// bytes each, one every interval: a flood for the slow reader, at a pace a
// reading client keeps up with.
type hubFlood struct {
	n, size int
	every   time.Duration
}

func (p hubFlood) Name() string { return "flood" }

func (p hubFlood) Stream(ctx context.Context, _ llm.Request) (llm.Stream, error) {
	return &hubFloodStream{ctx: ctx, p: p, tick: time.NewTicker(p.every)}, nil
}

type hubFloodStream struct {
	ctx  context.Context
	p    hubFlood
	tick *time.Ticker
	sent int
	done bool
}

func (s *hubFloodStream) Recv() (llm.Delta, error) {
	if s.sent == s.p.n {
		s.done = true
		return llm.Delta{}, io.EOF
	}
	select {
	case <-s.ctx.Done():
		return llm.Delta{}, s.ctx.Err()
	case <-s.tick.C:
	}
	s.sent++
	head := fmt.Sprintf("[%d]", s.sent)
	return llm.Delta{Text: head + strings.Repeat("x", s.p.size-len(head))}, nil
}

func (s *hubFloodStream) Usage() (chatstream.Usage, bool) { return chatstream.Usage{}, s.done }

func (s *hubFloodStream) FinishReason() string {
	if s.done {
		return "stop"
	}
	return ""
}

func (s *hubFloodStream) Close() error {
	s.tick.Stop()
	return nil
}

func TestWS_SlowReaderClosed1013(t *testing.T) {
	// 12.5 MB in 64 KiB chunks, one every 2 ms: more than the kernel
	// buffers between the server and a client that stopped reading hold
	// (about 3 MB here), plus its queue of 64. A Redis of its own keeps the
	// flood out of the shared one.
	redis := testenv.StartRedisServer(t)
	const chunks = 200
	nodes := demoNodes(t, app.Config{
		RedisURL: redis.URL(),
		Provider: hubFlood{n: chunks, size: 64 << 10, every: 2 * time.Millisecond},
		WS:       server.WSConfig{SendQueue: 64, WriteTimeout: 5 * time.Second},
		Worker:   worker.Config{MaxAnswerBytes: 20 << 20}, // past the 1 MiB default
	}, 1)
	n := nodes[0]
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	ctx := context.Background()
	id := n.send(t, tok, conv, "flood").StreamID

	// Two sockets subscribe and stop reading: the slow one reads again once
	// it was declared slow, the dead one never does.
	stuck := make([]*wsClient, 2)
	for i := range stuck {
		c, err := n.connect(t, ctx, tok, &websocket.DialOptions{HTTPClient: hubSlowDialer()})
		if err != nil {
			t.Fatal(err)
		}
		c.conn.SetReadLimit(-1)
		if err := c.send(ctx, map[string]any{"type": "subscribe", "stream_id": id}); err != nil {
			t.Fatal(err)
		}
		stuck[i] = c
	}
	slow := stuck[0].conn
	normal := n.dial(t, tok)
	normal.write(map[string]any{"type": "subscribe", "stream_id": id})
	// The normal follower reads meanwhile; its failure (Fatalf ends its
	// goroutine) sends nil.
	followed := make(chan *streamResult, 1)
	go func() {
		var r *streamResult
		defer func() { followed <- r }()
		r = normal.follow(id, 0)
	}()
	streamtest.Eventually(t, 20*time.Second, func() bool {
		return n.metric(t, `chatstream_websocket_errors_total{code="slow_consumer"}`) == 2
	}, "both stuck sockets declared slow")
	// The slow client reads what reached it at once (within the write
	// timeout, so the write in flight completes): the close frame says 1013.
	var frames int
	for {
		_, _, err := slow.Read(ctx)
		if err != nil {
			if status := websocket.CloseStatus(err); status != websocket.StatusTryAgainLater {
				t.Fatalf("slow socket closed with %d (%v) after %d frames, want 1013", status, err, frames)
			}
			break
		}
		frames++
	}
	r := <-followed
	if r == nil {
		t.FailNow()
	}
	stored := n.message(t, tok, conv, id)
	if r.done.Status != "complete" || len(r.indexes) != chunks || r.text.String() != stored.Content {
		t.Fatalf("normal follower: %s after %d chunks, %d bytes of %d", r.done.Status, len(r.indexes), r.text.Len(), len(stored.Content))
	}
	t.Logf("slow socket got %d frames before its 1013; the normal one %d chunks", frames, len(r.indexes))
	// The dead one is dropped once its write in flight times out: no
	// session, no queue, is left behind by either.
	streamtest.Eventually(t, 20*time.Second, func() bool {
		return n.metric(t, "chatstream_websockets_open") == 1
	}, "the stuck sessions removed")
}

// hubSessionGoroutines counts the goroutines running WebSocket sessions or
// stream history readers.
func hubSessionGoroutines() int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "chatstream/server.(*session)") || strings.Contains(g, "chatstream/streaming.(*stream).readLoop") {
			// The first line of a stack group is "N @ addr…".
			c, _, _ := strings.Cut(g, " ")
			if v, err := strconv.Atoi(c); err == nil {
				n += v
			} else {
				n++
			}
		}
	}
	return n
}

func TestWS_NoGoroutineOutlivesItsSocket(t *testing.T) {
	// Goroutines of earlier tests are not this test's business.
	ignore := goleak.IgnoreCurrent()
	m := app.New(app.Config{HTTPAddr: "127.0.0.1:0", AuthDev: true, AuthSecret: []byte("goleak-secret-goleak-secret-goleak"),
		RedisURL: testenv.RedisURL(t), DatabaseURL: testenv.NewDatabase(t), KeyPrefix: testenv.Namespace(t),
		Workers: 2, Provider: llm.NewDemo(llm.DemoConfig{TokensPerSec: 400})})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	n := &node{Main: m, url: "http://" + m.Addr().String()}
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)

	// Sockets that follow a stream to its end and close.
	id := n.send(t, tok, conv, demoPrompt(40, 200, "leak?")).StreamID
	var clients []*wsClient
	for range 6 {
		c := n.dial(t, tok)
		c.write(map[string]any{"type": "subscribe", "stream_id": id})
		c.write(map[string]any{"type": "watch", "conversation_id": conv})
		clients = append(clients, c)
	}
	if hubSessionGoroutines() < len(clients) {
		t.Fatalf("%d session goroutines for %d open sockets", hubSessionGoroutines(), len(clients))
	}
	for i, c := range clients {
		c.follow(id, 0)
		if i%2 == 0 {
			c.conn.Close(websocket.StatusNormalClosure, "")
		} else {
			c.conn.CloseNow()
		}
	}
	streamtest.Eventually(t, 10*time.Second, func() bool {
		return hubSessionGoroutines() == 0
	}, "no session goroutine once the sockets closed")

	// Sockets still open at shutdown are closed with 1001 (going away).
	open := []*wsClient{n.dial(t, tok), n.dial(t, tok)}
	for _, c := range open {
		c.write(map[string]any{"type": "watch", "conversation_id": conv})
		c.write(map[string]any{"type": "subscribe", "stream_id": id, "last_index": 30})
		c.follow(id, 31)
	}
	shut := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- m.Shutdown(sctx)
	}()
	for _, c := range open {
		for {
			_, err := c.tryRead(20 * time.Second)
			if err != nil {
				if status := websocket.CloseStatus(err); status != websocket.StatusGoingAway {
					t.Errorf("socket open at shutdown closed with %d (%v), want 1001", status, err)
				}
				break
			}
		}
		c.conn.CloseNow()
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, ignore)
}

func TestWS_ResumeStormSharesHistoryReads(t *testing.T) {
	nodes := demoNodes(t, app.Config{}, 1)
	n := nodes[0]
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	const sockets, from = 200, 5
	conns := make([]*wsClient, sockets)
	ctx := context.Background()
	for i := range conns {
		c, err := n.connect(t, ctx, tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	id := n.send(t, tok, conv, demoPrompt(150, 50, "storm")).StreamID
	// Wait until the stream is well under way.
	first := n.dial(t, tok)
	first.write(map[string]any{"type": "subscribe", "stream_id": id})
	for {
		if f := first.read(); f.Type == "chunk" && f.Index >= 2*from {
			break
		}
	}
	before := n.metric(t, "chatstream_history_reads_total")
	// Every socket resumes from index `from` at once.
	start := make(chan struct{})
	errs := make([]error, sockets)
	var wg sync.WaitGroup
	fs := make([]*hubFollower, sockets)
	for i, c := range conns {
		fs[i] = &hubFollower{t: t, nodes: nodes, token: tok, stream: id, next: from, rng: rand.New(rand.NewPCG(1, uint64(i)))}
		wg.Go(func() {
			<-start
			if err := c.send(ctx, map[string]any{"type": "subscribe", "stream_id": id, "last_index": from - 1, "request_id": "1"}); err != nil {
				errs[i] = err
				return
			}
			fs[i].rid = 1
			_, errs[i] = fs[i].follow(ctx, c, "1")
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	reads := n.metric(t, "chatstream_history_reads_total") - before
	stored := n.message(t, tok, conv, id)
	for i, f := range fs {
		if f.next != 150 || f.done.Status != "complete" || !strings.HasSuffix(stored.Content, f.text.String()) {
			t.Fatalf("socket %d: %d chunks, done %q", i, f.next, f.done.Status)
		}
	}
	// The node's copy of the stream's log (built by the first socket's read
	// and kept up to date by live chunks) serves the resumes; one read at
	// most, should the copy no longer reach back to index `from`.
	t.Logf("%d resumes took %v history reads", sockets, reads)
	if reads > 1 {
		t.Fatalf("%d resumes took %v history reads, want at most 1", sockets, reads)
	}
}

func TestWS_WatchIsPrivateAndUnsubscribeStops(t *testing.T) {
	nodes := demoNodes(t, app.Config{}, 1)
	n := nodes[0]
	alice, bob := n.devToken(t, "alice"), n.devToken(t, "bob")
	conv := n.conversation(t, alice)

	// Bob's socket can neither watch Alice's conversation nor follow her stream.
	b := n.dial(t, bob)
	b.write(map[string]any{"type": "watch", "conversation_id": conv, "request_id": "w"})
	if f := b.read(); f.Type != "error" || f.Code != "not_found" || string(f.RequestID) != `"w"` {
		t.Fatalf("bob watches alice's conversation: %+v", f)
	}
	id := n.send(t, alice, conv, demoPrompt(60, 40, "private")).StreamID
	b.write(map[string]any{"type": "subscribe", "stream_id": id, "request_id": "s"})
	if f := b.read(); f.Type != "error" || f.Code != "not_found" {
		t.Fatalf("bob follows alice's stream: %+v", f)
	}

	// Alice unsubscribes mid-stream: no chunk of it follows the acknowledgement.
	a := n.dial(t, alice)
	a.write(map[string]any{"type": "subscribe", "stream_id": id})
	for {
		if f := a.read(); f.Type == "chunk" && f.Index >= 3 {
			break
		}
	}
	a.write(map[string]any{"type": "unsubscribe", "stream_id": id, "request_id": "u"})
	if f, _ := a.readUntil("unsubscribed"); string(f.RequestID) != `"u"` {
		t.Fatalf("unsubscribed = %+v", f)
	}
	// Let the stream end, seen by another socket, then make sure nothing of
	// it reached the first one after its acknowledgement.
	other := n.dial(t, alice)
	other.write(map[string]any{"type": "subscribe", "stream_id": id})
	other.follow(id, 0)
	a.write(map[string]any{"type": "unwatch", "conversation_id": conv, "request_id": "end"})
	f, before := a.readUntil("unwatched")
	for _, x := range before {
		if x.StreamID == id {
			t.Fatalf("after unsubscribe the socket got %s %d", x.Type, x.Index)
		}
	}
	if string(f.RequestID) != `"end"` {
		t.Fatalf("unwatched = %+v", f)
	}
	// Bob's socket got nothing of Alice's either.
	b.write(map[string]any{"type": "unwatch", "conversation_id": conv, "request_id": "end"})
	if _, before := b.readUntil("unwatched"); len(before) != 0 {
		t.Fatalf("bob's socket got %+v", before)
	}
}

// A socket watching a conversation on a node that lost its Redis pub/sub
// connection gets the conversation and its newest messages again once the
// node is back: events published meanwhile are gone from pub/sub, the state
// is not.
func TestWS_WatchRefilledAfterRedisRestart(t *testing.T) {
	redis := testenv.StartRedisServer(t)
	n := demoNodes(t, app.Config{RedisURL: redis.URL()}, 1)[0]
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	id := n.send(t, tok, conv, demoPrompt(3, 0, "before the outage")).StreamID
	f := &hubFollower{t: t, nodes: []*node{n}, token: tok, stream: id, rng: rand.New(rand.NewPCG(1, 1))}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.run(ctx); err != nil { // the answer is complete in Postgres
		t.Fatal(err)
	}
	c := n.dial(t, tok)
	c.write(map[string]any{"type": "watch", "conversation_id": conv, "request_id": "w"})
	c.readUntil("watching")

	redis.Kill()
	redis.Start()
	// No event was published; the node's resync sends the state again:
	// the conversation, then its newest messages.
	if fr := c.read(); fr.Type != "conversation" || fr.ConversationID != conv {
		t.Fatalf("first refill frame %+v, want the conversation", fr)
	}
	got := map[string]string{}
	for got[id] != "complete" {
		fr := c.read()
		if fr.Type != "message" || fr.ConversationID != conv {
			t.Fatalf("unexpected frame %+v", fr)
		}
		var m apiMessage
		if err := json.Unmarshal(fr.Message, &m); err != nil {
			t.Fatal(err)
		}
		got[m.ID] = string(m.Status)
	}
	if len(got) != 2 {
		t.Fatalf("refilled messages %v, want the user's question and the answer", got)
	}
}
