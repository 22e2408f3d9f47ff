package integration

import (
	"math"
	"testing"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/llm"
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
