package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/limits"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/worker"
)

// Server-Sent Events: the same log, the same guarantees as a socket.

// sseEvent is one event of an SSE response; a comment is an event with
// only Comment set.
type sseEvent struct {
	Event, ID, Data, Comment string
}

// sseReader reads the events of one SSE response.
type sseReader struct {
	t    testing.TB
	res  *http.Response
	sc   *bufio.Scanner
	next chan sseResult
}

type sseResult struct {
	ev  sseEvent
	err error
}

// sse opens an SSE response at path with the token in the Authorization
// header (or, with query, in ?access_token=) and, if lastEventID is not
// empty, a Last-Event-ID header; it wants 200.
func (n *node) sse(t testing.TB, path, token, lastEventID string, client *http.Client) *sseReader {
	t.Helper()
	res := n.sseRequest(t, path, token, lastEventID, client)
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %d %s", path, res.StatusCode, b)
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" || res.Header.Get("X-Accel-Buffering") != "no" ||
		res.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("GET %s: headers %v", path, res.Header)
	}
	r := &sseReader{t: t, res: res, sc: bufio.NewScanner(res.Body), next: make(chan sseResult)}
	r.sc.Buffer(make([]byte, 64<<10), 4<<20)
	go r.run()
	return r
}

func (n *node) sseRequest(t testing.TB, path, token, lastEventID string, client *http.Client) *http.Response {
	t.Helper()
	req := n.newRequest(t, "GET", path, token, nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	if client == nil {
		client = http.DefaultClient
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// run parses events as the SSE format says and hands them over one by one.
func (r *sseReader) run() {
	defer close(r.next)
	var ev sseEvent
	var data []string
	for r.sc.Scan() {
		line := r.sc.Text()
		switch {
		case line == "":
			if ev.Comment != "" || data != nil {
				ev.Data = strings.Join(data, "\n")
				r.next <- sseResult{ev: ev}
			}
			ev, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
			ev.Comment = strings.TrimSpace(line[1:])
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				ev.Event = value
			case "id":
				ev.ID = value
			case "data":
				data = append(data, value)
			}
		}
	}
	r.next <- sseResult{err: io.EOF}
}

// read returns the next event that is not a comment, or io.EOF at the end
// of the response.
func (r *sseReader) read() (sseEvent, error) {
	r.t.Helper()
	for {
		select {
		case res, ok := <-r.next:
			if !ok || res.err != nil {
				return sseEvent{}, io.EOF
			}
			if res.ev.Comment != "" && res.ev.Event == "" && res.ev.Data == "" {
				continue
			}
			return res.ev, nil
		case <-time.After(30 * time.Second):
			r.t.Fatal("no SSE event within 30 s")
		}
	}
}

// readComment waits for a comment line.
func (r *sseReader) readComment(text string) {
	r.t.Helper()
	for {
		select {
		case res, ok := <-r.next:
			if !ok || res.err != nil {
				r.t.Fatalf("the response ended before the comment %q", text)
			}
			if res.ev.Comment == text {
				return
			}
		case <-time.After(30 * time.Second):
			r.t.Fatalf("no comment %q within 30 s", text)
		}
	}
}

// sseStream is what an SSE reader of a stream got.
type sseStream struct {
	indexes  []int64
	text     strings.Builder
	snapshot bool
	done     *frame
	lastID   string // the last id: line seen
}

// follow reads a stream's events until done or the end of the response,
// checking that chunk indexes start at from, are the ids, and have no hole
// and no duplicate.
func (r *sseReader) follow(from int64) *sseStream {
	r.t.Helper()
	s := &sseStream{}
	next := from
	for {
		ev, err := r.read()
		if err != nil {
			return s
		}
		var f frame
		if err := json.Unmarshal([]byte(ev.Data), &f); err != nil {
			r.t.Fatalf("event data %q: %v", ev.Data, err)
		}
		if f.Type != ev.Event {
			r.t.Fatalf("event %q carries a %q frame", ev.Event, f.Type)
		}
		switch f.Type {
		case "chunk":
			if f.Index != next || ev.ID != strconv.FormatInt(f.Index, 10) {
				r.t.Fatalf("chunk %d (id %q), want %d", f.Index, ev.ID, next)
			}
			next++
			s.indexes = append(s.indexes, f.Index)
			s.text.WriteString(f.Content)
			s.lastID = ev.ID
		case "snapshot":
			if ev.ID != strconv.FormatInt(f.LastIndex, 10) {
				r.t.Fatalf("snapshot id %q, last_index %d", ev.ID, f.LastIndex)
			}
			s.snapshot = true
			s.text.Reset()
			s.text.WriteString(f.Content)
			next = f.LastIndex + 1
			s.lastID = ev.ID
		case "done":
			s.done = &f
			if _, err := r.read(); err != io.EOF {
				r.t.Fatal("the response went on after done")
			}
			return s
		default:
			r.t.Fatalf("unexpected %s event: %s", f.Type, ev.Data)
		}
	}
}

func TestSSE_ResumeFromEveryPosition(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1, Limits: limits.Off()})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	const chunks = 30
	s := n.send(t, tok, conv, demoPrompt(chunks, 0, "resume me"))
	stored := n.final(t, tok, conv, s.StreamID)
	path := "/v1/streams/" + s.StreamID + "/events"

	for _, last := range []int64{-1, 0, 1, 14, chunks - 2, chunks - 1} {
		t.Run(fmt.Sprint("after ", last), func(t *testing.T) {
			r := n.sse(t, path, tok, strconv.FormatInt(last, 10), nil).follow(last + 1)
			if len(r.indexes) != int(chunks-1-last) || r.done == nil || r.done.Status != "complete" || r.done.LastIndex != chunks-1 {
				t.Fatalf("got %d chunks, done %+v", len(r.indexes), r.done)
			}
			if last == -1 && r.text.String() != stored.Content {
				t.Fatalf("text %q, stored %q", r.text.String(), stored.Content)
			}
		})
	}
	t.Run("QueryAndHeader", func(t *testing.T) {
		// The query serves EventSource's first request; the header its
		// reconnects, and wins.
		if r := n.sse(t, path+"?last_index=20", tok, "", nil).follow(21); len(r.indexes) != chunks-21 {
			t.Fatalf("from the query: %d chunks", len(r.indexes))
		}
		if r := n.sse(t, path+"?last_index=20", tok, "25", nil).follow(26); len(r.indexes) != chunks-26 {
			t.Fatalf("header over query: %d chunks", len(r.indexes))
		}
		// Without a header, the token may come in the query (EventSource
		// sets no headers).
		if r := n.sse(t, path+"?access_token="+tok, "", "", nil).follow(0); len(r.indexes) != chunks {
			t.Fatalf("token in the query: %d chunks", len(r.indexes))
		}
	})
	t.Run("BadRequests", func(t *testing.T) {
		bob := n.devToken(t, "bob")
		for _, c := range []struct {
			path, token, last string
			status            int
			code              string
		}{
			{path, "", "", 401, "unauthorized"},
			{path, "nope", "", 401, "unauthorized"},
			{path, bob, "", 404, "not_found"},
			{"/v1/streams/nope/events", tok, "", 404, "not_found"},
			{"/v1/streams/00000000-0000-4000-8000-000000000000/events", tok, "", 404, "not_found"},
			{path, tok, "x", 400, "invalid_request"},
			{path, tok, "-2", 400, "invalid_request"},
			{path + "?last_index=9007199254740992", tok, "", 400, "invalid_request"},
			{"/v1/conversations/" + conv + "/events", bob, "", 404, "not_found"},
			{"/v1/conversations/nope/events", tok, "", 404, "not_found"},
		} {
			res := n.sseRequest(t, c.path, c.token, c.last, nil)
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != c.status || !strings.Contains(string(b), `"code":"`+c.code+`"`) {
				t.Errorf("GET %s (token %.8q, Last-Event-ID %q): %d %s, want %d %s", c.path, c.token, c.last, res.StatusCode, b, c.status, c.code)
			}
		}
	})
}

// A reader of a live stream drops mid-answer and comes back with the last
// id it holds, again and again: every index once, then done, the text
// Postgres stores.
func TestSSE_ResumeMidStream(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1, Limits: limits.Off()})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	s := n.send(t, tok, conv, demoPrompt(120, 200, "a live one"))
	path := "/v1/streams/" + s.StreamID + "/events"
	var text strings.Builder
	last := "-1"
	next := int64(0)
	for drops := 0; ; drops++ {
		r := n.sse(t, path, tok, last, nil)
		// Read a few chunks, then hang up (the fourth reader reads to the end).
		for got := 0; drops >= 3 || got < 10; got++ {
			ev, err := r.read()
			if err != nil {
				t.Fatalf("the response ended early")
			}
			var f frame
			_ = json.Unmarshal([]byte(ev.Data), &f)
			if f.Type == "done" {
				if f.LastIndex != next-1 {
					t.Fatalf("done at %d after %d chunks", f.LastIndex, next)
				}
				stored := n.final(t, tok, conv, s.StreamID)
				if text.String() != stored.Content || stored.Status != "complete" {
					t.Fatalf("read %q, stored %q", text.String(), stored.Content)
				}
				if drops < 3 {
					t.Fatalf("the stream ended after %d drops", drops)
				}
				return
			}
			if f.Type != "chunk" || f.Index != next {
				t.Fatalf("got %s %d, want chunk %d", f.Type, f.Index, next)
			}
			next++
			text.WriteString(f.Content)
			last = ev.ID
		}
		r.res.Body.Close()
	}
}

func TestSSE_SnapshotAfterTTL(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1, StreamTTL: time.Second})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	s := n.send(t, tok, conv, demoPrompt(12, 0, "expire me"))
	stored := n.final(t, tok, conv, s.StreamID)
	path := "/v1/streams/" + s.StreamID + "/events"
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := n.sse(t, path, tok, "2", nil).follow(3)
		if r.snapshot {
			if r.text.String() != stored.Content || r.done == nil || r.done.LastIndex != 11 || len(r.indexes) != 0 {
				t.Fatalf("snapshot %q then %d chunks, done %+v; stored %q", r.text.String(), len(r.indexes), r.done, stored.Content)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshot 20 s after the TTL")
		}
		time.Sleep(200 * time.Millisecond) // polling for expiry, bounded above
	}
}

// A reader that stops reading is disconnected once its queue fills, and
// resumes from the last id it got: every index once.
func TestSSE_SlowReaderDisconnectedAndResumes(t *testing.T) {
	redis := testenv.StartRedisServer(t)
	const chunks = 200
	n := demoNodes(t, app.Config{
		RedisURL: redis.URL(),
		Provider: hubFlood{n: chunks, size: 64 << 10, every: 2 * time.Millisecond},
		WS:       server.WSConfig{WriteTimeout: 5 * time.Second},
		SSE:      server.SSEConfig{Queue: 64},
		Worker:   worker.Config{MaxAnswerBytes: 20 << 20},
	}, 1)[0]
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	id := n.send(t, tok, conv, "flood").StreamID
	path := "/v1/streams/" + id + "/events"
	stuck := n.sse(t, path, tok, "", hubSlowDialer())
	streamtest.Eventually(t, 30*time.Second, func() bool { return n.metric(t, "chatstream_sse_slow_readers_total") == 1 },
		"the stuck reader declared slow")
	// It reads what reached it, then the end of the response.
	first := stuck.follow(0)
	if first.done != nil || len(first.indexes) == 0 || len(first.indexes) == chunks {
		t.Fatalf("the slow reader got %d chunks (done %v) before its end", len(first.indexes), first.done)
	}
	rest := n.sse(t, path, tok, first.lastID, nil).follow(int64(len(first.indexes)))
	if rest.done == nil || len(first.indexes)+len(rest.indexes) != chunks {
		t.Fatalf("resumed: %d + %d chunks, done %+v", len(first.indexes), len(rest.indexes), rest.done)
	}
	stored := n.final(t, tok, conv, id)
	if first.text.String()+rest.text.String() != stored.Content {
		t.Fatal("the text read differs from the stored one")
	}
}

// 50 SSE readers on one node, each on a live stream: the node still holds
// one pub/sub connection.
func TestSSE_OnePubSubConnection(t *testing.T) {
	redis := testenv.StartRedisServer(t)
	keys := streaming.Keys{Prefix: testenv.Namespace(t)}
	n := demoNodes(t, app.Config{RedisURL: redis.URL(), KeyPrefix: keys.Prefix}, 10)[0]
	tok := n.devToken(t, "alice")
	const readers = 50
	ids := make([]string, 10)
	for i := range ids {
		ids[i] = n.send(t, tok, n.conversation(t, tok), demoPrompt(1000, 5, "slow")).StreamID
	}
	t.Cleanup(func() {
		for _, id := range ids {
			n.call(t, "POST", "/v1/streams/"+id+"/cancel", tok, nil, nil)
		}
	})
	rs := make([]*sseReader, readers)
	for i := range rs {
		rs[i] = n.sse(t, "/v1/streams/"+ids[i%len(ids)]+"/events", tok, "", nil)
	}
	for _, r := range rs {
		if ev, err := r.read(); err != nil || ev.Event != "chunk" {
			t.Fatalf("first event %+v, %v", ev, err)
		}
	}
	if got := n.metric(t, "chatstream_sse_open"); got != readers {
		t.Fatalf("chatstream_sse_open = %v, want %d", got, readers)
	}
	list := strings.TrimSpace(redis.Do("CLIENT", "LIST", "TYPE", "pubsub")[0])
	if conns := strings.Split(list, "\n"); len(conns) != 1 {
		t.Fatalf("CLIENT LIST TYPE pubsub shows %d connections, want 1:\n%s", len(conns), list)
	}
	// Readers that leave are let go.
	for _, r := range rs {
		r.res.Body.Close()
	}
	streamtest.Eventually(t, 10*time.Second, func() bool { return n.metric(t, "chatstream_sse_open") == 0 }, "SSE readers still open")
}

// A conversation's events: messages as they are made and change, a
// rename, and the deletion, which ends the response.
func TestSSE_ConversationEvents(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1, SSE: server.SSEConfig{PingInterval: 20 * time.Millisecond}})
	tok := n.devToken(t, "alice")
	conv := n.conversation(t, tok)
	r := n.sse(t, "/v1/conversations/"+conv+"/events?access_token="+tok, "", "", nil)
	r.readComment("ping") // an idle response gets pings
	s := n.send(t, tok, conv, demoPrompt(3, 0, "watch me"))
	seen := map[string]string{}
	for seen[s.StreamID] != "complete" {
		ev, err := r.read()
		if err != nil || ev.Event != "message" {
			t.Fatalf("event %+v, %v", ev, err)
		}
		var f frame
		_ = json.Unmarshal([]byte(ev.Data), &f)
		var m apiMessage
		_ = json.Unmarshal(f.Message, &m)
		seen[m.ID] = string(m.Status)
	}
	if seen[s.UserMessage.ID] != "complete" {
		t.Fatalf("events %v", seen)
	}
	if code := n.call(t, "PATCH", "/v1/conversations/"+conv, tok, map[string]string{"title": "watched"}, nil); code != 200 {
		t.Fatalf("PATCH: %d", code)
	}
	ev, err := r.read()
	if err != nil || ev.Event != "conversation" || !strings.Contains(ev.Data, `"event":"updated"`) || !strings.Contains(ev.Data, `"title":"watched"`) {
		t.Fatalf("after rename: %+v, %v", ev, err)
	}
	if code := n.call(t, "DELETE", "/v1/conversations/"+conv, tok, nil, nil); code != 204 {
		t.Fatalf("DELETE: %d", code)
	}
	ev, err = r.read()
	if err != nil || ev.Event != "conversation" || !strings.Contains(ev.Data, `"event":"deleted"`) {
		t.Fatalf("after delete: %+v, %v", ev, err)
	}
	if _, err := r.read(); err != io.EOF {
		t.Fatal("the response went on after the deletion")
	}
}
