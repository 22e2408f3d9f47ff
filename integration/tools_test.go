package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/llm/llmtest"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/tools"
)

// toolEndpoint is the HTTP tool server of a test, in the test's process:
// "save" requires approval. It counts the calls it gets by Idempotency-Key.
type toolEndpoint struct {
	*httptest.Server
	file string // a TOOLS_FILE naming it

	mu   sync.Mutex
	keys map[string]int
}

func newToolEndpoint(t *testing.T) *toolEndpoint {
	t.Helper()
	te := &toolEndpoint{keys: map[string]int{}}
	te.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Arguments struct{ Q string }
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		te.mu.Lock()
		te.keys[r.Header.Get("Idempotency-Key")]++
		te.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]string{"output": "saved " + body.Arguments.Q})
	}))
	t.Cleanup(te.Close)
	te.file = filepath.Join(t.TempDir(), "tools.json")
	spec := `{"tools": [{"name": "save", "description": "Saves q.", "url": "` + te.URL + `/save", "requires_approval": true,
		"parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]}`
	if err := os.WriteFile(te.file, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	return te
}

// set loads the TOOLS_FILE as a node does.
func (te *toolEndpoint) set(t *testing.T) *tools.Set {
	t.Helper()
	s, err := tools.Load(te.file, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (te *toolEndpoint) calls() map[string]int {
	te.mu.Lock()
	defer te.mu.Unlock()
	out := map[string]int{}
	for k, v := range te.keys {
		out[k] = v
	}
	return out
}

func withTools(s *tools.Set) func(*app.Config) { return func(c *app.Config) { c.Worker.Tools = s } }

// readChunk reads frames until the chunk at index of stream id.
func (c *wsClient) readChunk(id string, index int64) frame {
	c.t.Helper()
	for {
		f := c.read()
		if f.Type == "chunk" && f.StreamID == id && f.Index == index {
			return f
		}
	}
}

var saveCall = llm.ToolCall{ID: "call_save_1", Name: "save", Arguments: `{"q":"milk"}`}

// A call that needs approval waits on one node while the user answers on
// another: any of the user's sockets, on any node, or the HTTP route. Every
// tab sees the answer; a tab that resumes sees the pending call from the
// log; another user cannot answer; a second answer is 409.
func TestTools_ApprovalAcrossNodes(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	te := newToolEndpoint(t)
	worker := c.node(t, 1, withTools(te.set(t))) // runs the generation
	api := c.node(t, 0)                          // the user's other node
	alice, bob := api.devToken(t, "alice"), api.devToken(t, "bob")
	conv := api.conversation(t, alice)
	c.llm.Enqueue(llmtest.Script{Reasoning: []string{"They want", " it saved."}, Tokens: []string{"Saving it."}, ToolCalls: []llm.ToolCall{saveCall}},
		llmtest.Script{Tokens: []string{"Saved."}})

	tabA := api.dial(t, alice)
	tabA.write(map[string]any{"type": "send", "conversation_id": conv, "content": "save milk"})
	acc, _ := tabA.readUntil("accepted")
	id := acc.StreamID
	tabB := worker.dial(t, alice)
	tabB.write(map[string]any{"type": "subscribe", "stream_id": id, "last_index": -1})
	// Chunks 0-1 reasoning, 2 text, 3 the call.
	for _, tab := range []*wsClient{tabA, tabB} {
		call := tab.readChunk(id, 3)
		want := protocol.ToolCall{CallID: saveCall.ID, Name: "save", Arguments: saveCall.Arguments, RequiresApproval: true}
		if call.Kind != "tool_call" || call.Content != "" || call.ToolCall == nil || *call.ToolCall != want {
			t.Fatalf("chunk 3 = %+v (call %+v)", call, call.ToolCall)
		}
	}
	// Reload mid-approval: the message is streaming, and the log shows the
	// pending call to a socket that resumes.
	if m := api.message(t, alice, conv, id); m.Status != chatstream.StatusStreaming {
		t.Fatalf("message while waiting = %+v", m)
	}
	reload := api.dial(t, alice)
	reload.write(map[string]any{"type": "subscribe", "stream_id": id, "last_index": 1})
	if f := reload.readChunk(id, 3); f.ToolCall == nil || !f.ToolCall.RequiresApproval {
		t.Fatalf("resumed socket's chunk 3 = %+v", f)
	}

	// Bad answers change nothing.
	for _, bad := range []struct {
		body map[string]any
		code int
	}{
		{map[string]any{"approved": true}, 400},
		{map[string]any{"call_id": saveCall.ID}, 400},
		{map[string]any{"call_id": saveCall.ID, "approved": "yes"}, 400},
		{map[string]any{"call_id": "call_other", "approved": true}, 409},
	} {
		var e struct{ Error struct{ Code string } }
		if code := api.call(t, "POST", "/v1/streams/"+id+"/approvals", alice, bad.body, &e); code != bad.code || e.Error.Code == "" {
			t.Fatalf("approval %v = %d %+v, want %d", bad.body, code, e, bad.code)
		}
	}
	var e struct{ Error struct{ Code string } }
	if code := api.call(t, "POST", "/v1/streams/"+id+"/approvals", bob, map[string]any{"call_id": saveCall.ID, "approved": true}, &e); code != 404 || e.Error.Code != "not_found" {
		t.Fatalf("bob's approval = %d %+v, want 404 not_found", code, e)
	}
	tabA.write(map[string]any{"type": "approve", "request_id": 7, "stream_id": id, "call_id": saveCall.ID})
	if f, _ := tabA.readUntil("error"); f.Code != "invalid_request" || string(f.RequestID) != "7" {
		t.Fatalf("approve without approved = %+v", f)
	}
	if n := te.calls(); len(n) != 0 {
		t.Fatalf("the tool ran before the approval: %v", n)
	}

	// Tab A (on the API node) approves; the worker's node runs the call.
	tabA.write(map[string]any{"type": "approve", "request_id": 8, "stream_id": id, "call_id": saveCall.ID, "approved": true})
	if f, _ := tabA.readUntil("answered"); f.CallID != saveCall.ID || f.StreamID != id || string(f.RequestID) != "8" {
		t.Fatalf("answered = %+v", f)
	}
	if code := worker.call(t, "POST", "/v1/streams/"+id+"/approvals", alice, map[string]any{"call_id": saveCall.ID, "approved": false}, &e); code != 409 || e.Error.Code != "conflict" {
		t.Fatalf("second answer = %d %+v, want 409 conflict", code, e)
	}
	want := []chatstream.Part{
		{Type: chatstream.PartReasoning, Text: "They want it saved."}, {Type: chatstream.PartText, Text: "Saving it."},
		{Type: chatstream.PartToolCall, CallID: saveCall.ID, Name: "save", Arguments: saveCall.Arguments, RequiresApproval: true},
		{Type: chatstream.PartToolApproval, CallID: saveCall.ID, Approved: true, Reason: "user"},
		{Type: chatstream.PartToolResult, CallID: saveCall.ID, Name: "save", Output: "saved milk"},
		{Type: chatstream.PartText, Text: "Saved."},
	}
	for i, tab := range []*wsClient{tabA, tabB, reload} {
		r := tab.follow(id, 4)
		if r.done.Status != "complete" || r.done.FinishReason != "stop" || r.done.Usage == nil || r.done.Usage.TotalTokens == 0 {
			t.Fatalf("tab %d: done = %+v", i, r.done)
		}
		if got := r.parts.Parts(); !reflect.DeepEqual(got[len(got)-3:], want[3:]) {
			t.Fatalf("tab %d: parts after the call = %+v", i, got)
		}
	}
	m := api.final(t, alice, conv, id)
	if !reflect.DeepEqual(m.Parts, want) || m.Content != "Saving it.Saved." || m.Model == nil || *m.Model != "m" || m.Usage == nil {
		t.Fatalf("stored message = %+v", m)
	}
	c.checkStream(t, m)
	// From the start, the chunks rebuild the stored parts.
	again := worker.dial(t, alice)
	again.write(map[string]any{"type": "subscribe", "stream_id": id, "last_index": -1})
	if r := again.follow(id, 0); !reflect.DeepEqual(r.parts.Parts(), want) || *r.done.Usage != *m.Usage {
		t.Fatalf("parts from the log = %+v, done %+v", r.parts.Parts(), r.done)
	}
	if n := te.calls(); len(n) != 1 || n[saveCall.ID] != 1 {
		t.Fatalf("tool calls by key = %v", n)
	}
}

// Snapshots carry the parts: from the chunk log for a client ahead of it,
// and from Postgres once the log is gone.
func TestTools_SnapshotsCarryParts(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t, 1)
	alice := n.devToken(t, "alice")
	conv := n.conversation(t, alice)
	c.llm.Enqueue(llmtest.Script{Reasoning: []string{"Hm", "m."}, Tokens: []string{"Yes", "."}})
	s := n.send(t, alice, conv, "well?")
	m := n.final(t, alice, conv, s.StreamID)
	c.checkStream(t, m)
	want := []chatstream.Part{{Type: chatstream.PartReasoning, Text: "Hmm."}, {Type: chatstream.PartText, Text: "Yes."}}
	if !reflect.DeepEqual(m.Parts, want) {
		t.Fatalf("stored parts = %+v", m.Parts)
	}
	snapshot := func(t *testing.T, from string) {
		t.Helper()
		ws := n.dial(t, alice)
		ws.write(map[string]any{"type": "subscribe", "stream_id": s.StreamID, "last_index": 9})
		f, _ := ws.readUntil("snapshot")
		if !reflect.DeepEqual(f.Parts, want) || f.Content != "Yes." || f.LastIndex != 3 {
			t.Fatalf("snapshot from %s = %+v", from, f)
		}
		if d, _ := ws.readUntil("done"); d.Usage == nil || *d.Usage != *m.Usage || d.FinishReason != "stop" {
			t.Fatalf("done after the snapshot from %s = %+v", from, d)
		}
	}
	t.Run("from the log", func(t *testing.T) { snapshot(t, "the log") })
	// The log lost (as after STREAM_TTL, or by Redis): Postgres answers.
	ctx := streamtest.Ctx(t)
	if err := c.redis.Do(ctx, c.redis.B().Del().Key(c.keys.Chunks(s.StreamID), c.keys.Meta(s.StreamID)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	t.Run("from Postgres", func(t *testing.T) { snapshot(t, "Postgres") })
}
