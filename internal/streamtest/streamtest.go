// Package streamtest holds test helpers shared by the worker and integration
// tests: a recorder of what Redis pub/sub carries, and the check of the
// contract's guarantees on an ended stream.
package streamtest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// Recorder records every message of the channels that match a pattern,
// from a pub/sub connection of its own.
type Recorder struct {
	mu      sync.Mutex
	msgs    map[string][]string
	changed chan struct{} // closed and replaced on every message
}

// Record starts recording the channels matching pattern until the test ends.
func Record(tb testing.TB, client rueidis.Client, pattern string) *Recorder {
	tb.Helper()
	r := &Recorder{msgs: map[string][]string{}, changed: make(chan struct{})}
	dc, release := client.Dedicate()
	tb.Cleanup(func() { dc.Close(); release() })
	dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: func(m rueidis.PubSubMessage) {
		r.mu.Lock()
		r.msgs[m.Channel] = append(r.msgs[m.Channel], m.Message)
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := dc.Do(ctx, dc.B().Psubscribe().Pattern(pattern).Build()).Error(); err != nil {
		tb.Fatal(err)
	}
	return r
}

// WaitDone waits until channel carried a done frame and returns every
// message it carried.
func (r *Recorder) WaitDone(tb testing.TB, channel string) []string {
	tb.Helper()
	return r.WaitFor(tb, channel, "done frame", func(m string) bool { return strings.HasPrefix(m, `{"type":"done"`) })
}

// WaitFor waits until channel carried a message for which match is true
// and returns every message it carried so far; what names the message in
// the failure.
func (r *Recorder) WaitFor(tb testing.TB, channel, what string, match func(string) bool) []string {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		msgs, changed := append([]string(nil), r.msgs[channel]...), r.changed
		r.mu.Unlock()
		for _, m := range msgs {
			if match(m) {
				return msgs
			}
		}
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("%s carried no %s: %q", channel, what, msgs)
		}
	}
}

// CheckStream checks the contract's guarantees on an ended stream whose
// stored message is m: the chunk log holds chunks 0..n-1 whose text joined
// is the stored content, Redis says the stored status, and a subscriber of
// the stream's channel saw the same chunks in order, then one done frame
// with the stored status and error. It returns the chunk texts.
func CheckStream(tb testing.TB, client rueidis.Client, keys streaming.Keys, rec *Recorder, m *chatstream.Message) []string {
	tb.Helper()
	// The done frame goes out after Postgres is written: wait for it.
	got := rec.WaitDone(tb, keys.Channel(m.ID))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hist, err := streaming.NewChunkLog(client, keys, time.Hour).Read(ctx, m.ID, 0)
	if err != nil {
		tb.Fatal(err)
	}
	var texts []string
	for i, f := range hist.Frames {
		var c protocol.Chunk
		if err := json.Unmarshal(f, &c); err != nil {
			tb.Fatal(err)
		}
		if c.Index != int64(i) || c.StreamID != m.ID {
			tb.Fatalf("chunk %d of the log is %s", i, f)
		}
		texts = append(texts, c.Content)
	}
	if got := strings.Join(texts, ""); got != m.Content {
		tb.Fatalf("chunks joined = %q, stored content = %q", got, m.Content)
	}
	if hist.Meta.Status != m.Status || hist.Meta.N != int64(len(texts)) {
		tb.Fatalf("meta = %+v, stored status %s, %d chunks", hist.Meta, m.Status, len(texts))
	}
	if len(got) != len(hist.Frames)+1 {
		tb.Fatalf("subscriber got %d frames, want %d chunks and done: %q", len(got), len(hist.Frames), got)
	}
	for i, f := range hist.Frames {
		if got[i] != string(f) {
			tb.Fatalf("published frame %d = %s, the log holds %s", i, got[i], f)
		}
	}
	var done protocol.Done
	if err := json.Unmarshal([]byte(got[len(got)-1]), &done); err != nil {
		tb.Fatal(err)
	}
	if done.Type != "done" || done.Status != m.Status || done.LastIndex != int64(len(texts))-1 ||
		done.MessageID != m.ID || done.StreamID != m.ID || done.FinishReason != m.FinishReason {
		tb.Fatalf("done = %+v, message %+v", done, m)
	}
	if (done.Error == nil) != (m.Error == nil) || (done.Error != nil && *done.Error != *m.Error) {
		tb.Fatalf("done error %+v, stored error %+v", done.Error, m.Error)
	}
	if (done.Usage == nil) != (m.Usage == nil) || (done.Usage != nil && *done.Usage != *m.Usage) {
		tb.Fatalf("done usage %+v, stored usage %+v", done.Usage, m.Usage)
	}
	// The parts rebuilt from the chunks are the stored parts.
	parts, err := protocol.PartsOf(hist.Frames)
	if err != nil {
		tb.Fatal(err)
	}
	if stored := m.PartsOrText(); !reflect.DeepEqual(parts, stored) {
		tb.Fatalf("parts of the chunks = %+v, stored parts = %+v", parts, stored)
	}
	return texts
}

// Eventually polls cond with a short tick until it holds or timeout passes.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("after %s: %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Tokens returns n distinct deltas " t0", " t1", ….
func Tokens(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(" t%d", i)
	}
	return out
}

// Ctx returns a context that ends with the test, after 30 s at most.
func Ctx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// Usage reads the token counts stored with message id in the database at
// databaseURL.
func Usage(tb testing.TB, databaseURL, id string) (prompt, completion *int) {
	tb.Helper()
	ctx := Ctx(tb)
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT prompt_tokens, completion_tokens FROM messages WHERE id = $1`, id).Scan(&prompt, &completion); err != nil {
		tb.Fatal(err)
	}
	return prompt, completion
}

// Deref returns *p, or nil for a nil p, for printing.
func Deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
