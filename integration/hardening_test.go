package integration

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/streaming"
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
	if status := websocketStatus(err); status != 4001 {
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
