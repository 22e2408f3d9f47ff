package tools

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// toolServer is an httptest tool endpoint that records what it is sent.
type toolServer struct {
	*httptest.Server
	mu       sync.Mutex
	bodies   []map[string]any
	keys     []string
	types    []string
	response func(w http.ResponseWriter, r *http.Request)
}

func newToolServer(t *testing.T, response func(w http.ResponseWriter, r *http.Request)) *toolServer {
	ts := &toolServer{response: response}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(b, &body)
		ts.mu.Lock()
		ts.bodies = append(ts.bodies, body)
		ts.keys = append(ts.keys, r.Header.Get("Idempotency-Key"))
		ts.types = append(ts.types, r.Header.Get("Content-Type"))
		ts.mu.Unlock()
		ts.response(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *toolServer) set(t *testing.T, timeout string) *Set {
	t.Helper()
	file := `{"tools": [{"name": "lookup", "url": "` + ts.URL + `/lookup", "timeout": "` + timeout + `",
		"parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]}`
	s, err := Parse([]byte(file), ts.Client())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var aCall = Call{CallID: "call_1", Name: "lookup", Arguments: `{"q": "go"}`, ConversationID: "conv", MessageID: "msg", UserID: "alice"}

// The runner POSTs the call with its id as Idempotency-Key and takes the
// output of a 2xx JSON answer: a string as it is, other JSON as its text.
func TestHTTPTool_Call(t *testing.T) {
	out := `{"output": "found it"}`
	ts := newToolServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, out) })
	s := ts.set(t, "5s")
	if r := s.Run(context.Background(), aCall); r.IsError || r.Output != "found it" {
		t.Fatalf("result = %+v", r)
	}
	want := map[string]any{"call_id": "call_1", "name": "lookup", "arguments": map[string]any{"q": "go"},
		"conversation_id": "conv", "message_id": "msg", "user_id": "alice"}
	if b, _ := json.Marshal(ts.bodies[0]); string(b) != mustJSON(want) {
		t.Fatalf("body = %s, want %s", b, mustJSON(want))
	}
	if ts.keys[0] != "call_1" || ts.types[0] != "application/json" {
		t.Fatalf("Idempotency-Key %q, Content-Type %q", ts.keys[0], ts.types[0])
	}
	out = `{"output": {"hits": [1, 2]}}`
	if r := s.Run(context.Background(), aCall); r.IsError || r.Output != `{"hits": [1, 2]}` {
		t.Fatalf("result = %+v", r)
	}
	// A retried call is the same call: the same key.
	if ts.keys[1] != "call_1" {
		t.Fatalf("second Idempotency-Key %q", ts.keys[1])
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Whatever goes wrong is an error result the model is told, never an error
// of the generation.
func TestHTTPTool_Failures(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	for _, c := range []struct {
		name    string
		respond func(w http.ResponseWriter, r *http.Request)
		call    Call
		want    string
		made    bool
	}{
		{name: "500", respond: func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) },
			want: "The tool answered 500 Internal Server Error.", made: true},
		{name: "404", respond: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
			want: "The tool answered 404 Not Found.", made: true},
		{name: "not JSON", respond: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") },
			want: `The tool's answer is not JSON with an "output".`, made: true},
		{name: "JSON without output", respond: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"result": 1}`) },
			want: `The tool's answer is not JSON with an "output".`, made: true},
		{name: "too long", respond: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"output": "`+strings.Repeat("x", MaxOutput+1)+`"}`)
		}, want: "over the limit", made: true},
		{name: "timeout", respond: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}, want: "The tool did not answer in time.", made: true},
		{name: "arguments not JSON", call: Call{CallID: "c", Name: "lookup", Arguments: `{"q":`},
			want: "The arguments are not valid JSON."},
		{name: "arguments against the schema", call: Call{CallID: "c", Name: "lookup", Arguments: `{"q": 5}`},
			want: "The arguments do not match the tool's parameters"},
		{name: "no such tool", call: Call{CallID: "c", Name: "nope", Arguments: `{}`},
			want: `There is no tool named "nope".`},
	} {
		t.Run(c.name, func(t *testing.T) {
			respond := c.respond
			if respond == nil {
				respond = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"output":"x"}`) }
			}
			ts := newToolServer(t, respond)
			s := ts.set(t, "200ms")
			call := c.call
			if call.Name == "" {
				call = aCall
			}
			r := s.Run(context.Background(), call)
			if !r.IsError || !strings.Contains(r.Output, c.want) {
				t.Fatalf("result = %+v, want an error result with %q", r, c.want)
			}
			ts.mu.Lock()
			made := len(ts.bodies) > 0
			ts.mu.Unlock()
			if made != c.made {
				t.Fatalf("the tool was called: %v, want %v", made, c.made)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		ts := newToolServer(t, nil)
		s := ts.set(t, "1s")
		ts.Close()
		if r := s.Run(context.Background(), aCall); !r.IsError || r.Output != "The tool could not be reached." {
			t.Fatalf("result = %+v", r)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		ts := newToolServer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		s := ts.set(t, "1m")
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		if r := s.Run(ctx, aCall); !r.IsError || r.Output != "The call was stopped." {
			t.Fatalf("result = %+v", r)
		}
	})
}
