package delivery

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/streaming"
)

// reads is a ConversationSource whose reads block until released; each read
// answers one message whose content is the read's number (1, 2, …).
type reads struct {
	mu      sync.Mutex
	gone    bool // the conversation was deleted
	n       int
	started chan int      // the number of each read, as it starts
	release chan struct{} // one receive lets one read answer
}

func newReads() *reads { return &reads{started: make(chan int, 16), release: make(chan struct{})} }

// next waits for the next read to start and returns its number.
func (r *reads) next(t *testing.T) int {
	t.Helper()
	select {
	case n := <-r.started:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no read started within 10 s")
		return 0
	}
}

// answer lets one read answer.
func (r *reads) answer(t *testing.T) {
	t.Helper()
	select {
	case r.release <- struct{}{}:
	case <-time.After(10 * time.Second):
		t.Fatal("no read waiting to answer within 10 s")
	}
}

// Conversation answers at once: the conversation, or not_found once gone.
func (r *reads) Conversation(_ context.Context, id string) (*chatstream.Conversation, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone {
		return nil, chatstream.Errorf(chatstream.ENOTFOUND, "Conversation not found.")
	}
	return &chatstream.Conversation{ID: id, Title: "t"}, nil
}

func (r *reads) RecentMessages(ctx context.Context, conv string, _ int) ([]*chatstream.Message, error) {
	r.mu.Lock()
	r.n++
	n := r.n
	r.mu.Unlock()
	r.started <- n
	select {
	case <-r.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return []*chatstream.Message{{ID: "m", ConversationID: conv, Content: string(rune('0' + n))}}, nil
}

// sink records frames.
type sink struct {
	mu     sync.Mutex
	frames []string
	got    chan struct{}
}

func newSink() *sink { return &sink{got: make(chan struct{}, 16)} }

func (s *sink) Send(b []byte) bool {
	s.mu.Lock()
	s.frames = append(s.frames, string(b))
	s.mu.Unlock()
	s.got <- struct{}{}
	return true
}
func (s *sink) Room() int { return 100 }

func (s *sink) await(t *testing.T) {
	t.Helper()
	select {
	case <-s.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10 s")
	}
}

// awaitMessages waits until the sink holds n message frames and returns
// them.
func (s *sink) awaitMessages(t *testing.T, n int) []string {
	t.Helper()
	for {
		s.mu.Lock()
		var msgs []string
		for _, f := range s.frames {
			if strings.HasPrefix(f, `{"type":"message"`) {
				msgs = append(msgs, f)
			}
		}
		s.mu.Unlock()
		if len(msgs) >= n {
			return msgs
		}
		s.await(t)
	}
}

// content is the content of the message in a refill frame ("" for others).
func content(t *testing.T, frame string) string {
	t.Helper()
	var f struct{ Message *chatstream.Message }
	if err := json.Unmarshal([]byte(frame), &f); err != nil {
		t.Fatal(err)
	}
	if f.Message == nil {
		return ""
	}
	return f.Message.Content
}

// testWatcher returns a watcher on blocking reads, closed when the test
// ends, and a watching socket of conversation "c" that asked for a refill.
func testWatcher(t *testing.T) (*reads, *Watcher, *sink, *forward) {
	r := newReads()
	w := NewWatcher(nil, streaming.Keys{}, r, slog.New(slog.DiscardHandler))
	w.retryIn = time.Millisecond
	t.Cleanup(w.Close)
	a := newSink()
	fa := &forward{w: w, conv: "c", sink: a}
	fa.OnResync("")
	return r, w, a, fa
}

// A watcher that asks while a read runs gets the next read, never the one
// that started before its resync.
func TestWatcher_RefillNotOlderThanItsResync(t *testing.T) {
	r, w, a, _ := testWatcher(t)
	b := newSink()
	fb := &forward{w: w, conv: "c", sink: b}
	if n := r.next(t); n != 1 {
		t.Fatalf("read %d started first", n)
	}
	fb.OnResync("") // during read 1
	r.answer(t)
	am := a.awaitMessages(t, 1)
	if n := r.next(t); n != 2 {
		t.Fatalf("read %d started second", n)
	}
	r.answer(t)
	bm := b.awaitMessages(t, 1)
	if got := content(t, am[0]); got != "1" {
		t.Errorf("a got read %s, want 1", got)
	}
	if !strings.HasPrefix(a.frames[0], `{"type":"conversation","conversation_id":"c","event":"updated"`) {
		t.Errorf("a's refill starts with %s, want the conversation as it is", a.frames[0])
	}
	if got := content(t, bm[0]); got != "2" {
		t.Errorf("b got read %s, want 2 (read 1 started before its resync)", got)
	}
}

// A read overtaken by a live event is read again: the socket never gets an
// older state after a newer one.
func TestWatcher_RefillOvertakenByLiveEventReadsAgain(t *testing.T) {
	r, _, a, fa := testWatcher(t)
	r.next(t)
	fa.OnMessage("", []byte(`{"type":"message","live":true}`)) // while read 1 runs
	a.await(t)
	r.answer(t) // read 1 answers, overtaken
	if n := r.next(t); n != 2 {
		t.Fatalf("read %d started after the overtaken one, want 2", n)
	}
	r.answer(t)
	msgs := a.awaitMessages(t, 2)
	if len(a.frames) != 3 || content(t, msgs[0]) != "" || content(t, msgs[1]) != "2" {
		t.Fatalf("frames %q, want the live event, then read 2 (the conversation, its message)", a.frames)
	}
}

// A conversation deleted while the node's connection was down: the refill
// tells its watchers.
func TestWatcher_RefillTellsOfADeletion(t *testing.T) {
	r := newReads()
	r.gone = true
	w := NewWatcher(nil, streaming.Keys{}, r, slog.New(slog.DiscardHandler))
	t.Cleanup(w.Close)
	a := newSink()
	(&forward{w: w, conv: "c", sink: a}).OnResync("")
	a.await(t)
	if want := `{"type":"conversation","conversation_id":"c","event":"deleted"}`; a.frames[0] != want {
		t.Fatalf("refill = %q, want %s", a.frames, want)
	}
}

// An unwatched socket gets nothing more, live or refilled.
func TestWatcher_UnwatchedGetsNothing(t *testing.T) {
	r, w, a, fa := testWatcher(t)
	r.next(t)
	w.mu.Lock()
	fa.stopped = true // what Watch's unwatch does before unsubscribing
	w.mu.Unlock()
	fa.OnMessage("", []byte(`{"type":"message"}`))
	r.answer(t)
	w.Close() // waits for the read to finish
	if len(a.frames) != 0 {
		t.Fatalf("unwatched socket got %q", a.frames)
	}
}
