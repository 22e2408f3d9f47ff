package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsClient dials srv's socket as alice; readBuffer, if set, is the client
// connection's kernel receive buffer (small, so that a test can fill it).
func wsClient(t *testing.T, ctx context.Context, s *Server, url string, readBuffer int) *websocket.Conn {
	t.Helper()
	tok, err := s.issueToken("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	opts := &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}}
	if readBuffer > 0 {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				c.(*net.TCPConn).SetReadBuffer(readBuffer)
			}
			return c, err
		}}}
	}
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/v1/ws", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

// socketServer is a server of its own for a test's sockets, over HTTP.
func socketServer(t *testing.T, ws WSConfig) (*Server, string) {
	t.Helper()
	s, err := New(Config{AuthSecret: fuzzSecret, AuthDev: true, MaxContentBytes: 1000, WS: ws},
		Deps{Store: fuzzStore{}, Generations: fuzzGens{}, Conversations: fuzzConvs{}, Streams: fuzzStreams{}, Watcher: fuzzWatcher{}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts.URL
}

// theSession is the one socket open on s.
func theSession(t *testing.T, s *Server) *session {
	t.Helper()
	s.sockets.mu.Lock()
	defer s.sockets.mu.Unlock()
	if len(s.sockets.open) != 1 {
		t.Fatalf("%d sockets open", len(s.sockets.open))
	}
	for ss := range s.sockets.open {
		return ss
	}
	return nil
}

// ask sends a frame the server answers (an unknown type) and reads the
// answer.
func ask(t *testing.T, ctx context.Context, conn *websocket.Conn) {
	t.Helper()
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"dance"}`)); err != nil {
		t.Fatal(err)
	}
	if _, b, err := conn.Read(ctx); err != nil || !strings.Contains(string(b), `"unknown_type"`) {
		t.Fatalf("answer %s, %v", b, err)
	}
}

// A live frame to a socket that is not busy is written by SendLive itself,
// also while the socket's writer lingers after a frame it wrote: no writer
// starts or writes for it.
func TestWS_LiveFrameWrittenBySendLive(t *testing.T) {
	s, url := socketServer(t, WSConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn := wsClient(t, ctx, s, url, 0)
	ask(t, ctx, conn) // queued by Send: a writer starts, and lingers
	ss := theSession(t, s)
	for i := range 20 {
		frame := fmt.Appendf(nil, `{"type":"chunk","index":%d}`, i)
		if !ss.SendLive(frame) {
			t.Fatalf("frame %d refused", i)
		}
		if _, b, err := conn.Read(ctx); err != nil || string(b) != string(frame) {
			t.Fatalf("frame %d: %s, %v", i, b, err)
		}
	}
	if n, live := ss.writerStarts.Load(), ss.framesLive.Load(); n != 1 || live != 20 {
		t.Fatalf("%d writers started and %d of 20 live frames written by SendLive, want 1 (for the answer) and 20", n, live)
	}
	ask(t, ctx, conn) // and Send still goes through the writer
}

// Live frames sent while the client does not read fill the socket: the
// frame the kernel took only in part is finished by the writer goroutine
// (also when no frame follows it), the frames sent after it queue behind
// it, and the client reads every frame whole and in order once it reads.
func TestWS_SendLiveToAFullSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	frame := func(i int) []byte {
		return fmt.Appendf(nil, `{"type":"chunk","index":%d,"text":"%s"}`, i, strings.Repeat(string(rune('a'+i%26)), 1000))
	}
	for _, round := range []struct {
		after   int  // frames sent after the one left in part
		lingers bool // the writer of the first answer still runs
	}{{0, true}, {100, true}, {0, false}, {100, false}} {
		after := round.after
		s, url := socketServer(t, WSConfig{})
		conn := wsClient(t, ctx, s, url, 4096)
		ask(t, ctx, conn) // the session is registered; its writer lingers
		ss := theSession(t, s)
		if !round.lingers {
			awaitWriterEnd(t, ss)
		}
		sc, ok := ss.cork.conn.(syscall.Conn)
		if !ok {
			t.Fatalf("the server's connection %T has no descriptor", ss.cork.conn)
		}
		raw, _ := sc.SyscallConn()
		raw.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096) })
		// Send 1 KB frames until one is left in part: the socket holds a
		// rest, or a writer already writes it (the cork is locked).
		sent := 0
		for ; ; sent++ {
			if sent == 400 {
				t.Fatal("400 KB sent to a client that does not read, and the socket never filled")
			}
			if !ss.SendLive(frame(sent)) {
				t.Fatalf("frame %d refused", sent)
			}
			if !ss.cork.mu.TryLock() {
				break
			}
			rest := len(ss.cork.rest)
			ss.cork.mu.Unlock()
			if rest > 0 {
				break
			}
		}
		sent++
		for range after {
			if !ss.SendLive(frame(sent)) {
				t.Fatalf("frame %d refused", sent)
			}
			sent++
		}
		for i := range sent {
			_, b, err := conn.Read(ctx)
			if err != nil {
				t.Fatalf("%d frames after the one left in part: frame %d of %d: %v", after, i, sent, err)
			}
			if string(b) != string(frame(i)) {
				t.Fatalf("frame %d: %.40s…, want %.40s…", i, b, frame(i))
			}
		}
		ask(t, ctx, conn) // and the socket goes on
	}
}

// awaitWriterEnd waits until the socket's writer ended, within two linger
// periods of its last frame. It polls: nothing else signals that event.
func awaitWriterEnd(t *testing.T, ss *session) {
	t.Helper()
	deadline := time.Now().Add(3*writerLinger + time.Second)
	for {
		ss.out.mu.Lock()
		writing := ss.out.writing
		ss.out.mu.Unlock()
		if !writing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writer still runs %v after the last frame", 3*writerLinger+time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// With WS_WRITE_COALESCE a socket's writer goroutine runs while frames
// come, ends once a linger period passes without one (an idle socket holds
// none), and a frame after that starts a new one: the frame is written all
// the same.
func TestWS_CoalescingWriterEndsWhenIdleAndStartsAgain(t *testing.T) {
	s, url := socketServer(t, WSConfig{WriteCoalesce: 5 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn := wsClient(t, ctx, s, url, 0)
	// writing reports whether the socket's writer runs.
	writing := func() bool {
		ss := theSession(t, s)
		ss.out.mu.Lock()
		defer ss.out.mu.Unlock()
		return ss.out.writing
	}
	for round := range 2 {
		ask(t, ctx, conn)
		if !writing() {
			t.Fatalf("round %d: no writer right after a frame", round)
		}
		awaitWriterEnd(t, theSession(t, s))
	}
	ask(t, ctx, conn) // and a frame after that still reaches the client
	if n := theSession(t, s).writerStarts.Load(); n != 3 {
		t.Fatalf("%d writers started for 3 answers a linger period apart, want 3", n)
	}
}
