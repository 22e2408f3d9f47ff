package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/limits"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/worker"
)

// Three sockets of one user on their own live stream; the middle one claims
// the largest last_index there is. It used to overflow into a negative
// start and panic in the history read, taking the whole node down. Now the
// claim beyond a JavaScript-safe integer is refused, one at the limit gets a
// snapshot, and the other sockets stream to the end.
func TestWS_LargestLastIndexClaim(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1, Provider: llm.NewDemo(llm.DemoConfig{TokensPerSec: 200})})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	s := n.send(t, tok, conv, "/demo tokens=40\nthree sockets")
	first, middle, last := n.dial(t, tok), n.dial(t, tok), n.dial(t, tok)
	first.write(map[string]any{"type": "subscribe", "stream_id": s.StreamID, "last_index": -1})
	middle.write(map[string]any{"type": "subscribe", "stream_id": s.StreamID, "last_index": int64(math.MaxInt64), "request_id": "huge"})
	last.write(map[string]any{"type": "subscribe", "stream_id": s.StreamID, "last_index": -1})

	errf, _ := middle.readUntil("error")
	if errf.Code != "invalid_request" || string(errf.RequestID) != `"huge"` {
		t.Fatalf("claim of MaxInt64: %+v", errf)
	}
	middle.write(map[string]any{"type": "subscribe", "stream_id": s.StreamID, "last_index": int64(1<<53 - 1)})
	claimed := middle.follow(s.StreamID, 1<<53)
	for _, c := range []*wsClient{first, last} {
		r := c.follow(s.StreamID, 0)
		if r.done.Status != "complete" || len(r.indexes) != 40 {
			t.Fatalf("a neighbour got %d chunks, done %+v", len(r.indexes), r.done)
		}
	}
	stored := n.final(t, tok, conv, s.StreamID)
	if !claimed.snapshot || claimed.text.String() != stored.Content || claimed.done.LastIndex != 39 {
		t.Fatalf("the claim at the limit got snapshot=%v, text %q, done %+v; stored %q",
			claimed.snapshot, claimed.text.String(), claimed.done, stored.Content)
	}
	// The node still serves.
	first.write(map[string]any{"type": "send", "conversation_id": conv, "content": "/demo tokens=3\nstill here"})
	acc, _ := first.readUntil("accepted")
	if r := first.follow(acc.StreamID, 0); r.done.Status != "complete" {
		t.Fatalf("a later send: %+v", r.done)
	}
}

// A legal message of 22,000 bytes that a client escapes as \u00e9 is a
// 66 KB frame: the read limit fits six bytes per byte of MAX_CONTENT_BYTES.
func TestWS_EscapedMessageFits(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	c := n.dial(t, tok)
	content := strings.Repeat(`\u00e9`, 11000) // é is 2 bytes: 22,000 bytes of content
	c.writeRaw([]byte(`{"type":"send","conversation_id":"` + conv + `","content":"/demo tokens=2\n` + content + `"}`))
	acc, _ := c.readUntil("accepted")
	if got := len(acc.UserMessage.Content); got != 22000+len("/demo tokens=2\n") {
		t.Fatalf("stored %d bytes", got)
	}
	c.follow(acc.StreamID, 0)
}

// Another user's stream answers exactly as a missing one, on every route
// and frame that takes a stream id, whether its chunk log is in Redis or
// only its message in Postgres.
func TestStreams_ForeignAnswersAsMissing(t *testing.T) {
	prefix := testenv.Namespace(t)
	n := demoNode(t, app.Config{Workers: 1, KeyPrefix: prefix})
	alice, bob := n.devToken(t, "alice"), n.devToken(t, "bob")
	conv := n.conversation(t, alice)
	live := n.send(t, alice, conv, "/demo tokens=2\nlive")
	n.final(t, alice, conv, live.StreamID)
	expired := n.send(t, alice, conv, "/demo tokens=2\nexpired")
	n.final(t, alice, conv, expired.StreamID)
	rc, err := streaming.NewClient(testenv.RedisURL(t), streaming.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	keys := streaming.Keys{Prefix: prefix}
	if err := rc.Do(streamtest.Ctx(t), rc.B().Del().Key(keys.Meta(expired.StreamID), keys.Chunks(expired.StreamID)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	missing := "00000000-0000-4000-8000-000000000000"

	httpAnswer := func(id string) string {
		var body json.RawMessage
		code := n.call(t, "POST", "/v1/streams/"+id+"/cancel", bob, nil, &body)
		return fmt.Sprintf("%d %s", code, body)
	}
	c := n.dial(t, bob)
	wsAnswer := func(typ, id string) string {
		c.write(map[string]any{"type": typ, "stream_id": id, "last_index": -1})
		f := c.read()
		return fmt.Sprintf("%s %v %s %s", f.Type, f.StreamID == id, f.Code, f.Message)
	}
	want := map[string]string{"http": httpAnswer(missing), "cancel": wsAnswer("cancel", missing), "subscribe": wsAnswer("subscribe", missing)}
	if !strings.HasPrefix(want["http"], "404 ") || !strings.HasPrefix(want["subscribe"], "error ") {
		t.Fatalf("a missing stream: %v", want)
	}
	for _, id := range []string{live.StreamID, expired.StreamID} {
		got := map[string]string{"http": httpAnswer(id), "cancel": wsAnswer("cancel", id), "subscribe": wsAnswer("subscribe", id)}
		for k := range want {
			if got[k] != want[k] {
				t.Errorf("%s of alice's stream %s as bob: %q; a missing one: %q", k, id, got[k], want[k])
			}
		}
	}
}

// A socket is honoured until its token's exp, then closed with 4001.
func TestWS_ClosedWhenTheTokenExpires(t *testing.T) {
	secret := []byte("expiry-secret-expiry-secret-expiry")
	n := demoNode(t, app.Config{AuthSecret: secret})
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: "alice", ExpiresAt: jwt.NewNumericDate(time.Now().Add(2 * time.Second)),
	}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	c := n.dial(t, tok)
	_, err = c.tryRead(30 * time.Second)
	if status := int(websocket.CloseStatus(err)); status != 4001 {
		t.Fatalf("close status %d (%v), want 4001", status, err)
	}
}

// U+0000 in a title or a message is refused with 400, not a 500 from
// Postgres; nothing is stored.
func TestHTTP_NULRefused(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	var e struct{ Error struct{ Code string } }
	if code := n.call(t, "POST", "/v1/conversations", tok, map[string]string{"title": "a\x00b"}, &e); code != 400 || e.Error.Code != "invalid_request" {
		t.Fatalf("title with NUL: %d %+v", code, e)
	}
	if code := n.call(t, "POST", "/v1/conversations/"+conv+"/messages", tok, map[string]string{"content": "a\x00b"}, &e); code != 400 || e.Error.Code != "invalid_request" {
		t.Fatalf("message with NUL: %d %+v", code, e)
	}
	if msgs := n.messages(t, tok, conv); len(msgs) != 0 {
		t.Fatalf("stored %+v", msgs)
	}
}

// A client that trickles a request body is cut off at BodyTimeout, also on
// a route that refuses it before reading the body (net/http reads what is
// left after the 401). It used to hold the connection forever.
func TestHTTP_TricklingBodyIsCut(t *testing.T) {
	n := demoNode(t, app.Config{BodyTimeout: 300 * time.Millisecond})
	for _, path := range []string{"/v1/conversations", "/v1/auth/dev-token"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(n.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", path)
		// The trickle: a byte every 200 ms, until the server hangs up.
		go func() {
			for {
				time.Sleep(200 * time.Millisecond) // the trickle's pace, not a wait for an event
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}()
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = io.ReadAll(conn) // the answer, then the end of the connection
		if err != nil {
			t.Fatalf("%s: the server did not close a trickling connection: %v", path, err)
		}
	}
}

// With AUTH_DEV a node serves only loopback host names by default: a page on
// a name rebound to 127.0.0.1 gets neither a token nor a socket.
func TestHTTP_ReboundHostRefused(t *testing.T) {
	n := demoNode(t, app.Config{})
	do := func(host, method, path string, body string, header http.Header) int {
		req, err := http.NewRequest(method, n.url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		for k, v := range header {
			req.Header[k] = v
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	port := n.url[strings.LastIndex(n.url, ":")+1:]
	evil := "attacker.example:" + port
	if code := do(evil, "POST", "/v1/auth/dev-token", `{"user":"victim"}`, nil); code != http.StatusBadRequest {
		t.Fatalf("dev-token through a rebound name: %d", code)
	}
	tok := n.devToken(t, "alice")
	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Origin": {"http://" + evil}, "Authorization": {"Bearer " + tok}}
	if code := do(evil, "GET", "/v1/ws", "", upgrade); code != http.StatusBadRequest {
		t.Fatalf("socket through a rebound name: %d", code)
	}
	for _, host := range []string{"localhost:" + port, "127.0.0.1:" + port, "[::1]:" + port} {
		if code := do(host, "POST", "/v1/auth/dev-token", `{"user":"alice"}`, nil); code != http.StatusOK {
			t.Fatalf("dev-token on %s: %d", host, code)
		}
	}
	if code := do(evil, "GET", "/healthz", "", nil); code != http.StatusOK {
		t.Fatalf("healthz answers probes by any name: %d", code)
	}
}

// One client address holds at most MaxConnsPerAddr connections; more are
// closed at once, and a closed one frees its place.
func TestHTTP_ConnectionsPerAddressCapped(t *testing.T) {
	n := demoNode(t, app.Config{MaxConnsPerAddr: 3})
	addr := strings.TrimPrefix(n.url, "http://")
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// The cap counts accepted connections: make sure the three are.
	for _, c := range held {
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatal(err)
		}
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a fourth connection was not closed at once: %v", err)
	}
	held[0].Close()
	streamtest.Eventually(t, 10*time.Second, func() bool {
		res, err := http.Get(n.url + "/healthz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, "a closed connection never freed its place")
}

// One user's backlog does not delay another user's first answer behind it:
// with two workers and twenty queued answers of one user, another user's
// answer starts after at most the ones already taken and one more round.
func TestQueue_AnotherUsersFirstChunkIsNotBehindABacklog(t *testing.T) {
	prefix := testenv.Namespace(t)
	const workers = 2
	n := demoNode(t, app.Config{Workers: workers, KeyPrefix: prefix, Limits: limits.Off()})
	greedy, bob := n.devToken(t, "greedy"), n.devToken(t, "bob")
	var backlog []string
	for range 20 {
		backlog = append(backlog, n.send(t, greedy, n.conversation(t, greedy), "/demo tokens=10 rate=50\nmore").StreamID)
	}
	bobConv := n.conversation(t, bob)
	sentAt := time.Now().UnixMicro()
	bobs := n.send(t, bob, bobConv, "/demo tokens=3 rate=50\nmine")
	n.final(t, bob, bobConv, bobs.StreamID)

	rc, err := streaming.NewClient(testenv.RedisURL(t), streaming.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	keys := streaming.Keys{Prefix: prefix}
	firstChunk := func(id string) int64 {
		t.Helper()
		var ts int64
		streamtest.Eventually(t, 60*time.Second, func() bool {
			b, err := rc.Do(streamtest.Ctx(t), rc.B().Lindex().Key(keys.Chunks(id)).Index(0).Build()).AsBytes()
			if err != nil {
				return false
			}
			ts, _ = protocol.ChunkTS(b)
			return true
		}, "stream %s never started", id)
		return ts
	}
	bobFirst := firstChunk(bobs.StreamID)
	before, beforeSend := 0, 0
	for _, id := range backlog {
		ts := firstChunk(id)
		if ts < bobFirst {
			before++
		}
		if ts < sentAt {
			beforeSend++
		}
	}
	// Started before bob's: those taken before his send (beforeSend, and
	// one per worker taken but not yet streaming), and one job of the round
	// his joined. In arrival order it would be all twenty.
	if before > beforeSend+workers+1 {
		t.Fatalf("%d of the backlog started before another user's answer (%d had before it was sent)", before, beforeSend)
	}
}

// Dev tokens are counted per client address, and new conversations per
// user, across nodes.
func TestLimits_DevTokensAndConversations(t *testing.T) {
	c := newCluster(t)
	lim := func(cfg *app.Config) { cfg.Limits = limits.Config{DevTokenRate: 3, ConversationRate: 2} }
	a, b := c.node(t, 0, lim), c.node(t, 0, lim)
	a.devToken(t, "u1")
	b.devToken(t, "u2")
	tok := a.devToken(t, "u3")
	a.post(t, "/v1/auth/dev-token", "", map[string]string{"user": "u4"}).wantLimited(t, "a fourth dev token from one address")
	a.conversation(t, tok)
	b.conversation(t, tok)
	b.post(t, "/v1/conversations", tok, map[string]string{}).wantLimited(t, "a third conversation within a minute")
}

// A socket's subscribe and watch frames are bounded: a burst, then a rate.
func TestWS_SubscribeRate(t *testing.T) {
	cfg := app.Config{}
	cfg.WS.SubscribeBurst, cfg.WS.SubscribeRate = 5, 0.5
	n := demoNode(t, cfg)
	c := n.dial(t, n.devToken(t, "alice"))
	for i := range 6 {
		c.write(map[string]any{"type": "subscribe", "stream_id": fmt.Sprintf("00000000-0000-4000-8000-%012d", i), "request_id": i})
		f := c.read()
		if i < 5 && f.Code != "not_found" {
			t.Fatalf("subscribe %d: %+v", i, f)
		}
		if i == 5 && (f.Code != "rate_limited" || string(f.RequestID) != "5") {
			t.Fatalf("the sixth subscribe at once: %+v", f)
		}
	}
}

// The demo model is capped by MAX_ANSWER_BYTES like any model: however
// many tokens a user asks for, the answer ends complete with "length".
func TestPipeline_DemoCappedByMaxAnswerBytes(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1, Worker: worker.Config{MaxAnswerBytes: 2000}})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	s := n.send(t, tok, conv, "/demo tokens=200000 rate=0\nas long as you can")
	m := n.final(t, tok, conv, s.StreamID)
	if m.Status != "complete" || m.FinishReason != "length" || len(m.Content) > 2000 || len(m.Content) < 1900 {
		t.Fatalf("message %s, %q, %d bytes", m.Status, m.FinishReason, len(m.Content))
	}
}
