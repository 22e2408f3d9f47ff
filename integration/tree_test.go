package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/llm/llmtest"
)

// Conversations as trees, over HTTP and WebSocket, on two nodes: edit,
// regenerate, switching branches, renames, pages, idempotent sends,
// deletion — and every bad id answered as the contract says, changing
// nothing.

// turnAnswer is the 202 of a send, edit or regenerate, kept raw too.
type turnAnswer struct {
	UserMessage      *apiMessage `json:"user_message"`
	AssistantMessage apiMessage  `json:"assistant_message"`
	StreamID         string      `json:"stream_id"`
	body             []byte
}

// turn posts a send, edit or regenerate and wants 202.
func (n *node) turn(t testing.TB, path, token string, in any) turnAnswer {
	t.Helper()
	code, b := n.raw(t, "POST", path, token, in)
	if code != http.StatusAccepted {
		t.Fatalf("POST %s: %d %s", path, code, b)
	}
	a := turnAnswer{body: b}
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	if a.StreamID == "" || a.StreamID != a.AssistantMessage.ID {
		t.Fatalf("POST %s answered %s", path, b)
	}
	return a
}

// apiConversation is a conversation as the API shows it.
type apiConversation struct {
	ID               string       `json:"id"`
	Title            string       `json:"title"`
	CurrentMessageID *string      `json:"current_message_id"`
	Messages         []apiMessage `json:"messages"`
	HasMore          *bool        `json:"has_more"`
}

// branchIDs returns the ids of the branch GET /v1/conversations/:id shows.
func (n *node) branchIDs(t testing.TB, token, conv string) []string {
	t.Helper()
	var ids []string
	for _, m := range n.messages(t, token, conv) {
		ids = append(ids, m.ID)
	}
	return ids
}

// conversationEvent reads frames until a conversation event and returns
// it with its conversation decoded.
func (c *wsClient) conversationEvent() (frame, apiConversation) {
	c.t.Helper()
	f, _ := c.readUntil("conversation")
	var conv apiConversation
	if f.Event == "updated" {
		if err := json.Unmarshal(f.Conversation, &conv); err != nil {
			c.t.Fatalf("conversation event %+v: %v", f, err)
		}
	}
	return f, conv
}

// userContents returns the user messages of the model's last request.
func userContents(srv *llmtest.Server) []string {
	reqs := srv.Requests()
	var out []string
	for _, m := range reqs[len(reqs)-1].Messages {
		if m.Role == "user" {
			out = append(out, m.Content)
		}
	}
	return out
}

func TestTree_HTTP(t *testing.T) {
	c := newCluster(t)
	a, b := c.node(t, 1), c.node(t, 1)
	alice, bob := a.devToken(t, "alice"), a.devToken(t, "bob")
	conv := a.conversation(t, alice)
	path := "/v1/conversations/" + conv

	s1 := a.send(t, alice, conv, "q1")
	a.final(t, alice, conv, s1.StreamID)
	s2 := a.send(t, alice, conv, "q2")
	a.final(t, alice, conv, s2.StreamID)
	u1, a1, u2, a2 := s1.UserMessage.ID, s1.StreamID, s2.UserMessage.ID, s2.StreamID
	if s1.UserMessage.ParentID != nil || *s2.UserMessage.ParentID != a1 || !slices.Equal(s2.AssistantMessage.SiblingIDs, []string{a2}) {
		t.Fatalf("sent %+v then %+v", s1, s2)
	}

	// A watcher on the other node.
	w := b.dial(t, alice)
	w.write(map[string]any{"type": "watch", "conversation_id": conv})
	w.readUntil("watching")

	// Regenerate on node b: a second answer to q2, without a user message.
	r := b.turn(t, "/v1/messages/"+a2+"/regenerate", alice, nil)
	if r.UserMessage != nil || bytes.Contains(r.body, []byte(`"user_message"`)) {
		t.Fatalf("regenerate answered %s", r.body)
	}
	a2b := r.StreamID
	if m := r.AssistantMessage; *m.ParentID != u2 || !slices.Equal(m.SiblingIDs, []string{a2, a2b}) || m.Status != "streaming" {
		t.Fatalf("regenerated %s", r.body)
	}
	if _, cv := w.conversationEvent(); *cv.CurrentMessageID != a2b {
		t.Fatalf("watcher saw current %v, want %s", cv.CurrentMessageID, a2b)
	}
	a.final(t, alice, conv, a2b)
	if got := userContents(c.llm); !slices.Equal(got, []string{"q1", "q2"}) {
		t.Fatalf("regenerate prompted with %q", got)
	}

	// Edit on node a: a new q2 beside the old one, and its answer; the
	// prompt is the new branch only.
	e := a.turn(t, "/v1/messages/"+u2+"/edit", alice, map[string]any{"content": "q2 edited", "client_message_id": "edit-1"})
	u2e, a3 := e.UserMessage.ID, e.StreamID
	if *e.UserMessage.ParentID != a1 || !slices.Equal(e.UserMessage.SiblingIDs, []string{u2, u2e}) || e.UserMessage.ClientMsgID != "edit-1" ||
		*e.AssistantMessage.ParentID != u2e {
		t.Fatalf("edit answered %s", e.body)
	}
	if _, cv := w.conversationEvent(); *cv.CurrentMessageID != a3 {
		t.Fatalf("watcher saw current %v after the edit, want %s", cv.CurrentMessageID, a3)
	}
	a.final(t, alice, conv, a3)
	if got := userContents(c.llm); !slices.Equal(got, []string{"q1", "q2 edited"}) {
		t.Fatalf("edit prompted with %q", got)
	}
	var got apiConversation
	if code := b.call(t, "GET", path, alice, nil, &got); code != 200 || *got.CurrentMessageID != a3 || got.HasMore == nil || *got.HasMore {
		t.Fatalf("GET conversation: %d %+v", code, got)
	}
	if ids := b.branchIDs(t, alice, conv); !slices.Equal(ids, []string{u1, a1, u2e, a3}) {
		t.Fatalf("branch after the edit = %v", ids)
	}
	if sib := got.Messages[2].SiblingIDs; !slices.Equal(sib, []string{u2, u2e}) {
		t.Fatalf("siblings of the edited question = %v", sib)
	}

	// Switch back to the first answer of q2 on node a; the watcher on b
	// learns of it.
	code, body := a.raw(t, "PATCH", path, alice, map[string]any{"current_message_id": a2})
	if code != 200 || bytes.Contains(body, []byte(`"messages"`)) || !bytes.Contains(body, []byte(`"current_message_id":"`+a2+`"`)) {
		t.Fatalf("PATCH current_message_id: %d %s", code, body)
	}
	if f, cv := w.conversationEvent(); f.ConversationID != conv || *cv.CurrentMessageID != a2 {
		t.Fatalf("watcher saw %+v %+v", f, cv)
	}
	if ids := b.branchIDs(t, alice, conv); !slices.Equal(ids, []string{u1, a1, u2, a2}) {
		t.Fatalf("branch after the switch = %v", ids)
	}
	// To a question: down to its newest answer.
	if code, body := a.raw(t, "PATCH", path, alice, map[string]any{"current_message_id": u2}); code != 200 ||
		!bytes.Contains(body, []byte(`"current_message_id":"`+a2b+`"`)) {
		t.Fatalf("PATCH to a question: %d %s", code, body)
	}
	w.conversationEvent()

	// Rename.
	if code, body := b.raw(t, "PATCH", path, alice, map[string]any{"title": "renamed"}); code != 200 || !bytes.Contains(body, []byte(`"title":"renamed"`)) {
		t.Fatalf("rename: %d %s", code, body)
	}
	if _, cv := w.conversationEvent(); cv.Title != "renamed" || *cv.CurrentMessageID != a2b {
		t.Fatalf("watcher saw %+v after the rename", cv)
	}

	// Pages of the branch.
	var page struct {
		Messages []apiMessage `json:"messages"`
		HasMore  bool         `json:"has_more"`
	}
	if code := a.call(t, "GET", path+"/messages?limit=3", alice, nil, &page); code != 200 || !page.HasMore || len(page.Messages) != 3 ||
		page.Messages[0].ID != a1 || page.Messages[2].ID != a2b {
		t.Fatalf("first page: %d %+v", code, page)
	}
	page.Messages = nil
	if code := a.call(t, "GET", path+"/messages?limit=3&before="+a1, alice, nil, &page); code != 200 || page.HasMore ||
		len(page.Messages) != 1 || page.Messages[0].ID != u1 {
		t.Fatalf("second page: %d %+v", code, page)
	}
	page.Messages = nil
	if code := a.call(t, "GET", path+"/messages", alice, nil, &page); code != 200 || page.HasMore || len(page.Messages) != 4 {
		t.Fatalf("default page: %d %+v", code, page)
	}

	// Pages of the list.
	conv2, conv3 := a.conversation(t, alice), a.conversation(t, alice)
	var list struct {
		Conversations []apiConversation `json:"conversations"`
		NextCursor    *string           `json:"next_cursor"`
	}
	if code := b.call(t, "GET", "/v1/conversations?limit=2", alice, nil, &list); code != 200 || len(list.Conversations) != 2 ||
		list.Conversations[0].ID != conv3 || list.Conversations[1].ID != conv2 || list.NextCursor == nil {
		t.Fatalf("list page 1: %d %+v", code, list)
	}
	cursor := *list.NextCursor
	list.Conversations = nil
	if code := b.call(t, "GET", "/v1/conversations?limit=2&before="+cursor, alice, nil, &list); code != 200 || len(list.Conversations) != 1 ||
		list.Conversations[0].ID != conv || list.Conversations[0].Title != "renamed" || list.NextCursor != nil {
		t.Fatalf("list page 2: %d %+v", code, list)
	}
	if code, body := b.raw(t, "GET", "/v1/conversations", alice, nil); code != 200 || !bytes.Contains(body, []byte(`"next_cursor":null`)) {
		t.Fatalf("list: %d %s", code, body)
	}

	// The same client_message_id in another conversation.
	if code, body := a.raw(t, "POST", "/v1/conversations/"+conv2+"/messages", alice, map[string]any{"content": "x", "client_message_id": "edit-1"}); code != 409 ||
		!bytes.Contains(body, []byte(`"code":"conflict"`)) {
		t.Fatalf("client id reused elsewhere: %d %s", code, body)
	}

	t.Run("BadIDsChangeNothing", func(t *testing.T) {
		other := a.send(t, alice, conv2, "elsewhere")
		a.final(t, alice, conv2, other.StreamID)
		_, before := a.raw(t, "GET", path, alice, nil)
		_, listBefore := a.raw(t, "GET", "/v1/conversations", alice, nil)
		requests := len(c.llm.Requests())
		const unknown = "00000000-0000-4000-8000-000000000000"
		long := strings.Repeat("x", 65)
		for _, tc := range []struct {
			method, path, token string
			body                any
			status              int
			code                string
		}{
			{"POST", "/v1/messages/" + u1 + "/regenerate", alice, nil, 400, "invalid_request"},
			{"POST", "/v1/messages/" + a1 + "/regenerate", bob, nil, 404, "not_found"},
			{"POST", "/v1/messages/nope/regenerate", alice, nil, 404, "not_found"},
			{"POST", "/v1/messages/" + unknown + "/regenerate", alice, nil, 404, "not_found"},
			{"POST", "/v1/messages/" + a1 + "/edit", alice, map[string]any{"content": "x"}, 400, "invalid_request"},
			{"POST", "/v1/messages/" + u1 + "/edit", bob, map[string]any{"content": "x"}, 404, "not_found"},
			{"POST", "/v1/messages/nope/edit", alice, map[string]any{"content": "x"}, 404, "not_found"},
			{"POST", "/v1/messages/" + unknown + "/edit", alice, map[string]any{"content": "x"}, 404, "not_found"},
			{"POST", "/v1/messages/" + u1 + "/edit", alice, map[string]any{}, 400, "invalid_request"},
			{"POST", "/v1/messages/" + u1 + "/edit", alice, map[string]any{"content": " "}, 400, "invalid_request"},
			{"POST", "/v1/messages/" + u1 + "/edit", alice, map[string]any{"content": "x", "client_message_id": "a b"}, 400, "invalid_request"},
			{"POST", "/v1/messages/" + u1 + "/edit", alice, map[string]any{"content": "x", "client_message_id": ""}, 400, "invalid_request"},
			{"POST", "/v1/messages/" + u1 + "/edit", alice, `{"content":`, 400, "invalid_request"},
			{"POST", path + "/messages", alice, map[string]any{"content": "x", "client_message_id": long}, 400, "invalid_request"},
			{"POST", path + "/messages", alice, map[string]any{"content": "x", "client_message_id": 7}, 400, "invalid_request"},
			{"PATCH", path, alice, map[string]any{"current_message_id": other.StreamID}, 404, "not_found"},
			{"PATCH", path, alice, map[string]any{"current_message_id": "nope"}, 404, "not_found"},
			{"PATCH", path, alice, map[string]any{"current_message_id": unknown}, 404, "not_found"},
			{"PATCH", path, bob, map[string]any{"title": "bob's now"}, 404, "not_found"},
			{"PATCH", "/v1/conversations/nope", alice, map[string]any{"title": "x"}, 404, "not_found"},
			{"PATCH", path, alice, map[string]any{"title": 5}, 400, "invalid_request"},
			{"PATCH", path, alice, map[string]any{"title": "a\x00b"}, 400, "invalid_request"},
			{"PATCH", path, alice, map[string]any{"title": strings.Repeat("t", 1000)}, 400, "invalid_request"},
			{"DELETE", path, bob, nil, 404, "not_found"},
			{"DELETE", "/v1/conversations/nope", alice, nil, 404, "not_found"},
			{"DELETE", "/v1/conversations/" + unknown, alice, nil, 404, "not_found"},
			{"GET", path + "/messages", bob, nil, 404, "not_found"},
			{"GET", path + "/messages?before=" + other.StreamID, alice, nil, 404, "not_found"},
			{"GET", path + "/messages?before=nope", alice, nil, 404, "not_found"},
			{"GET", path + "/messages?limit=0", alice, nil, 400, "invalid_request"},
			{"GET", path + "/messages?limit=201", alice, nil, 400, "invalid_request"},
			{"GET", path + "/messages?limit=ten", alice, nil, 400, "invalid_request"},
			{"GET", "/v1/conversations?limit=0", alice, nil, 400, "invalid_request"},
			{"GET", "/v1/conversations?limit=201", alice, nil, 400, "invalid_request"},
			{"GET", "/v1/conversations?limit=1.5", alice, nil, 400, "invalid_request"},
			{"GET", "/v1/conversations?before=garbage", alice, nil, 400, "invalid_request"},
		} {
			code, body := a.raw(t, tc.method, tc.path, tc.token, tc.body)
			var e struct {
				Error struct{ Code, Message string }
			}
			_ = json.Unmarshal(body, &e)
			if code != tc.status || e.Error.Code != tc.code || e.Error.Message == "" {
				t.Errorf("%s %s %v: %d %s, want %d %s", tc.method, tc.path, tc.body, code, body, tc.status, tc.code)
			}
		}
		if _, after := a.raw(t, "GET", path, alice, nil); !bytes.Equal(after, before) {
			t.Fatalf("the conversation changed:\n%s\n%s", before, after)
		}
		if _, after := a.raw(t, "GET", "/v1/conversations", alice, nil); !bytes.Equal(after, listBefore) {
			t.Fatalf("the list changed:\n%s\n%s", listBefore, after)
		}
		if n := len(c.llm.Requests()); n != requests {
			t.Fatalf("bad requests started %d generations", n-requests)
		}
	})
}

func TestTree_WS(t *testing.T) {
	c := newCluster(t)
	n := c.node(t, 1)
	alice, bob := n.devToken(t, "alice"), n.devToken(t, "bob")
	conv := n.conversation(t, alice)
	s := n.send(t, alice, conv, "q1")
	n.final(t, alice, conv, s.StreamID)
	ws := n.dial(t, alice)

	// Regenerate: accepted without a user message, the socket follows.
	ws.write(map[string]any{"type": "regenerate", "message_id": s.StreamID, "request_id": "r1"})
	acc, _ := ws.readUntil("accepted")
	if string(acc.RequestID) != `"r1"` || acc.UserMessage != nil || acc.AssistantMessage == nil ||
		*acc.AssistantMessage.ParentID != s.UserMessage.ID || !slices.Equal(acc.AssistantMessage.SiblingIDs, []string{s.StreamID, acc.StreamID}) {
		t.Fatalf("regenerate accepted %+v", acc)
	}
	if res := ws.follow(acc.StreamID, 0); res.done.Status != "complete" || res.text.String() != strings.Join(llmtest.DefaultTokens(), "") {
		t.Fatalf("regenerated stream ended %+v with %q", res.done, res.text.String())
	}

	// Edit with a client id, then its repeat: the same ids, the new request
	// id, no second generation.
	ws.write(map[string]any{"type": "edit", "message_id": s.UserMessage.ID, "content": "q1 again", "client_message_id": "e-1", "request_id": "e1"})
	edit, _ := ws.readUntil("accepted")
	if string(edit.RequestID) != `"e1"` || edit.UserMessage == nil || edit.UserMessage.Content != "q1 again" ||
		edit.UserMessage.ParentID != nil || !slices.Equal(edit.UserMessage.SiblingIDs, []string{s.UserMessage.ID, edit.UserMessage.ID}) {
		t.Fatalf("edit accepted %+v", edit)
	}
	ws.follow(edit.StreamID, 0)
	requests := len(c.llm.Requests())
	ws.write(map[string]any{"type": "edit", "message_id": s.UserMessage.ID, "content": "q1 again", "client_message_id": "e-1", "request_id": "e2"})
	again, _ := ws.readUntil("accepted")
	if string(again.RequestID) != `"e2"` || again.StreamID != edit.StreamID || again.UserMessage.ID != edit.UserMessage.ID {
		t.Fatalf("repeated edit accepted %+v, want %+v", again, edit)
	}
	// The repeat's socket is subscribed to the (ended) stream: it gets its
	// chunks and done again.
	if res := ws.follow(edit.StreamID, 0); res.done.Status != "complete" {
		t.Fatalf("repeat's stream: %+v", res.done)
	}
	if n := len(c.llm.Requests()); n != requests {
		t.Fatalf("a repeated edit started %d generations", n-requests)
	}
	if ids := n.branchIDs(t, alice, conv); !slices.Equal(ids, []string{edit.UserMessage.ID, edit.StreamID}) {
		t.Fatalf("branch = %v", ids)
	}

	// Bad frames: an error with the request id, nothing started.
	bobs := n.dial(t, bob)
	for _, tc := range []struct {
		ws    *wsClient
		frame map[string]any
		code  string
	}{
		{ws, map[string]any{"type": "regenerate"}, "invalid_request"},
		{ws, map[string]any{"type": "regenerate", "message_id": s.UserMessage.ID}, "invalid_request"},
		{ws, map[string]any{"type": "regenerate", "message_id": "nope"}, "not_found"},
		{bobs, map[string]any{"type": "regenerate", "message_id": s.StreamID}, "not_found"},
		{ws, map[string]any{"type": "edit", "message_id": s.StreamID, "content": "x"}, "invalid_request"},
		{ws, map[string]any{"type": "edit", "message_id": s.UserMessage.ID}, "invalid_request"},
		{ws, map[string]any{"type": "edit", "message_id": s.UserMessage.ID, "content": "x", "client_message_id": "no spaces"}, "invalid_request"},
		{bobs, map[string]any{"type": "edit", "message_id": s.UserMessage.ID, "content": "x"}, "not_found"},
		{ws, map[string]any{"type": "send", "conversation_id": conv, "content": "x", "client_message_id": strings.Repeat("y", 65)}, "invalid_request"},
	} {
		tc.frame["request_id"] = "bad"
		tc.ws.write(tc.frame)
		f, _ := tc.ws.readUntil("error")
		if f.Code != tc.code || string(f.RequestID) != `"bad"` {
			t.Errorf("%v: %+v, want %s", tc.frame, f, tc.code)
		}
	}
	if n := len(c.llm.Requests()); n != requests {
		t.Fatalf("bad frames started %d generations", n-requests)
	}
	if ids := n.branchIDs(t, alice, conv); !slices.Equal(ids, []string{edit.UserMessage.ID, edit.StreamID}) {
		t.Fatalf("branch after bad frames = %v", ids)
	}
}

// Duplicates of one send at once on two nodes: one message, one
// generation, every answer the same bytes — also a repeat while the first
// still streams, and over the socket.
func TestTree_IdempotentSendsAcrossNodes(t *testing.T) {
	c := newCluster(t)
	nodes := []*node{c.node(t, 1), c.node(t, 1)}
	alice := nodes[0].devToken(t, "alice")
	conv := nodes[0].conversation(t, alice)
	path := "/v1/conversations/" + conv + "/messages"
	for round := range 4 {
		in := map[string]any{"content": fmt.Sprint("question ", round), "client_message_id": fmt.Sprint("round-", round)}
		requests := len(c.llm.Requests())
		bodies := make([][]byte, 6)
		codes := make([]int, len(bodies))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range bodies {
			wg.Go(func() {
				<-start
				codes[i], bodies[i] = nodes[i%2].raw(t, "POST", path, alice, in)
			})
		}
		close(start)
		wg.Wait()
		for i := range bodies {
			if codes[i] != http.StatusAccepted || !bytes.Equal(bodies[i], bodies[0]) {
				t.Fatalf("round %d: answer %d = %d %s\nanswer 0 = %d %s", round, i, codes[i], bodies[i], codes[0], bodies[0])
			}
		}
		var a turnAnswer
		if err := json.Unmarshal(bodies[0], &a); err != nil {
			t.Fatal(err)
		}
		// A repeat while the first still streams (or just ended) is the same.
		if code, b := nodes[1].raw(t, "POST", path, alice, in); code != 202 || !bytes.Equal(b, bodies[0]) {
			t.Fatalf("round %d: repeat = %d %s", round, code, b)
		}
		nodes[0].final(t, alice, conv, a.StreamID)
		if code, b := nodes[0].raw(t, "POST", path, alice, in); code != 202 || !bytes.Equal(b, bodies[0]) {
			t.Fatalf("round %d: repeat after the end = %d %s", round, code, b)
		}
		if err := c.llm.WaitRequests(streamtest.Ctx(t), requests+1); err != nil {
			t.Fatal(err)
		}
		if n := len(c.llm.Requests()); n != requests+1 {
			t.Fatalf("round %d: %d generations, want 1", round, n-requests)
		}
	}
	if ids := nodes[1].branchIDs(t, alice, conv); len(ids) != 8 {
		t.Fatalf("branch has %d messages after 4 rounds, want 8", len(ids))
	}
	// Over the socket: a repeat of an HTTP send is accepted with the same
	// messages and the frame's request id.
	ws := nodes[1].dial(t, alice)
	ws.write(map[string]any{"type": "send", "conversation_id": conv, "content": "question 0", "client_message_id": "round-0", "request_id": 9})
	acc, _ := ws.readUntil("accepted")
	var first turnAnswer
	_, b := nodes[0].raw(t, "POST", path, alice, map[string]any{"content": "question 0", "client_message_id": "round-0"})
	_ = json.Unmarshal(b, &first)
	if string(acc.RequestID) != "9" || acc.StreamID != first.StreamID || acc.UserMessage.ID != first.UserMessage.ID {
		t.Fatalf("WS repeat accepted %+v, want %s", acc, b)
	}
}

// Deleting a conversation while its answer streams, with followers and a
// watcher on the other node: the generation stops, the chunk logs go,
// everyone is told, and every id of it is not_found on both nodes — also
// the stream the other node still held a copy of.
func TestTree_DeleteAcrossNodes(t *testing.T) {
	c := newCluster(t)
	a, b := c.node(t, 1), c.node(t, 1)
	alice := a.devToken(t, "alice")
	conv := a.conversation(t, alice)
	ended := a.send(t, alice, conv, "q1")
	a.final(t, alice, conv, ended.StreamID)
	// Node b follows the ended stream to its end: it holds a copy now.
	old := b.dial(t, alice)
	old.write(map[string]any{"type": "subscribe", "stream_id": ended.StreamID})
	old.follow(ended.StreamID, 0)

	c.llm.Enqueue(llmtest.Script{StallAfter: 2})
	running := a.send(t, alice, conv, "q2")
	follower := b.dial(t, alice)
	follower.write(map[string]any{"type": "subscribe", "stream_id": running.StreamID})
	for f := follower.read(); f.Type != "chunk" || f.Index != 1; f = follower.read() {
	}
	watcher := b.dial(t, alice)
	watcher.write(map[string]any{"type": "watch", "conversation_id": conv})
	watcher.readUntil("watching")

	if code, body := a.raw(t, "DELETE", "/v1/conversations/"+conv, alice, nil); code != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	// The follower's stream ends not_found; the watcher is told.
	if f, _ := follower.readUntil("error"); f.StreamID != running.StreamID || f.Code != "not_found" {
		t.Fatalf("follower got %+v", f)
	}
	if f, _ := watcher.readUntil("conversation"); f.Event != "deleted" || f.ConversationID != conv || f.Conversation != nil {
		t.Fatalf("watcher got %+v", f)
	}
	// The generation stopped and nothing of it is left in Redis.
	if err := c.llm.WaitActive(streamtest.Ctx(t), 0); err != nil {
		t.Fatal(err)
	}
	streamtest.Eventually(t, 10*time.Second, func() bool { return a.metric(t, "chatstream_generations_active") == 0 },
		"the generation of a deleted conversation still runs")
	for _, id := range []string{ended.StreamID, running.StreamID} {
		n, err := c.redis.Do(streamtest.Ctx(t), c.redis.B().Exists().Key(c.keys.Chunks(id), c.keys.Meta(id), c.keys.Parts(id)).Build()).AsInt64()
		if err != nil || n != 0 {
			t.Fatalf("stream %s: %d keys left, %v", id, n, err)
		}
	}

	// Every id of it is not_found, on every route and frame, on both nodes.
	for _, n := range []*node{a, b} {
		for _, r := range []struct{ method, path string }{
			{"GET", "/v1/conversations/" + conv},
			{"GET", "/v1/conversations/" + conv + "/messages"},
			{"PATCH", "/v1/conversations/" + conv},
			{"DELETE", "/v1/conversations/" + conv},
			{"POST", "/v1/conversations/" + conv + "/messages"},
			{"POST", "/v1/messages/" + ended.StreamID + "/regenerate"},
			{"POST", "/v1/messages/" + ended.UserMessage.ID + "/edit"},
			{"POST", "/v1/streams/" + running.StreamID + "/cancel"},
			{"POST", "/v1/streams/" + running.StreamID + "/approvals"},
		} {
			code, body := n.raw(t, r.method, r.path, alice, map[string]any{"content": "x", "title": "x", "call_id": "c", "approved": true})
			if code != 404 || !bytes.Contains(body, []byte(`"code":"not_found"`)) {
				t.Errorf("%s %s after delete: %d %s", r.method, r.path, code, body)
			}
		}
		ws := n.dial(t, alice)
		for _, fr := range []map[string]any{
			{"type": "subscribe", "stream_id": ended.StreamID},
			{"type": "subscribe", "stream_id": running.StreamID, "last_index": 0},
			{"type": "watch", "conversation_id": conv},
			{"type": "send", "conversation_id": conv, "content": "x"},
			{"type": "regenerate", "message_id": ended.StreamID},
			{"type": "edit", "message_id": ended.UserMessage.ID, "content": "x"},
			{"type": "cancel", "stream_id": running.StreamID},
		} {
			fr["request_id"] = "gone"
			ws.write(fr)
			if f := ws.read(); f.Type != "error" || f.Code != "not_found" || string(f.RequestID) != `"gone"` {
				t.Errorf("%v after delete: %+v", fr, f)
			}
		}
	}
	var list struct{ Conversations []apiConversation }
	if a.call(t, "GET", "/v1/conversations", alice, nil, &list); len(list.Conversations) != 0 {
		t.Fatalf("list after delete: %+v", list)
	}
	// The user's generation slot was given back: a new conversation answers.
	conv2 := b.conversation(t, alice)
	s := b.send(t, alice, conv2, "after")
	if m := b.final(t, alice, conv2, s.StreamID); m.Status != "complete" {
		t.Fatalf("send after delete: %+v", m)
	}
}
