package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/server"
)

// panickyStreams panics on every Follow, as a bug in the delivery would.
type panickyStreams struct{}

func (panickyStreams) Follow(context.Context, string, int64, chatstream.Sink) (server.Follow, error) {
	panic("delivery bug")
}

type noWatcher struct{}

func (noWatcher) Watch(context.Context, string, chatstream.Sink) (func(), error) {
	return func() {}, nil
}

// allowAll lets every user follow every stream.
type allowAll struct{ noGenerations }

func (allowAll) Authorize(context.Context, string, string) error { return nil }

// A panic while serving one frame is answered as an internal error, logged
// with its stack, and the socket goes on serving the next frame.
func TestWS_PanicInAFrameKeepsTheSocket(t *testing.T) {
	var logs testenv.Buffer
	srv, err := server.New(server.Config{AuthSecret: secret, Logger: newJSONLogger(&logs)},
		server.Deps{Store: nil, Generations: allowAll{}, Streams: panickyStreams{}, Watcher: noWatcher{}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/v1/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + userToken(t, "alice")}}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	read := func() map[string]any {
		t.Helper()
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var f map[string]any
		_ = json.Unmarshal(b, &f)
		return f
	}
	write := func(s string) {
		t.Helper()
		if err := conn.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"type":"subscribe","stream_id":"00000000-0000-4000-8000-000000000000"}`)
	f := read()
	for f["type"] == "subscribed" {
		f = read()
	}
	if f["type"] != "error" || f["code"] != "internal" {
		t.Fatalf("the frame whose handling panicked got %v", f)
	}
	write(`{"type":"unwatch","conversation_id":"c","request_id":1}`)
	if f := read(); f["type"] != "unwatched" {
		t.Fatalf("after the panic the socket answered %v", f)
	}
	conn.Close(websocket.StatusNormalClosure, "")
	// The session ends (and logs) once it has answered the close; shutting
	// down before that would close it for the shutdown instead.
	if err := logs.WaitFor(ctx, `"msg":"websocket closed"`); err != nil {
		t.Fatalf("no close logged (%v):\n%s", err, logs.String())
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "panic serving a websocket frame") || !strings.Contains(logs.String(), "goroutine") {
		t.Fatalf("the panic was not logged with its stack:\n%s", logs.String())
	}
	// The socket's own lines: when it opened, and when and why it closed.
	for _, want := range []string{`"msg":"websocket opened"`, `"msg":"websocket closed"`, `"reason":"client"`, `"frames_in":2`, `"user":"alice"`} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("the socket's log lines lack %s:\n%s", want, logs.String())
		}
	}
}
