package integration

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/streamtest"
)

// After CHUNKS_COMPACT_AFTER an ended stream's chunks are gone and its
// compacted parts answer every resume: a snapshot (equal text and parts)
// then done, over a socket and over SSE, from every position.
func TestCompaction_ResumeGetsSnapshotAndDone(t *testing.T) {
	c := newDemoCluster(t, 0)
	n := c.start(t, app.Config{Workers: 1, ChunksCompactAfter: 300 * time.Millisecond})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	s := n.send(t, tok, conv, "/demo think=6 tool=calculator\nWhat is 6 * 7?")
	stored := n.final(t, tok, conv, s.StreamID)
	ws := n.dial(t, tok)
	ws.write(map[string]any{"type": "subscribe", "stream_id": s.StreamID})
	full := ws.follow(s.StreamID, 0)
	last := full.done.LastIndex
	// Right after the end the chunks answer.
	if full.snapshot || int64(len(full.indexes)) != last+1 {
		t.Fatalf("right after the end: snapshot %v, %d chunks", full.snapshot, len(full.indexes))
	}
	streamtest.Eventually(t, 10*time.Second, func() bool { return c.llen(t, s.StreamID) == 0 }, "the chunks are still there")

	for _, from := range []int64{-1, 0, 3, last - 1} {
		ws.write(map[string]any{"type": "subscribe", "stream_id": s.StreamID, "last_index": from})
		r := ws.follow(s.StreamID, from+1)
		if !r.snapshot || len(r.indexes) != 0 || r.done.Status != "complete" || r.done.LastIndex != last {
			t.Fatalf("from %d: snapshot %v, %d chunks, done %+v", from, r.snapshot, len(r.indexes), r.done)
		}
		if got := r.parts.Parts(); r.text.String() != stored.Content || !partsEqual(got, stored.Parts) {
			t.Fatalf("from %d: snapshot %q %+v, stored %q %+v", from, r.text.String(), got, stored.Content, stored.Parts)
		}
	}
	// A follower that holds everything gets done alone.
	ws.write(map[string]any{"type": "subscribe", "stream_id": s.StreamID, "last_index": last})
	if r := ws.follow(s.StreamID, last+1); r.snapshot || r.done.LastIndex != last {
		t.Fatalf("holding it all: snapshot %v, done %+v", r.snapshot, r.done)
	}
	// SSE: the snapshot's id is its last index.
	r := n.sse(t, "/v1/streams/"+s.StreamID+"/events", tok, "2", nil).follow(3)
	if !r.snapshot || r.lastID != strconv.FormatInt(last, 10) || r.done == nil || r.text.String() != stored.Content {
		t.Fatalf("SSE: %+v", r)
	}
	if got := n.metric(t, "chatstream_history_compacted_total"); got < 5 {
		t.Fatalf("chatstream_history_compacted_total = %v, want the 5 resumes", got)
	}
}

func partsEqual(a, b []chatstream.Part) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
