package streaming_test

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

const testTTL = time.Minute

type logEnv struct {
	*streaming.ChunkLog
	keys   streaming.Keys
	client rueidis.Client
}

// redis runs a command and returns its answer as JSON.
func (e *logEnv) redis(tb testing.TB, cmd ...string) string {
	tb.Helper()
	v, err := e.client.Do(ctxT(tb), e.client.B().Arbitrary(cmd...).Build()).ToAny()
	if err != nil && !rueidis.IsRedisNil(err) {
		tb.Fatalf("%v: %v", cmd, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func newLog(tb testing.TB) *logEnv {
	tb.Helper()
	client, keys := newRedis(tb)
	return &logEnv{ChunkLog: streaming.NewChunkLog(client, keys, testTTL), keys: keys, client: client}
}

func chunkFrame(stream string, i int64, text string) []byte {
	return protocol.AppendChunk(nil, stream, i, text, time.Now().UnixMicro())
}

// created returns a new stream claimed once.
func created(tb testing.TB, l *logEnv, id string) streaming.Meta {
	tb.Helper()
	if err := l.Create(ctxT(tb), id, "alice", "conv-1"); err != nil {
		tb.Fatal(err)
	}
	m, err := l.Claim(ctxT(tb), id, "node-a")
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func TestLog_Lifecycle(t *testing.T) {
	l := newLog(t)
	keys := l.keys
	ctx := ctxT(t)
	const id = "s1"
	if err := l.Create(ctx, id, "alice", "conv-1"); err != nil {
		t.Fatal(err)
	}
	m, err := l.Meta(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Exists || m.Status != chatstream.StatusStreaming || m.User != "alice" || m.ConversationID != "conv-1" || m.Epoch != 0 || m.N != 0 || m.LastIndex() != -1 {
		t.Fatalf("meta after create = %+v", m)
	}
	claimed, err := l.Claim(ctx, id, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if claimed.Epoch != 1 || claimed.N != 0 || claimed.Attempts != 1 || claimed.Cancel {
		t.Fatalf("claim = %+v", claimed)
	}
	sub := subscribe(t, l.client, keys.Channel(id))

	texts := []string{"Hel", "lo, ", `"wörld"` + "\n"}
	var frames []string
	for i, text := range texts {
		f := chunkFrame(id, int64(i), text)
		frames = append(frames, string(f))
		cancel, err := l.Append(ctx, id, claimed.Epoch, int64(i), f)
		if err != nil || cancel {
			t.Fatalf("append %d: cancel=%v err=%v", i, cancel, err)
		}
	}
	if err := l.MarkFinal(ctx, id, claimed.Epoch, chatstream.StatusComplete, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Finish(ctx, id, claimed.Epoch, int64(len(texts)), streaming.End{Status: chatstream.StatusComplete}); err != nil {
		t.Fatal(err)
	}

	hist, err := l.Read(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if hist.From != 0 || len(hist.Frames) != len(frames) {
		t.Fatalf("read: from %d, %d frames, want 0 and %d", hist.From, len(hist.Frames), len(frames))
	}
	for i := range frames {
		if string(hist.Frames[i]) != frames[i] {
			t.Fatalf("frame %d = %s, want %s", i, hist.Frames[i], frames[i])
		}
	}
	if hist.Meta.Status != chatstream.StatusComplete || hist.Meta.Final != chatstream.StatusComplete || hist.Meta.N != 3 || hist.Meta.LastIndex() != 2 {
		t.Fatalf("meta after finish = %+v", hist.Meta)
	}
	if tail, err := l.Read(ctx, id, 2); err != nil || tail.From != 2 || len(tail.Frames) != 1 || string(tail.Frames[0]) != frames[2] {
		t.Fatalf("read from 2 = %+v, %v", tail, err)
	}
	if all, err := l.Read(ctx, id, -5); err != nil || all.From != 0 || len(all.Frames) != 3 {
		t.Fatalf("read from -5 = %+v, %v", all, err)
	}
	parts, n, err := l.Parts(ctx, id)
	if err != nil || n != 3 || chatstream.TextOf(parts) != strings.Join(texts, "") || len(parts) != 1 {
		t.Fatalf("parts = %+v, %d, %v", parts, n, err)
	}

	// The subscriber saw exactly the frames the list holds, in order, then done.
	got := sub.wait(t, len(frames)+1)
	if len(got) != len(frames)+1 {
		t.Fatalf("subscriber got %d messages, want %d", len(got), len(frames)+1)
	}
	for i := range frames {
		if got[i] != frames[i] {
			t.Fatalf("published %d = %s, list holds %s", i, got[i], frames[i])
		}
	}
	var done protocol.Done
	if err := json.Unmarshal([]byte(got[len(frames)]), &done); err != nil {
		t.Fatal(err)
	}
	if done.Type != "done" || done.StreamID != id || done.MessageID != id || done.Status != chatstream.StatusComplete || done.LastIndex != 2 || done.Error != nil {
		t.Fatalf("done = %+v", done)
	}

	// Both keys expire STREAM_TTL after the end.
	for _, key := range []string{keys.Meta(id), keys.Chunks(id)} {
		pttl, _ := strconv.ParseInt(l.redis(t, "PTTL", key), 10, 64)
		if pttl <= int64(testTTL/time.Millisecond)-5000 || pttl > int64(testTTL/time.Millisecond) {
			t.Errorf("PTTL %s = %dms, want about %s", key, pttl, testTTL)
		}
	}
}

func TestLog_Append(t *testing.T) {
	l := newLog(t)
	keys := l.keys
	ctx := ctxT(t)

	// longTTL reports whether both keys of stream id expire later than a
	// finished stream's would: the open stream's TTL, a day past the TTL.
	longTTL := func(t *testing.T, id string) bool {
		t.Helper()
		for _, key := range []string{keys.Meta(id), keys.Chunks(id)} {
			pttl, _ := strconv.ParseInt(l.redis(t, "PTTL", key), 10, 64)
			if pttl < int64((testTTL+23*time.Hour)/time.Millisecond) {
				return false
			}
		}
		return true
	}
	appendN := func(t *testing.T, id string, epoch, from, to int64) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := l.Append(ctx, id, epoch, i, chunkFrame(id, i, "a")); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("open stream lives longer than the TTL", func(t *testing.T) {
		m := created(t, l, "open")
		appendN(t, "open", m.Epoch, 0, 1)
		if !longTTL(t, "open") {
			t.Error("keys of an open stream expire as a finished stream's would")
		}
	})
	t.Run("a long stream keeps its keys alive", func(t *testing.T) {
		m := created(t, l, "long")
		appendN(t, "long", m.Epoch, 0, 255)
		// The TTL is refreshed every 256th chunk, not on each: shorten it;
		// chunk 255 leaves it short, chunk 256 puts it back.
		for _, key := range []string{keys.Meta("long"), keys.Chunks("long")} {
			l.redis(t, "PEXPIRE", key, "60000")
		}
		appendN(t, "long", m.Epoch, 255, 256)
		if longTTL(t, "long") {
			t.Error("chunk 255 refreshed the TTL: every append pays for it")
		}
		appendN(t, "long", m.Epoch, 256, 257)
		if !longTTL(t, "long") {
			t.Error("chunk 256 did not refresh the TTL")
		}
	})
	t.Run("retry of the same index is applied once", func(t *testing.T) {
		m := created(t, l, "retry")
		sub := subscribe(t, l.client, keys.Channel("retry"))
		f0 := chunkFrame("retry", 0, "a")
		for range 2 {
			if _, err := l.Append(ctx, "retry", m.Epoch, 0, f0); err != nil {
				t.Fatal(err)
			}
		}
		f1 := chunkFrame("retry", 1, "b")
		if _, err := l.Append(ctx, "retry", m.Epoch, 1, f1); err != nil {
			t.Fatal(err)
		}
		if got := l.redis(t, "LLEN", keys.Chunks("retry")); got != "2" {
			t.Fatalf("LLEN = %s, want 2", got)
		}
		// The retry published nothing: the next message after chunk 0 is chunk 1.
		if got := sub.wait(t, 2); got[0] != string(f0) || got[1] != string(f1) {
			t.Fatalf("published %q", got)
		}
		if meta, _ := l.Meta(ctx, "retry"); meta.N != 2 {
			t.Fatalf("n = %d, want 2", meta.N)
		}
	})
	t.Run("a hole is refused", func(t *testing.T) {
		m := created(t, l, "hole")
		_, err := l.Append(ctx, "hole", m.Epoch, 1, chunkFrame("hole", 1, "b"))
		if err == nil || errors.Is(err, streaming.ErrFenced) || errors.Is(err, streaming.ErrEnded) || errors.Is(err, streaming.ErrGone) {
			t.Fatalf("append at 1 of an empty log: %v", err)
		}
		if got := l.redis(t, "LLEN", keys.Chunks("hole")); got != "0" {
			t.Fatalf("LLEN = %s, want 0", got)
		}
	})
	t.Run("after finish", func(t *testing.T) {
		m := created(t, l, "ended")
		if err := l.Finish(ctx, "ended", m.Epoch, 0, streaming.End{Status: chatstream.StatusComplete}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(ctx, "ended", m.Epoch, 0, chunkFrame("ended", 0, "a")); !errors.Is(err, streaming.ErrEnded) {
			t.Fatalf("append after finish: %v, want ErrEnded", err)
		}
		if got := l.redis(t, "LLEN", keys.Chunks("ended")); got != "0" {
			t.Fatalf("LLEN = %s, want 0", got)
		}
	})
	t.Run("gone", func(t *testing.T) {
		if _, err := l.Append(ctx, "nothing", 1, 0, chunkFrame("nothing", 0, "a")); !errors.Is(err, streaming.ErrGone) {
			t.Fatalf("append to a stream never created: %v, want ErrGone", err)
		}
		if got := l.redis(t, "EXISTS", keys.Chunks("nothing")); got != "0" {
			t.Fatalf("chunks of a stream never created exist")
		}
	})
}

func TestLog_Claim(t *testing.T) {
	l := newLog(t)
	keys := l.keys
	ctx := ctxT(t)

	t.Run("fences the earlier epoch", func(t *testing.T) {
		const id = "fence"
		first := created(t, l, id)
		sub := subscribe(t, l.client, keys.Channel(id))
		f0 := chunkFrame(id, 0, "mine")
		if _, err := l.Append(ctx, id, first.Epoch, 0, f0); err != nil {
			t.Fatal(err)
		}
		second, err := l.Claim(ctx, id, "node-b")
		if err != nil {
			t.Fatal(err)
		}
		if second.Epoch != first.Epoch+1 || second.N != 1 || second.Attempts != 2 {
			t.Fatalf("second claim = %+v", second)
		}
		if _, err := l.Append(ctx, id, first.Epoch, 1, chunkFrame(id, 1, "stale")); !errors.Is(err, streaming.ErrFenced) {
			t.Fatalf("append of the first epoch: %v, want ErrFenced", err)
		}
		if err := l.MarkFinal(ctx, id, first.Epoch, chatstream.StatusComplete, nil); !errors.Is(err, streaming.ErrFenced) {
			t.Fatalf("mark final of the first epoch: %v, want ErrFenced", err)
		}
		if err := l.Finish(ctx, id, first.Epoch, 1, streaming.End{Status: chatstream.StatusComplete}); !errors.Is(err, streaming.ErrFenced) {
			t.Fatalf("finish of the first epoch: %v, want ErrFenced", err)
		}
		// Nothing of the first epoch was written or published.
		m, err := l.Meta(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if m.N != 1 || m.Status != chatstream.StatusStreaming || m.Final != "" || m.Epoch != second.Epoch {
			t.Fatalf("meta after fenced writes = %+v", m)
		}
		if got := l.redis(t, "LLEN", keys.Chunks(id)); got != "1" {
			t.Fatalf("LLEN = %s, want 1", got)
		}
		f1 := chunkFrame(id, 1, "theirs")
		if _, err := l.Append(ctx, id, second.Epoch, 1, f1); err != nil {
			t.Fatal(err)
		}
		if got := sub.wait(t, 2); len(got) != 2 || got[0] != string(f0) || got[1] != string(f1) {
			t.Fatalf("published %q, want chunk 0 then the second epoch's chunk 1", got)
		}
		if parts, _, _ := l.Parts(ctx, id); chatstream.TextOf(parts) != "minetheirs" {
			t.Fatalf("parts = %+v", parts)
		}
	})
	t.Run("returns what a dead writer left", func(t *testing.T) {
		const id = "left"
		first := created(t, l, id)
		if _, err := l.Append(ctx, id, first.Epoch, 0, chunkFrame(id, 0, "x")); err != nil {
			t.Fatal(err)
		}
		fail := &chatstream.Failure{Code: "llm_truncated", Message: "cut"}
		if err := l.MarkFinal(ctx, id, first.Epoch, chatstream.StatusFailed, fail); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
		m, err := l.Claim(ctx, id, "reaper")
		if err != nil {
			t.Fatal(err)
		}
		if m.Epoch != 2 || m.N != 1 || !m.Cancel || m.Final != chatstream.StatusFailed || m.Failure == nil || *m.Failure != *fail {
			t.Fatalf("claim after mark final = %+v (failure %+v)", m, m.Failure)
		}
	})
	t.Run("gone and ended", func(t *testing.T) {
		if _, err := l.Claim(ctx, "never", "x"); !errors.Is(err, streaming.ErrGone) {
			t.Fatalf("claim of a missing stream: %v, want ErrGone", err)
		}
		m := created(t, l, "over")
		if err := l.Finish(ctx, "over", m.Epoch, 0, streaming.End{Status: chatstream.StatusCancelled}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Claim(ctx, "over", "x"); !errors.Is(err, streaming.ErrEnded) {
			t.Fatalf("claim of an ended stream: %v, want ErrEnded", err)
		}
		if err := l.Finish(ctx, "over", m.Epoch, 0, streaming.End{Status: chatstream.StatusComplete}); !errors.Is(err, streaming.ErrEnded) {
			t.Fatalf("second finish: %v, want ErrEnded", err)
		}
		if err := l.MarkFinal(ctx, "never", 1, chatstream.StatusComplete, nil); !errors.Is(err, streaming.ErrGone) {
			t.Fatalf("mark final of a missing stream: %v, want ErrGone", err)
		}
	})
}

func TestLog_Release(t *testing.T) {
	l := newLog(t)
	ctx := ctxT(t)
	const id = "r"
	first := created(t, l, id)
	if held, err := l.Cancel(ctx, "never"); !errors.Is(err, streaming.ErrGone) || held {
		t.Fatalf("cancel of a missing stream = %v, %v", held, err)
	}
	second, err := l.Claim(ctx, id, "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx, id, first.Epoch); !errors.Is(err, streaming.ErrFenced) {
		t.Fatalf("release by a fenced writer: %v, want ErrFenced", err)
	}
	if err := l.Release(ctx, id, second.Epoch); err != nil {
		t.Fatal(err)
	}
	// Handed back: a cancel finds no writer to tell.
	if held, err := l.Cancel(ctx, id); err != nil || held {
		t.Fatalf("cancel after release = %v, %v; want not held", held, err)
	}
	if _, err := l.Claim(ctx, id, "c"); err != nil {
		t.Fatal(err)
	}
	if held, err := l.Cancel(ctx, id); err != nil || !held {
		t.Fatalf("cancel after a new claim = %v, %v; want held", held, err)
	}
}

func TestLog_Finish(t *testing.T) {
	l := newLog(t)
	keys := l.keys
	ctx := ctxT(t)
	const id = "failed"
	m := created(t, l, id)
	sub := subscribe(t, l.client, keys.Channel(id))
	fail := &chatstream.Failure{Code: "llm_unavailable", Message: "down"}
	if err := l.Finish(ctx, id, m.Epoch, 0, streaming.End{Status: chatstream.StatusFailed, Failure: fail}); err != nil {
		t.Fatal(err)
	}
	var done protocol.Done
	if err := json.Unmarshal([]byte(sub.wait(t, 1)[0]), &done); err != nil {
		t.Fatal(err)
	}
	if done.Status != chatstream.StatusFailed || done.LastIndex != -1 || done.Error == nil || *done.Error != *fail {
		t.Fatalf("done = %+v", done)
	}
	meta, err := l.Meta(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Status != chatstream.StatusFailed || meta.Failure == nil || *meta.Failure != *fail {
		t.Fatalf("meta = %+v", meta)
	}
}

func TestLog_Cancel(t *testing.T) {
	l := newLog(t)
	keys := l.keys
	ctx := ctxT(t)
	const id = "c"
	if err := l.Create(ctx, id, "alice", "conv"); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, l.client, keys.ControlChannel(id))
	held, err := l.Cancel(ctx, id)
	if err != nil || held {
		t.Fatalf("cancel before claim = %v, %v; want not held", held, err)
	}
	sub.wait(t, 1)
	m, err := l.Claim(ctx, id, "w")
	if err != nil || !m.Cancel {
		t.Fatalf("claim after cancel = %+v, %v; want the cancel flag", m, err)
	}
	if held, err := l.Cancel(ctx, id); err != nil || !held {
		t.Fatalf("cancel after claim = %v, %v; want held", held, err)
	}
	sub.wait(t, 2)
	cancel, err := l.Append(ctx, id, m.Epoch, 0, chunkFrame(id, 0, "x"))
	if err != nil || !cancel {
		t.Fatalf("append after cancel = %v, %v; want cancel", cancel, err)
	}
	if meta, _ := l.Meta(ctx, id); !meta.Cancel {
		t.Fatalf("meta = %+v, want cancel", meta)
	}
	if err := l.Finish(ctx, id, m.Epoch, 1, streaming.End{Status: chatstream.StatusCancelled}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Cancel(ctx, id); !errors.Is(err, streaming.ErrEnded) {
		t.Fatalf("cancel after finish: %v, want ErrEnded", err)
	}
	if _, err := l.Cancel(ctx, "never"); !errors.Is(err, streaming.ErrGone) {
		t.Fatalf("cancel of a missing stream: %v, want ErrGone", err)
	}
}

// BenchmarkLog_Append measures the append path of one chunk: frame built,
// one script call (append, publish, TTL, fence) against the real Redis.
func BenchmarkLog_Append(b *testing.B) {
	l := newLog(b)
	ctx := ctxT(b)
	const id = "bench"
	m := created(b, l, id)
	var frame []byte
	var i int64
	b.ReportAllocs()
	for b.Loop() {
		frame = protocol.AppendChunk(frame[:0], id, i, " token", time.Now().UnixMicro())
		if _, err := l.Append(ctx, id, m.Epoch, i, frame); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
