package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/limits"
	"github.com/chatstream/chatstream/llm/llmtest"
)

// refusal is what a refused request answered.
type refusal struct {
	status     int
	code       string
	retryAfter string
}

// post sends a JSON request and returns its status, error code and
// Retry-After.
func (n *node) post(t *testing.T, path, token string, body any) refusal {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", n.url+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var e struct{ Error struct{ Code string } }
	_ = json.NewDecoder(res.Body).Decode(&e)
	return refusal{status: res.StatusCode, code: e.Error.Code, retryAfter: res.Header.Get("Retry-After")}
}

func (r refusal) wantLimited(t *testing.T, what string) {
	t.Helper()
	if r.status != http.StatusTooManyRequests || r.code != chatstream.ERATELIMIT || r.retryAfter == "" {
		t.Fatalf("%s: %+v, want 429 rate_limited with Retry-After", what, r)
	}
}

// Two nodes share each user's limits through Redis: the limit refuses the
// next request on either node, other users go on, a refused send stores
// nothing, and the count is freed when a generation ends.
func TestLimits_GenerationsAndSendsAcrossNodes(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	lim := func(cfg *app.Config) {
		cfg.Limits = limits.Config{MaxActiveGenerations: 2, SendRate: 5, ConversationRate: -1}
	}
	a, b := c.node(t, 1, lim), c.node(t, 1, lim)
	alice, bob := a.devToken(t, "alice"), a.devToken(t, "bob")
	held := make(chan struct{})
	defer close(held)
	for range 3 {
		c.llm.Enqueue(llmtest.Script{BlockUntil: held})
	}
	first := a.send(t, alice, a.conversation(t, alice), "one")
	b.send(t, alice, b.conversation(t, alice), "two")
	third := a.conversation(t, alice)
	a.post(t, "/v1/conversations/"+third+"/messages", alice, map[string]string{"content": "three"}).wantLimited(t, "a third active generation on node a")
	b.post(t, "/v1/conversations/"+third+"/messages", alice, map[string]string{"content": "three"}).wantLimited(t, "a third active generation on node b")
	if msgs := a.messages(t, alice, third); len(msgs) != 0 {
		t.Fatalf("a refused send stored %+v", msgs)
	}
	// Another user is not held back.
	bobs := b.send(t, bob, b.conversation(t, bob), "bob's")
	// The end of a generation frees its place.
	if code := a.call(t, "POST", "/v1/streams/"+first.StreamID+"/cancel", alice, nil, nil); code != http.StatusAccepted {
		t.Fatalf("cancel: %d", code)
	}
	a.final(t, alice, first.UserMessage.ConversationID, first.StreamID)
	c.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(2)})
	b.send(t, alice, third, "three, now")
	// Every attempt counts against the rate, the refused ones too: that
	// was alice's fifth send within the minute, and a sixth is refused.
	r := a.post(t, "/v1/conversations/"+a.conversation(t, alice)+"/messages", alice, map[string]string{"content": "six"})
	r.wantLimited(t, "the sixth send within a minute")
	if bobs.StreamID == "" {
		t.Fatal("bob's send")
	}
}

// A user's sockets are counted on every node; a closed one frees its place,
// and so do the sockets of a node that died, once its presence expires.
func TestLimits_SocketsAcrossNodes(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	lim := limits.Config{MaxSockets: 3}
	a := c.node(t, 0, func(cfg *app.Config) { cfg.Limits = lim })
	port := freePort(t)
	proc := c.startProcess(t, "doomed", func(ps *processSpec) { ps.HTTPAddr = port; ps.Limits = lim })
	doomed := &node{url: "http://" + port}
	tok := a.devToken(t, "alice")
	dial := func(n *node) (*websocket.Conn, refusal) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, res, err := websocket.Dial(ctx, strings.Replace(n.url, "http://", "ws://", 1)+"/v1/ws",
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		if err == nil {
			t.Cleanup(func() { conn.CloseNow() })
			return conn, refusal{status: http.StatusSwitchingProtocols}
		}
		if res == nil {
			t.Fatalf("dial %s: %v", n.url, err)
		}
		return nil, refusal{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After")}
	}
	first, _ := dial(a)
	dial(doomed)
	dial(doomed)
	if _, r := dial(a); r.status != http.StatusTooManyRequests || r.retryAfter == "" {
		t.Fatalf("a fourth socket: %+v, want 429 with Retry-After", r)
	}
	if _, r := dial(doomed); r.status != http.StatusTooManyRequests {
		t.Fatalf("a fourth socket on the other node: %+v, want 429", r)
	}
	// Another user is not held back.
	bob := a.devToken(t, "bob")
	if _, _, err := websocket.Dial(context.Background(), strings.Replace(a.url, "http://", "ws://", 1)+"/v1/ws?access_token="+bob, nil); err != nil {
		t.Fatalf("bob's socket: %v", err)
	}
	first.Close(websocket.StatusNormalClosure, "")
	streamtest.Eventually(t, 10*time.Second, func() bool {
		_, r := dial(a)
		return r.status == http.StatusSwitchingProtocols
	}, "a closed socket never freed its place")

	// The node that holds two of the three dies: no one releases them.
	proc.kill(t)
	streamtest.Eventually(t, 15*time.Second, func() bool {
		_, r := dial(a)
		return r.status == http.StatusSwitchingProtocols
	}, "a dead node's sockets still count")
	if _, r := dial(a); r.status != http.StatusSwitchingProtocols {
		t.Fatalf("the second place a dead node held: %+v", r)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr())
}

// A generation of a node that died is ended by another node's reaper, and
// no longer counts against its user's limit.
func TestLimits_GenerationOfADeadNodeIsFreed(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	lim := limits.Config{MaxActiveGenerations: 1}
	api := c.node(t, 0, func(cfg *app.Config) { cfg.Limits = lim })
	proc := c.startProcess(t, "doomed", func(ps *processSpec) { ps.Limits = lim })
	alice := api.devToken(t, "alice")
	c.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(1000), Interval: 20 * time.Millisecond})
	s := api.send(t, alice, api.conversation(t, alice), "q")
	streamtest.Eventually(t, 10*time.Second, func() bool { return c.llen(t, s.StreamID) >= 1 }, "the doomed node never started")
	next := api.conversation(t, alice)
	api.post(t, "/v1/conversations/"+next+"/messages", alice, map[string]string{"content": "second"}).wantLimited(t, "a second generation")
	proc.kill(t)
	c.node(t, 1, func(cfg *app.Config) { cfg.Limits = lim }) // its reaper takes the dead node's job over
	if m := api.final(t, alice, s.UserMessage.ConversationID, s.StreamID); m.Status != chatstream.StatusFailed || m.Error.Code != "worker_lost" {
		t.Fatalf("the dead node's answer: %+v", m)
	}
	c.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(2)})
	api.send(t, alice, next, "second, now")
}
