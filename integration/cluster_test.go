package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/llm/llmtest"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/worker"
)

const systemPrompt = "You are a test."

// cluster is what the nodes of one test share: a database, a Redis key
// prefix, an AUTH_SECRET and the fake model server. It also records every
// frame published on the cluster's stream channels.
type cluster struct {
	db     string
	keys   streaming.Keys
	secret []byte
	llm    *llmtest.Server
	redis  rueidis.Client
	frames *recorder
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{
		db:     testenv.NewDatabase(t),
		keys:   streaming.Keys{Prefix: testenv.Namespace(t)},
		secret: []byte(testenv.Name("secret-0123456789abcdef0123456789")),
		llm:    llmtest.NewServer(t),
	}
	var err error
	if c.redis, err = streaming.NewClient(testenv.RedisURL(t), streaming.ClientConfig{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.redis.Close)
	c.frames = record(t, c.redis, c.keys.Prefix+"stream:{*}")
	return c
}

// provider is the real OpenAI provider pointed at the fake server.
func (c *cluster) provider() llm.Provider {
	return llm.NewOpenAI(llm.OpenAIConfig{BaseURL: c.llm.URL(), APIKey: "test", Model: "m", IncludeUsage: true, RetryBase: time.Millisecond})
}

// node starts a node of the cluster with workers generation workers (0: an
// API-only node); mods change its configuration.
func (c *cluster) node(t *testing.T, workers int, mods ...func(*app.Config)) *node {
	t.Helper()
	cfg := app.Config{
		AuthDev:      true,
		AuthSecret:   c.secret,
		DatabaseURL:  c.db,
		KeyPrefix:    c.keys.Prefix,
		Workers:      workers,
		Provider:     c.provider(),
		HeartbeatTTL: time.Second,
		Worker:       worker.Config{SystemPrompt: systemPrompt, ReapInterval: 100 * time.Millisecond},
	}
	for _, mod := range mods {
		mod(&cfg)
	}
	return startNode(t, cfg)
}

// apiMessage is a Message as the API shows it.
type apiMessage struct {
	ID             string              `json:"id"`
	ConversationID string              `json:"conversation_id"`
	Role           string              `json:"role"`
	Content        string              `json:"content"`
	Status         chatstream.Status   `json:"status"`
	Error          *chatstream.Failure `json:"error"`
}

type sent struct {
	UserMessage      apiMessage `json:"user_message"`
	AssistantMessage apiMessage `json:"assistant_message"`
	StreamID         string     `json:"stream_id"`
}

func (n *node) conversation(t *testing.T, token string) string {
	t.Helper()
	var conv struct{ ID string }
	if code := n.call(t, "POST", "/v1/conversations", token, map[string]string{"title": "t"}, &conv); code != http.StatusCreated {
		t.Fatalf("create conversation: %d", code)
	}
	return conv.ID
}

// send posts a message and returns the answer, which must be 202.
func (n *node) send(t *testing.T, token, conv, content string) sent {
	t.Helper()
	var s sent
	if code := n.call(t, "POST", "/v1/conversations/"+conv+"/messages", token, map[string]string{"content": content}, &s); code != http.StatusAccepted {
		t.Fatalf("send: %d", code)
	}
	if s.StreamID == "" || s.StreamID != s.AssistantMessage.ID || s.AssistantMessage.Status != chatstream.StatusStreaming || s.UserMessage.Content != content {
		t.Fatalf("send answered %+v", s)
	}
	return s
}

func (n *node) messages(t *testing.T, token, conv string) []apiMessage {
	t.Helper()
	var got struct{ Messages []apiMessage }
	if code := n.call(t, "GET", "/v1/conversations/"+conv, token, nil, &got); code != http.StatusOK {
		t.Fatalf("get conversation: %d", code)
	}
	return got.Messages
}

func (n *node) message(t *testing.T, token, conv, id string) apiMessage {
	t.Helper()
	for _, m := range n.messages(t, token, conv) {
		if m.ID == id {
			return m
		}
	}
	t.Fatalf("message %s is not in conversation %s", id, conv)
	return apiMessage{}
}

// final waits until message id has a final status and returns it.
func (n *node) final(t *testing.T, token, conv, id string) apiMessage {
	t.Helper()
	var m apiMessage
	eventually(t, 30*time.Second, func() bool {
		m = n.message(t, token, conv, id)
		return m.Status.Final()
	}, "message %s never ended", id)
	return m
}

// llen returns the number of chunks in the log of stream id.
func (c *cluster) llen(t *testing.T, id string) int64 {
	t.Helper()
	n, err := c.redis.Do(testCtx(t), c.redis.B().Llen().Key(c.keys.Chunks(id)).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkStream checks the contract on an ended stream: the chunk log holds
// chunks 0..n-1 whose text joined is the stored content, and a subscriber
// of the stream's channel saw the same chunks in order, then one done frame
// with the stored status. It returns the chunk texts.
func (c *cluster) checkStream(t *testing.T, m apiMessage) []string {
	t.Helper()
	// The done frame goes out after Postgres is written: wait for it.
	got := c.frames.waitDone(t, c.keys.Channel(m.ID))
	hist, err := streaming.NewLog(c.redis, c.keys, time.Hour).Read(testCtx(t), m.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for i, f := range hist.Frames {
		var ch streaming.Chunk
		if err := json.Unmarshal(f, &ch); err != nil {
			t.Fatal(err)
		}
		if ch.Index != int64(i) || ch.StreamID != m.ID {
			t.Fatalf("chunk %d of the log is %s", i, f)
		}
		texts = append(texts, ch.Content)
	}
	if got := strings.Join(texts, ""); got != m.Content {
		t.Fatalf("chunks joined = %q, stored content = %q", got, m.Content)
	}
	if hist.Meta.Status != m.Status {
		t.Fatalf("redis says %s, postgres %s", hist.Meta.Status, m.Status)
	}
	if len(got) != len(hist.Frames)+1 {
		t.Fatalf("subscriber got %d frames, want %d chunks and done: %q", len(got), len(hist.Frames), got)
	}
	for i, f := range hist.Frames {
		if got[i] != string(f) {
			t.Fatalf("published frame %d = %s, the log holds %s", i, got[i], f)
		}
	}
	var done streaming.Done
	if err := json.Unmarshal([]byte(got[len(got)-1]), &done); err != nil {
		t.Fatal(err)
	}
	if done.Type != "done" || done.Status != m.Status || done.LastIndex != int64(len(texts))-1 || done.StreamID != m.ID {
		t.Fatalf("done = %+v, message %+v", done, m)
	}
	if (done.Error == nil) != (m.Error == nil) || (done.Error != nil && *done.Error != *m.Error) {
		t.Fatalf("done error %+v, stored error %+v", done.Error, m.Error)
	}
	return texts
}

// usage reads the token counts stored with message id.
func (c *cluster) usage(t *testing.T, id string) (prompt, completion *int) {
	t.Helper()
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, c.db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT prompt_tokens, completion_tokens FROM messages WHERE id = $1`, id).Scan(&prompt, &completion); err != nil {
		t.Fatal(err)
	}
	return prompt, completion
}

// recorder records every message of the channels that match a pattern,
// from a pub/sub connection of its own.
type recorder struct {
	mu      sync.Mutex
	msgs    map[string][]string
	changed chan struct{} // closed and replaced on every message
}

func record(t *testing.T, client rueidis.Client, pattern string) *recorder {
	t.Helper()
	r := &recorder{msgs: map[string][]string{}, changed: make(chan struct{})}
	dc, release := client.Dedicate()
	t.Cleanup(func() { dc.Close(); release() })
	dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: func(m rueidis.PubSubMessage) {
		r.mu.Lock()
		r.msgs[m.Channel] = append(r.msgs[m.Channel], m.Message)
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}})
	if err := dc.Do(testCtx(t), dc.B().Psubscribe().Pattern(pattern).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	return r
}

// waitDone waits until channel carried a done frame and returns every
// message it carried.
func (r *recorder) waitDone(t *testing.T, channel string) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		msgs, changed := append([]string(nil), r.msgs[channel]...), r.changed
		r.mu.Unlock()
		for _, m := range msgs {
			if strings.HasPrefix(m, `{"type":"done"`) {
				return msgs
			}
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s carried no done frame: %q", channel, msgs)
		}
	}
}

// eventually polls cond with a short tick until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func tokens(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(" t%d", i)
	}
	return out
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
