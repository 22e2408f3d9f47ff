package integration

import (
	"net/http"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/streamtest"
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
	frames *streamtest.Recorder
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
	c.frames = streamtest.Record(t, c.redis, c.keys.Prefix+"stream:{*}")
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
	FinishReason   string              `json:"finish_reason"`
}

type sent struct {
	UserMessage      apiMessage `json:"user_message"`
	AssistantMessage apiMessage `json:"assistant_message"`
	StreamID         string     `json:"stream_id"`
}

// conversation creates a conversation for the token's user.
func (n *node) conversation(t testing.TB, token string) string {
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
	streamtest.Eventually(t, 30*time.Second, func() bool {
		m = n.message(t, token, conv, id)
		return m.Status.Final()
	}, "message %s never ended", id)
	return m
}

// llen returns the number of chunks in the log of stream id.
func (c *cluster) llen(t *testing.T, id string) int64 {
	t.Helper()
	n, err := c.redis.Do(streamtest.Ctx(t), c.redis.B().Llen().Key(c.keys.Chunks(id)).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkStream checks the contract's guarantees on an ended stream (see
// streamtest.CheckStream).
func (c *cluster) checkStream(t *testing.T, m apiMessage) []string {
	t.Helper()
	return streamtest.CheckStream(t, c.redis, c.keys, c.frames,
		&chatstream.Message{ID: m.ID, ConversationID: m.ConversationID, Content: m.Content, Status: m.Status, Error: m.Error,
			FinishReason: m.FinishReason})
}

// usage reads the token counts stored with message id.
func (c *cluster) usage(t *testing.T, id string) (prompt, completion *int) {
	t.Helper()
	return streamtest.Usage(t, c.db, id)
}
