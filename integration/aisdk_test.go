package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/app"
)

// The AI SDK's own client (npm ai, pinned in integration/aisdk) against a
// node: what useChat does, through DefaultChatTransport.

// uiMessage is a UIMessage as readUIMessageStream assembles it.
type uiMessage struct {
	ID    string `json:"id"`
	Role  string `json:"role"`
	Parts []struct {
		Type       string          `json:"type"`
		Text       string          `json:"text"`
		State      string          `json:"state"`
		ToolName   string          `json:"toolName"`
		ToolCallID string          `json:"toolCallId"`
		Input      json.RawMessage `json:"input"`
		Output     json.RawMessage `json:"output"`
	} `json:"parts"`
}

// text is the message's text parts joined.
func (m *uiMessage) text() string {
	var b strings.Builder
	for _, p := range m.Parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

type aiStep struct {
	Step    string     `json:"step"`
	Message *uiMessage `json:"message"`
	Chunks  []string   `json:"chunks"`
	Errors  []string   `json:"errors"`
	None    bool       `json:"none"`
}

// runNode runs a script of integration/aisdk with env and returns its
// output lines, decoded.
func runNode(t *testing.T, script string, env ...string) map[string]aiStep {
	t.Helper()
	dir, err := filepath.Abs("aisdk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "ai", "package.json")); err != nil {
		t.Fatalf("the AI SDK is not installed in %s: `make test` installs it (scripts/node-deps.sh): %v", dir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\nstdout:\n%s\nstderr:\n%s", script, err, stdout, stderr.String())
	}
	steps := map[string]aiStep{}
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var s aiStep
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("node output %q: %v", sc.Text(), err)
		}
		steps[s.Step] = s
	}
	return steps
}

func TestAISDK_DefaultChatTransport(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2})
	tok := n.devToken(t, "alice")
	const chat = "chat_from_the_ai_sdk"
	steps := runNode(t, "chat.mjs", "API="+n.url+"/v1/ai-sdk/chat", "TOKEN="+tok, "CHAT="+chat,
		"QUESTION=/demo think=6 tool=calculator\nWhat is 6 * 7?", "SLOW_QUESTION="+demoPrompt(80, 40, "a slow one"))

	// The chat is a conversation of the user's, with the answers stored.
	var list struct{ Conversations []apiConversation }
	n.call(t, "GET", "/v1/conversations", tok, nil, &list)
	if len(list.Conversations) != 1 {
		t.Fatalf("conversations %+v", list.Conversations)
	}
	conv := list.Conversations[0].ID
	// The branch shown ends in the regenerated answer; the one it replaced
	// is its first sibling.
	regenerated := n.messages(t, tok, conv)
	if len(regenerated) != 4 || len(regenerated[3].SiblingIDs) != 2 {
		t.Fatalf("stored %+v, want 4 messages ending in a regenerated answer", regenerated)
	}
	n.call(t, "PATCH", "/v1/conversations/"+conv, tok, map[string]string{"current_message_id": regenerated[3].SiblingIDs[0]}, nil)
	stored := n.messages(t, tok, conv)

	send := steps["send"]
	if m := send.Message; len(send.Errors) != 0 || m == nil || m.ID != stored[1].ID || m.text() != stored[1].Content || m.Role != "assistant" {
		t.Fatalf("send: %+v; stored %+v", send, stored[1])
	}
	if send.Chunks[0] != "start" || send.Chunks[len(send.Chunks)-1] != "finish" {
		t.Fatalf("send chunks %v", send.Chunks)
	}
	var kinds []string
	for _, p := range send.Message.Parts {
		kinds = append(kinds, p.Type)
		if p.Type == "dynamic-tool" && (p.ToolName != "calculator" || p.State != "output-available" || string(p.Output) != "42") {
			t.Fatalf("tool part %+v", p)
		}
		if (p.Type == "text" || p.Type == "reasoning") && p.State != "done" {
			t.Fatalf("%s part left %q", p.Type, p.State)
		}
	}
	if want := []string{"step-start", "reasoning", "dynamic-tool", "step-start", "text"}; !slices.Equal(kinds, want) {
		t.Fatalf("parts %v, want %v", kinds, want)
	}

	// Aborted at its first text, the answer goes on; reconnecting replays
	// it from the start, then live, to its end: the stored answer.
	aborted, resumed := steps["aborted"], steps["resumed"]
	if aborted.Message == nil || aborted.Message.ID != stored[3].ID || len(aborted.Message.text()) >= len(stored[3].Content) {
		t.Fatalf("aborted: %+v", aborted)
	}
	if m := resumed.Message; len(resumed.Errors) != 0 || m == nil || m.ID != stored[3].ID || m.text() != stored[3].Content || stored[3].Status != "complete" {
		t.Fatalf("resumed: %+v; stored %+v", resumed, stored[3])
	}
	if !steps["after-end"].None || !steps["never-used"].None {
		t.Fatalf("reconnect after the end: %+v, never used: %+v", steps["after-end"], steps["never-used"])
	}

	// Regenerate: a second version of the last answer.
	regen := steps["regenerated"]
	if len(regen.Errors) != 0 || regen.Message == nil || regen.Message.ID != regenerated[3].ID {
		t.Fatalf("regenerated: %+v; stored %+v", regen, regenerated[3])
	}
	if regen.Message.text() != regenerated[3].Content || regenerated[3].Status != "complete" ||
		!slices.Equal(regenerated[3].SiblingIDs, []string{stored[3].ID, regen.Message.ID}) {
		t.Fatalf("regenerated %q, stored %+v", regen.Message.text(), regenerated[3])
	}
}

func TestAISDK_BadRequests(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 1})
	alice, bob := n.devToken(t, "alice"), n.devToken(t, "bob")
	msg := func(text string) []map[string]any {
		return []map[string]any{{"id": "m1", "role": "user", "parts": []map[string]any{{"type": "text", "text": text}}}}
	}
	// Alice's chat, its answer still running.
	body := map[string]any{"id": "c1", "trigger": "submit-message", "messages": msg(demoPrompt(400, 20, "long"))}
	res := n.sseRequestPost(t, "/v1/ai-sdk/chat", alice, body)
	if res.StatusCode != 200 || res.Header.Get("X-Vercel-AI-UI-Message-Stream") != "v1" || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("chat: %d %v", res.StatusCode, res.Header)
	}
	res.Body.Close() // the client goes; the answer goes on
	for _, c := range []struct {
		method, path, token string
		body                any
		status              int
		code                string
	}{
		{"POST", "/v1/ai-sdk/chat", "", body, 401, "unauthorized"},
		{"POST", "/v1/ai-sdk/chat", alice, `{"id":`, 400, "invalid_request"},
		{"POST", "/v1/ai-sdk/chat", alice, map[string]any{"id": "", "trigger": "submit-message", "messages": msg("x")}, 400, "invalid_request"},
		{"POST", "/v1/ai-sdk/chat", alice, map[string]any{"id": strings.Repeat("x", 129), "trigger": "submit-message", "messages": msg("x")}, 400, "invalid_request"},
		{"POST", "/v1/ai-sdk/chat", alice, map[string]any{"id": "c2", "trigger": "resume", "messages": msg("x")}, 400, "invalid_request"},
		{"POST", "/v1/ai-sdk/chat", alice, map[string]any{"id": "c2", "trigger": "submit-message", "messages": []any{}}, 400, "invalid_request"},
		{"POST", "/v1/ai-sdk/chat", alice, map[string]any{"id": "c2", "trigger": "submit-message", "messages": msg(" ")}, 400, "invalid_request"},
		{"POST", "/v1/ai-sdk/chat", alice, map[string]any{"id": "c2", "trigger": "regenerate-message", "messages": msg("x")}, 404, "not_found"},
		{"POST", "/v1/ai-sdk/chat", alice, map[string]any{"id": "c1", "trigger": "submit-message",
			"messages": []map[string]any{{"id": "m2", "role": "user", "parts": []map[string]any{{"type": "text", "text": "again"}}}}}, 409, "conflict"},
		{"POST", "/v1/ai-sdk/chat", bob, map[string]any{"id": "c1", "trigger": "regenerate-message", "messages": msg("x")}, 404, "not_found"},
		{"GET", "/v1/ai-sdk/chat/c1/stream", "", nil, 401, "unauthorized"},
		{"GET", "/v1/ai-sdk/chat/" + strings.Repeat("x", 129) + "/stream", alice, nil, 400, "invalid_request"},
	} {
		code, b := n.raw(t, c.method, c.path, c.token, c.body)
		if code != c.status || !strings.Contains(string(b), `"code":"`+c.code+`"`) {
			t.Errorf("%s %s %v: %d %s, want %d %s", c.method, c.path, c.body, code, b, c.status, c.code)
		}
	}
	// A retry of the first request (the same message id) is its answer
	// again, not a second one.
	retry := n.sseRequestPost(t, "/v1/ai-sdk/chat", alice, body)
	first, _ := bufio.NewReader(retry.Body).ReadString('\n')
	if retry.StatusCode != 200 || !strings.Contains(first, `"type":"start"`) {
		t.Fatalf("retry: %d %q", retry.StatusCode, first)
	}
	retry.Body.Close()
	// Bob's chat of the same id is his own: nothing runs in it.
	if code, b := n.raw(t, "GET", "/v1/ai-sdk/chat/c1/stream", bob, nil); code != 204 || len(b) != 0 {
		t.Fatalf("bob's c1: %d %s", code, b)
	}
	var list struct{ Conversations []apiConversation }
	if n.call(t, "GET", "/v1/conversations", bob, nil, &list); len(list.Conversations) != 0 {
		t.Fatalf("bad requests made bob conversations: %+v", list)
	}
	if n.call(t, "GET", "/v1/conversations", alice, nil, &list); len(list.Conversations) != 1 {
		t.Fatalf("alice has %d conversations, want 1", len(list.Conversations))
	}
	msgs := n.messages(t, alice, list.Conversations[0].ID)
	if len(msgs) != 2 {
		t.Fatalf("alice's chat has %d messages after a retry and refused requests, want 2", len(msgs))
	}
	n.call(t, "POST", "/v1/streams/"+msgs[1].ID+"/cancel", alice, nil, nil)
}

// sseRequestPost posts a JSON body and returns the response unread.
func (n *node) sseRequestPost(t testing.TB, path, token string, body any) *http.Response {
	t.Helper()
	res, err := http.DefaultClient.Do(n.newRequest(t, "POST", path, token, body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}
