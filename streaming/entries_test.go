package streaming_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// demoAnswer is an answer as the demo model writes it: a word a chunk.
func demoAnswer(chunks int) []chatstream.Part {
	words := strings.Fields("Good question! When people ask about streaming, the answer usually comes down to three things: clarity, feedback and simplicity. Here is a small sketch that shows the idea.")
	parts := make([]chatstream.Part, chunks)
	for i := range parts {
		parts[i] = chatstream.Part{Type: chatstream.PartText, Text: " " + words[i%len(words)]}
	}
	return parts
}

// The log stores compact entries and reads back the very frames that were
// published, whatever their kind; entries and whole frames (as older logs
// hold) mix in one log.
func TestLog_EntriesReadAsPublished(t *testing.T) {
	l := newLog(t)
	ctx := ctxT(t)
	const id = "00000000-0000-4000-8000-0000000000e1"
	m := created(t, l, id)
	parts := []chatstream.Part{
		{Type: chatstream.PartReasoning, Text: "let me think: about \"it\""},
		{Type: chatstream.PartText, Text: "line one\nline two ünï 😀"},
		{Type: chatstream.PartToolCall, CallID: "c1", Name: "save_note", Arguments: `{"text":"x"}`, RequiresApproval: true},
		{Type: chatstream.PartToolApproval, CallID: "c1", Approved: true, Reason: "user"},
		{Type: chatstream.PartToolResult, CallID: "c1", Name: "save_note", Output: "saved \xff"},
		{Type: chatstream.PartText, Text: ""},
	}
	var published [][]byte
	start := time.Now()
	for i, p := range parts {
		ts := start.Add(time.Duration(i) * time.Millisecond)
		frame := protocol.AppendPartChunk(nil, id, int64(i), p, ts.UnixMicro())
		published = append(published, frame)
		if _, err := l.AppendPart(ctx, id, m.Epoch, int64(i), frame, p, ts); err != nil {
			t.Fatal(err)
		}
	}
	// A whole frame appended the old way sits among them.
	old := chunkFrame(id, int64(len(parts)), " old")
	published = append(published, old)
	if _, err := l.Append(ctx, id, m.Epoch, int64(len(parts)), old); err != nil {
		t.Fatal(err)
	}
	hist, err := l.Read(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.Frames) != len(published) {
		t.Fatalf("read %d frames, want %d", len(hist.Frames), len(published))
	}
	for i := range published {
		if !bytes.Equal(hist.Frames[i], published[i]) {
			t.Fatalf("frame %d read as\n%s\npublished\n%s", i, hist.Frames[i], published[i])
		}
	}
	if from3, err := l.Read(ctx, id, 3); err != nil || !bytes.Equal(from3.Frames[0], published[3]) {
		t.Fatalf("read from 3: %v", err)
	}
	// The call that requires approval waits (AppendPart marks it).
	if got := l.redis(t, "HGET", l.keys.Meta(id), "wait:c1"); got == "null" {
		t.Fatalf("the tool call is not marked waiting: %s", l.redis(t, "HGETALL", l.keys.Meta(id)))
	}
	// What the log holds is the entries, not the frames.
	stored := l.redis(t, "LINDEX", l.keys.Chunks(id), "1")
	if !strings.HasPrefix(stored, `"t`) || strings.Contains(stored, "stream_id") {
		t.Fatalf("stored %s", stored)
	}
}

// Bytes of Redis per chunk of a demo answer: the target is at most 40 while
// streaming (MEMORY USAGE of the chunks key; whole frames took ~126).
func TestLog_BytesPerChunk(t *testing.T) {
	l := newLog(t)
	ctx := ctxT(t)
	for _, c := range []struct {
		name    string
		compact bool
	}{{"Entries", true}, {"Frames", false}} {
		id := "00000000-0000-4000-8000-0000000000f" + strconv.FormatBool(c.compact)[:1]
		m := created(t, l, id)
		const chunks = 200
		start := time.Now()
		text := 0
		for i, p := range demoAnswer(chunks) {
			ts := start.Add(time.Duration(i) * 25 * time.Millisecond) // 40 tokens a second
			frame := protocol.AppendPartChunk(nil, id, int64(i), p, ts.UnixMicro())
			text += len(p.Text)
			var err error
			if c.compact {
				_, err = l.AppendPart(ctx, id, m.Epoch, int64(i), frame, p, ts)
			} else {
				_, err = l.Append(ctx, id, m.Epoch, int64(i), frame)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		n, err := strconv.Atoi(l.redis(t, "MEMORY", "USAGE", l.keys.Chunks(id), "SAMPLES", "0"))
		if err != nil {
			t.Fatal(err)
		}
		perChunk := float64(n) / chunks
		t.Logf("%s: %d bytes for %d chunks of %d text bytes: %.1f bytes a chunk (text %.1f)", c.name, n, chunks, text, perChunk, float64(text)/chunks)
		if c.compact && perChunk > 40 {
			t.Fatalf("%.1f bytes a chunk, want at most 40", perChunk)
		}
	}
}

// An ended stream with compaction keeps its chunks for the grace period,
// then only its meta with the compacted parts: about what its text costs.
func TestLog_CompactAfterTheEnd(t *testing.T) {
	l := newLog(t)
	l.CompactAfter(300 * time.Millisecond)
	ctx := ctxT(t)
	const id = "00000000-0000-4000-8000-0000000000c1"
	m := created(t, l, id)
	parts := demoAnswer(200)
	var b chatstream.PartsBuilder
	start := time.Now()
	text := 0
	for i, p := range parts {
		frame := protocol.AppendPartChunk(nil, id, int64(i), p, start.UnixMicro())
		if _, err := l.AppendPart(ctx, id, m.Epoch, int64(i), frame, p, start); err != nil {
			t.Fatal(err)
		}
		text += len(p.Text)
		b.Add(p)
	}
	all := b.Parts()
	if err := l.Finish(ctx, id, m.Epoch, int64(len(parts)), streaming.End{Status: chatstream.StatusComplete, FinishReason: "stop", Parts: all}); err != nil {
		t.Fatal(err)
	}
	// Right after the end the chunks are there, and the parts beside them
	// (in a key of their own: a read of the chunks does not carry them).
	hist, err := l.Read(ctx, id, 0)
	if err != nil || len(hist.Frames) != 200 {
		t.Fatalf("after the end: %d frames, %v", len(hist.Frames), err)
	}
	if got, err := l.Compacted(ctx, id); err != nil || len(got) != 1 || got[0].Text != chatstream.TextOf(all) {
		t.Fatalf("compacted parts after the end: %v, %v", got, err)
	}
	// After the grace period only the meta and the parts are left.
	deadline := time.Now().Add(10 * time.Second)
	for l.redis(t, "EXISTS", l.keys.Chunks(id)) != "0" {
		if time.Now().After(deadline) {
			t.Fatal("the chunks are still there 10 s after the end")
		}
		time.Sleep(20 * time.Millisecond) // the chunks' TTL runs out; bounded above
	}
	hist, err = l.Read(ctx, id, 0)
	if err != nil || len(hist.Frames) != 0 || hist.Meta.N != 200 {
		t.Fatalf("compacted: %d frames, N %d, %v", len(hist.Frames), hist.Meta.N, err)
	}
	if got, err := l.Compacted(ctx, id); err != nil || got[0].Text != chatstream.TextOf(all) {
		t.Fatalf("compacted parts: %v, %v", got, err)
	}
	meta, _ := strconv.Atoi(l.redis(t, "MEMORY", "USAGE", l.keys.Meta(id), "SAMPLES", "0"))
	kept, _ := strconv.Atoi(l.redis(t, "MEMORY", "USAGE", l.keys.Parts(id), "SAMPLES", "0"))
	n := meta + kept
	t.Logf("compacted: meta %d + parts %d = %d bytes for an answer of %d text bytes (%.2f×)", meta, kept, n, text, float64(n)/float64(text))
	if n > 2*text {
		t.Fatalf("the compacted stream takes %d bytes, more than twice its %d bytes of text", n, text)
	}
	// Without compaction the chunks stay for the TTL.
	plain := newLog(t)
	const id2 = "00000000-0000-4000-8000-0000000000c2"
	m2 := created(t, plain, id2)
	frame := protocol.AppendPartChunk(nil, id2, 0, parts[0], start.UnixMicro())
	if _, err := plain.AppendPart(ctx, id2, m2.Epoch, 0, frame, parts[0], start); err != nil {
		t.Fatal(err)
	}
	if err := plain.Finish(ctx, id2, m2.Epoch, 1, streaming.End{Status: chatstream.StatusComplete, Parts: parts[:1]}); err != nil {
		t.Fatal(err)
	}
	if pttl, _ := strconv.Atoi(plain.redis(t, "PTTL", plain.keys.Chunks(id2))); pttl < int(testTTL.Milliseconds())-5000 {
		t.Fatalf("chunks PTTL %d without compaction, want about %d", pttl, testTTL.Milliseconds())
	}
	if got := plain.redis(t, "EXISTS", plain.keys.Parts(id2)); got != "0" {
		t.Fatalf("parts kept without compaction: EXISTS %s", got)
	}
	if got, err := plain.Compacted(ctx, id2); got != nil || err != nil {
		t.Fatalf("compacted parts without compaction: %v, %v", got, err)
	}
}

// BenchmarkLog_AppendPart is BenchmarkLog_Append as the worker appends:
// the frame published, the entry stored.
func BenchmarkLog_AppendPart(b *testing.B) {
	l := newLog(b)
	ctx := ctxT(b)
	const id = "bench-part"
	m := created(b, l, id)
	var frame []byte
	var i int64
	part := chatstream.Part{Type: chatstream.PartText, Text: " token"}
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		frame = protocol.AppendPartChunk(frame[:0], id, i, part, now.UnixMicro())
		if _, err := l.AppendPart(ctx, id, m.Epoch, i, frame, part, now); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
