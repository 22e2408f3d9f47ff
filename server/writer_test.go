package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A socket's writer goroutine runs while frames come, ends once a linger
// period passes without one (an idle socket holds none), and a frame after
// that starts a new one: the frame is written all the same.
func TestWS_WriterEndsWhenIdleAndStartsAgain(t *testing.T) {
	s := fuzzServer()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, err := s.issueToken("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/v1/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	ask := func() {
		t.Helper()
		if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"dance"}`)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := conn.Read(ctx); err != nil || !strings.Contains(string(b), `"unknown_type"`) {
			t.Fatalf("answer %s, %v", b, err)
		}
	}
	// writing reports whether the socket's writer runs.
	writing := func() bool {
		s.sockets.mu.Lock()
		defer s.sockets.mu.Unlock()
		if len(s.sockets.open) != 1 {
			t.Fatalf("%d sockets open", len(s.sockets.open))
		}
		for ss := range s.sockets.open {
			ss.out.mu.Lock()
			defer ss.out.mu.Unlock()
			return ss.out.writing
		}
		return false
	}
	for round := range 2 {
		ask()
		if !writing() {
			t.Fatalf("round %d: no writer right after a frame", round)
		}
		// The writer ends within two linger periods of the last frame. The
		// test waits for that event, polling: nothing else signals it.
		deadline := time.Now().Add(3*writerLinger + time.Second)
		for writing() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the writer still runs %v after the last frame", round, 3*writerLinger+time.Second)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ask() // and a frame after that still reaches the client
}
