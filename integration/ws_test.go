package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/server"
)

func TestWS_SendStreamsToEnd(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	c := n.dial(t, tok)
	c.write(map[string]any{"type": "send", "conversation_id": conv, "content": "Tell me about pub/sub", "request_id": "r1"})
	acc, _ := c.readUntil("accepted")
	if string(acc.RequestID) != `"r1"` || acc.StreamID == "" || acc.AssistantMessage == nil || acc.AssistantMessage.ID != acc.StreamID {
		t.Fatalf("accepted = %+v", acc)
	}
	r := c.follow(acc.StreamID, 0)
	if r.done.Status != "complete" || len(r.indexes) == 0 {
		t.Fatalf("done = %+v after %d chunks", r.done, len(r.indexes))
	}
	stored := n.message(t, tok, conv, acc.StreamID)
	if stored.Status != "complete" || stored.Content != r.text.String() {
		t.Fatalf("stored %q (%s), streamed %q", stored.Content, stored.Status, r.text.String())
	}
}

func TestWS_FanOutAcrossNodes(t *testing.T) {
	db := testenv.NewDatabase(t)
	prefix := testenv.Namespace(t)
	secret := []byte("fanout-secret-fanout-secret-fanout")
	slow := llm.NewDemo(llm.DemoConfig{TokensPerSec: 100})
	a := demoNode(t, app.Config{Workers: 2, DatabaseURL: db, KeyPrefix: prefix, AuthSecret: secret, Provider: slow})
	b := demoNode(t, app.Config{Workers: 0, DatabaseURL: db, KeyPrefix: prefix, AuthSecret: secret})
	tok := a.devToken(t, "alice")
	conv := a.conversation(t, tok)
	var sent struct {
		StreamID string `json:"stream_id"`
	}
	if code := a.call(t, "POST", "/v1/conversations/"+conv+"/messages", tok, map[string]string{"content": "fan out"}, &sent); code != 202 {
		t.Fatalf("send = %d", code)
	}
	const perNode = 5
	var wg sync.WaitGroup
	results := make([]*streamResult, 2*perNode)
	for i := range results {
		n := a
		if i%2 == 1 {
			n = b
		}
		c := n.dial(t, tok)
		c.write(map[string]any{"type": "subscribe", "stream_id": sent.StreamID, "last_index": -1})
		wg.Go(func() { results[i] = c.follow(sent.StreamID, 0) })
	}
	wg.Wait()
	stored := a.message(t, tok, conv, sent.StreamID)
	for i, r := range results {
		if r.text.String() != stored.Content || r.done.Status != "complete" {
			t.Fatalf("follower %d got %d chunks %q, stored %q", i, len(r.indexes), r.text.String(), stored.Content)
		}
	}
}

func TestWS_ResumeMidStreamAndAfterDone(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1, Provider: llm.NewDemo(llm.DemoConfig{TokensPerSec: 100})})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	c := n.dial(t, tok)
	c.write(map[string]any{"type": "send", "conversation_id": conv, "content": "resume me"})
	acc, _ := c.readUntil("accepted")
	// Read a few chunks, drop the socket, resume from the last index held.
	var text string
	last := int64(-1)
	for last < 4 {
		f := c.read()
		if f.Type == "chunk" {
			text += f.Content
			last = f.Index
		}
	}
	c.conn.CloseNow()
	c2 := n.dial(t, tok)
	c2.write(map[string]any{"type": "subscribe", "stream_id": acc.StreamID, "last_index": last})
	r := c2.follow(acc.StreamID, last+1)
	stored := n.message(t, tok, conv, acc.StreamID)
	if text+r.text.String() != stored.Content {
		t.Fatalf("resumed text differs from stored:\n%q\n%q", text+r.text.String(), stored.Content)
	}
	// After the end: from the middle, and from the end.
	c3 := n.dial(t, tok)
	c3.write(map[string]any{"type": "subscribe", "stream_id": acc.StreamID, "last_index": 2})
	r3 := c3.follow(acc.StreamID, 3)
	if r3.done.Status != "complete" || r3.indexes[0] != 3 {
		t.Fatalf("resume after done: %+v", r3.indexes)
	}
	c3.write(map[string]any{"type": "subscribe", "stream_id": acc.StreamID, "last_index": r3.done.LastIndex})
	r4 := c3.follow(acc.StreamID, r3.done.LastIndex+1)
	if len(r4.indexes) != 0 || r4.done.Status != "complete" {
		t.Fatalf("resume at the end got %d chunks, done %+v", len(r4.indexes), r4.done)
	}
}

func TestWS_SnapshotAfterTTL(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1, StreamTTL: time.Second})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	c := n.dial(t, tok)
	c.write(map[string]any{"type": "send", "conversation_id": conv, "content": "expire me"})
	acc, _ := c.readUntil("accepted")
	full := c.follow(acc.StreamID, 0)
	// Wait for the chunk log to expire: a subscriber of the stream's meta key
	// space would be neater; polling the public API is enough here.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.write(map[string]any{"type": "subscribe", "stream_id": acc.StreamID, "last_index": 2})
		r := c.follow(acc.StreamID, 3)
		if r.snapshot {
			if r.text.String() != full.text.String() || r.done.LastIndex != full.done.LastIndex {
				t.Fatalf("snapshot %q last %d, want %q last %d", r.text.String(), r.done.LastIndex, full.text.String(), full.done.LastIndex)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshot 20 s after the TTL")
		}
		time.Sleep(200 * time.Millisecond) // polling for expiry, bounded above
	}
}

func TestWS_Watch(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	tab2 := n.dial(t, tok)
	tab2.write(map[string]any{"type": "watch", "conversation_id": conv, "request_id": 7})
	if f, _ := tab2.readUntil("watching"); string(f.RequestID) != "7" {
		t.Fatalf("watching = %+v", f)
	}
	tab1 := n.dial(t, tok)
	tab1.write(map[string]any{"type": "send", "conversation_id": conv, "content": "hello from tab 1"})
	acc, _ := tab1.readUntil("accepted")
	// Tab 2 learns of the user message and the assistant message, follows
	// the answer, and sees its status change.
	seen := map[string]string{}
	for len(seen) < 2 {
		f := tab2.read()
		if f.Type == "message" {
			var m apiMessage
			if err := json.Unmarshal(f.Message, &m); err != nil {
				t.Fatal(err)
			}
			seen[m.Role] = m.ID
		}
	}
	if seen["assistant"] != acc.StreamID {
		t.Fatalf("tab 2 saw %v, want assistant %s", seen, acc.StreamID)
	}
	tab2.write(map[string]any{"type": "subscribe", "stream_id": acc.StreamID})
	r := tab2.follow(acc.StreamID, 0)
	// The message event and the done frame travel on different channels:
	// the event may come first.
	for i := 0; ; i++ {
		var f frame
		if i < len(r.others) {
			f = r.others[i]
		} else {
			f = tab2.read()
		}
		if f.Type == "message" {
			var m apiMessage
			_ = json.Unmarshal(f.Message, &m)
			if m.ID == acc.StreamID && m.Status == "complete" {
				if m.Content != r.text.String() {
					t.Fatalf("event content %q != streamed %q", m.Content, r.text.String())
				}
				return
			}
		}
	}
}

func TestWS_BadFrames(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1})
	alice, bob := n.devToken(t, "alice"), n.devToken(t, "bob")
	conv := n.conversation(t, alice)
	c := n.dial(t, bob)
	cases := []struct {
		raw, code string
	}{
		{`not json`, "invalid_frame"},
		{`[1,2]`, "invalid_frame"},
		{`{"type":"dance"}`, "unknown_type"},
		{`{}`, "invalid_request"},
		{`{"type":"subscribe"}`, "invalid_request"},
		{`{"type":"subscribe","stream_id":"nope"}`, "not_found"},
		{`{"type":"subscribe","stream_id":"00000000-0000-0000-0000-000000000000"}`, "not_found"},
		{`{"type":"subscribe","stream_id":"00000000-0000-0000-0000-000000000000","last_index":-5}`, "invalid_request"},
		{`{"type":"watch","conversation_id":"` + conv + `"}`, "not_found"},
		{`{"type":"send","conversation_id":"` + conv + `","content":"hi"}`, "not_found"},
		{`{"type":"send","conversation_id":"` + conv + `"}`, "invalid_request"},
		{`{"type":"send","conversation_id":"` + conv + `","content":"   "}`, "invalid_request"},
		{`{"type":"send","conversation_id":"` + conv + `","content":"` + fmt.Sprintf("%040000d", 0) + `"}`, "too_large"},
		{`{"type":"cancel","stream_id":"00000000-0000-0000-0000-000000000000"}`, "not_found"},
		{`{"type":"send","conversation_id":"` + conv + `","content":"a\u0000b"}`, "invalid_request"},
	}
	for i, tc := range cases {
		c.writeRaw([]byte(tc.raw))
		f := c.read()
		if f.Type != "error" || f.Code != tc.code {
			t.Fatalf("case %d %.60s: got %+v, want error %s", i, tc.raw, f, tc.code)
		}
	}
	// A field of the wrong type: the error still carries the request_id,
	// and says what was expected in JSON's words, not Go's.
	c.writeRaw([]byte(`{"type":"subscribe","stream_id":"x","last_index":"7","request_id":"typed"}`))
	if f := c.read(); f.Code != "invalid_frame" || string(f.RequestID) != `"typed"` ||
		!strings.Contains(string(f.Message), "whole number") || strings.Contains(string(f.Message), "int64") {
		t.Fatalf("wrong field type: %+v (message %s)", f, f.Message)
	}
	// Nothing changed: alice's conversation has no message.
	var got struct{ Messages []apiMessage }
	n.call(t, "GET", "/v1/conversations/"+conv, alice, nil, &got)
	if len(got.Messages) != 0 {
		t.Fatalf("bad frames created messages: %+v", got.Messages)
	}
	// The socket still works.
	c.write(map[string]any{"type": "unwatch", "conversation_id": conv, "request_id": "x"})
	if f := c.read(); f.Type != "unwatched" {
		t.Fatalf("socket unusable after bad frames: %+v", f)
	}
	// Over the read limit: closed with 1009.
	c.writeRaw(make([]byte, server.ReadLimit(32768)+1))
	_, err := c.tryRead(10 * time.Second)
	if status := int(websocket.CloseStatus(err)); status != 1009 {
		t.Fatalf("oversized frame: close status %d (%v), want 1009", status, err)
	}
}

func TestWS_LongHistoryFitsSmallQueue(t *testing.T) {
	// A history many times longer than the socket's queue is handed over in
	// slices that fit: the socket is not closed as a slow consumer.
	cfg := app.Config{Workers: 1}
	cfg.WS.SendQueue = 32
	n := demoNode(t, cfg)
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	var sent struct {
		StreamID string `json:"stream_id"`
	}
	if code := n.call(t, "POST", "/v1/conversations/"+conv+"/messages", tok, map[string]string{"content": "/demo tokens=600 rate=0\nlong"}, &sent); code != 202 {
		t.Fatalf("send = %d", code)
	}
	// The whole answer is history before anyone follows it: wait for its end
	// through a watcher of the conversation.
	w := n.dial(t, tok)
	w.write(map[string]any{"type": "watch", "conversation_id": conv})
	w.readUntil("watching")
	var stored apiMessage
	for stored = n.message(t, tok, conv, sent.StreamID); stored.Status == "streaming"; stored = n.message(t, tok, conv, sent.StreamID) {
		w.read() // the status-change event (or a read timeout fails the test)
	}
	c := n.dial(t, tok)
	c.write(map[string]any{"type": "subscribe", "stream_id": sent.StreamID, "last_index": -1})
	r := c.follow(sent.StreamID, 0)
	if len(r.indexes) != 600 || r.text.String() != stored.Content || r.done.Status != "complete" {
		t.Fatalf("got %d chunks, done %+v", len(r.indexes), r.done)
	}
}

func TestWS_DeadPeerDropped(t *testing.T) {
	// The node pings every socket; one that does not answer (a client that
	// never reads cannot) is dropped, one that reads stays.
	cfg := app.Config{}
	cfg.WS.PingInterval = 200 * time.Millisecond
	cfg.WS.PingTimeout = 200 * time.Millisecond
	n := demoNode(t, cfg)
	tok := n.devToken(t, "alice")
	live := n.dial(t, tok)
	readErr := make(chan error, 1)
	go func() { _, err := live.tryRead(time.Minute); readErr <- err }()
	dead := n.dial(t, tok)
	_ = dead // never read from
	waitFor := func(want int) {
		deadline := time.Now().Add(15 * time.Second)
		for int(n.metric(t, "chatstream_websockets_open")) != want {
			if time.Now().After(deadline) {
				t.Fatalf("open sockets = %d, want %d", int(n.metric(t, "chatstream_websockets_open")), want)
			}
			time.Sleep(20 * time.Millisecond) // polling a gauge, bounded above
		}
	}
	waitFor(2)
	waitFor(1) // the dead peer is gone
	select {
	case err := <-readErr:
		t.Fatalf("the live socket was closed: %v", err)
	default:
	}
}

func TestWS_CrossOriginUpgrade(t *testing.T) {
	dialFrom := func(n *node, tok, origin string) (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, res, err := websocket.Dial(ctx, strings.Replace(n.url, "http://", "ws://", 1)+"/v1/ws", &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}, "Origin": {origin}},
		})
		if err == nil {
			conn.CloseNow()
		}
		if res == nil {
			return 0, err
		}
		return res.StatusCode, err
	}
	n := demoNode(t, app.Config{})
	tok := n.devToken(t, "alice")
	if code, err := dialFrom(n, tok, "http://evil.example"); err == nil || code != http.StatusForbidden {
		t.Fatalf("a foreign page opened a socket: status %d, err %v", code, err)
	}
	if code, err := dialFrom(n, tok, n.url); err != nil || code != http.StatusSwitchingProtocols {
		t.Fatalf("same-origin upgrade: status %d, err %v", code, err)
	}
	cfg := app.Config{}
	cfg.WS.OriginPatterns = []string{"chat.example.com"}
	allowed := demoNode(t, cfg)
	tok = allowed.devToken(t, "alice")
	if code, err := dialFrom(allowed, tok, "https://chat.example.com"); err != nil || code != http.StatusSwitchingProtocols {
		t.Fatalf("listed origin: status %d, err %v", code, err)
	}
}
