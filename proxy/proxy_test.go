package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/chatstream/chatstream/proxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// node is a fake chatstream node: /readyz, an echo of the request, a
// WebSocket echo and an SSE stream whose second event waits for release.
func node(t *testing.T, name string) *httptest.Server {
	t.Helper()
	return nodeReleasing(t, name, nil)
}

func nodeReleasing(t *testing.T, name string, release chan struct{}) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s host=%s xff=%s", name, r.Method, b, r.Host, r.Header.Get("X-Forwarded-For"))
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte(name+":"), b...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: 0\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-release:
		}
		fmt.Fprint(w, "data: 1\n\n")
	})
	s := httptest.NewUnstartedServer(mux)
	s.Listener = &tracking{Listener: s.Listener}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// tracking is a listener that remembers its connections, so that a test
// can kill a node as a crash would: every connection cut, hijacked ones
// (WebSockets) too.
type tracking struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *tracking) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// kill stops the node: its port refuses connections, and every open one ends.
func kill(s *httptest.Server) {
	l := s.Listener.(*tracking)
	l.Close()
	l.mu.Lock()
	for _, c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
}

func start(t *testing.T, backends ...string) string {
	t.Helper()
	p, err := proxy.New(proxy.Config{Backends: backends, CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	s := httptest.NewServer(p)
	t.Cleanup(func() { s.Close(); cancel(); <-done })
	return s.URL
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	res, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// Requests go round-robin over the backends, with their bodies, the
// client's Host and an X-Forwarded-For; when one backend is gone, every
// request — a POST with a body too — is answered by the other, none lost.
func TestProxy_BalancesAndSkipsADeadBackend(t *testing.T) {
	a, b := node(t, "a"), node(t, "b")
	url := start(t, a.URL, b.URL)
	seen := map[string]int{}
	for i := range 10 {
		code, body := post(t, url+"/echo", fmt.Sprintf("m%d", i))
		if code != 200 || !strings.Contains(body, fmt.Sprintf("POST m%d", i)) || !strings.Contains(body, "host="+strings.TrimPrefix(url, "http://")) || !strings.Contains(body, "xff=127.0.0.1") {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		seen[body[:1]]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("not round-robin: %v", seen)
	}
	kill(b) // refuses connections from now on; no check has seen it yet
	for i := range 20 {
		code, body := post(t, url+"/echo", fmt.Sprintf("n%d", i))
		if code != 200 || !strings.HasPrefix(body, "a POST n") {
			t.Fatalf("request %d after b died: %d %q", i, code, body)
		}
	}
	kill(a)
	if code, body := post(t, url+"/echo", "x"); code != http.StatusBadGateway || !strings.Contains(body, `"code":"unavailable"`) {
		t.Fatalf("no backend left: %d %q", code, body)
	}
}

// A WebSocket passes through both ways; when its backend dies the socket
// ends, and a new one is opened on the other backend.
func TestProxy_WebSocket(t *testing.T) {
	a, b := node(t, "a"), node(t, "b")
	url := "ws" + strings.TrimPrefix(start(t, a.URL, b.URL), "http")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	_, got, err := c.Read(ctx)
	if err != nil || !strings.HasSuffix(string(got), ":hi") {
		t.Fatalf("echo %q, %v", got, err)
	}
	first := string(got[:1])
	dead := map[string]*httptest.Server{"a": a, "b": b}[first]
	kill(dead)
	if _, _, err := c.Read(ctx); err == nil {
		t.Fatal("the socket outlived its backend")
	}
	c2, _, err := websocket.Dial(ctx, url+"/ws", nil)
	if err != nil {
		t.Fatalf("reconnect: %v", err)
	}
	defer c2.CloseNow()
	_ = c2.Write(ctx, websocket.MessageText, []byte("again"))
	if _, got, err := c2.Read(ctx); err != nil || string(got[:1]) == first {
		t.Fatalf("after reconnecting: %q, %v", got, err)
	}
	c2.Close(websocket.StatusNormalClosure, "")
	c.CloseNow()
}

// Server-Sent Events are not buffered: an event reaches the client when
// the backend flushes it, while the response is still open (the backend
// writes the next event only once the client has read the first).
func TestProxy_SSEUnbuffered(t *testing.T) {
	release := make(chan struct{})
	a := nodeReleasing(t, "a", release)
	url := start(t, a.URL)
	res, err := http.Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := bufio.NewReader(res.Body)
	first := make(chan string, 1)
	go func() { line, _ := r.ReadString('\n'); first <- line }()
	select {
	case line := <-first:
		if line != "data: 0\n" {
			t.Fatalf("first line %q", line)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the first event was held back by the proxy")
	}
	close(release)
	rest, _ := io.ReadAll(r)
	if string(rest) != "\ndata: 1\n\n" {
		t.Fatalf("the rest %q", rest)
	}
}

func TestProxy_BadBackends(t *testing.T) {
	for _, b := range [][]string{nil, {"127.0.0.1:8081"}, {"ftp://x"}, {"http://"}} {
		if _, err := proxy.New(proxy.Config{Backends: b}); err == nil {
			t.Errorf("backends %q accepted", b)
		}
	}
}
