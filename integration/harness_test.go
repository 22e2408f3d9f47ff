package integration

// The one harness of the end-to-end tests: a cluster of nodes sharing a
// database, a Redis key prefix, an AUTH_SECRET and a model; the node's HTTP
// calls; and one WebSocket client, for the test's goroutine (failing the
// test) and for others (returning errors).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/limits"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/llm/llmtest"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

const systemPrompt = "You are a test."

// cluster is what the nodes of one test share: a database, a Redis key
// prefix, an AUTH_SECRET and the model — the fake OpenAI server (llm), or
// the demo model. It also records every frame published on the cluster's
// stream channels (on the shared Redis).
type cluster struct {
	db     string
	keys   streaming.Keys
	secret []byte
	llm    *llmtest.Server // nil on a demo cluster
	demo   llm.Provider    // the demo model, on a demo cluster
	redis  rueidis.Client
	frames *streamtest.Recorder
}

// newCluster returns a cluster on the fake OpenAI server.
func newCluster(t testing.TB) *cluster {
	t.Helper()
	c := newDemoCluster(t, 0)
	c.demo, c.llm = nil, llmtest.NewServer(t)
	return c
}

// newDemoCluster returns a cluster on the demo model at rate tokens a
// second (0: 400, fast enough for tests that only wait).
func newDemoCluster(t testing.TB, rate float64) *cluster {
	t.Helper()
	if rate == 0 {
		rate = 400
	}
	c := &cluster{
		db:     testenv.NewDatabase(t),
		keys:   streaming.Keys{Prefix: testenv.Namespace(t)},
		secret: []byte(testenv.Name("secret-0123456789abcdef0123456789")),
		demo:   llm.NewDemo(llm.DemoConfig{TokensPerSec: rate}),
	}
	var err error
	if c.redis, err = streaming.NewClient(testenv.RedisURL(t), streaming.ClientConfig{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.redis.Close)
	c.frames = streamtest.Record(t, c.redis, c.keys.Prefix+"stream:{*}")
	return c
}

// provider is the cluster's model: the real OpenAI provider pointed at the
// fake server, or the demo.
func (c *cluster) provider() llm.Provider {
	if c.llm == nil {
		return c.demo
	}
	return llm.NewOpenAI(llm.OpenAIConfig{BaseURL: c.llm.URL(), APIKey: "test", Model: "m", IncludeUsage: true, RetryBase: time.Millisecond})
}

// node is one running node.
type node struct {
	*app.Main
	url string
}

// start runs a node of the cluster with cfg, on a free port, and shuts it
// down when the test ends: the one way the tests start nodes. What cfg
// leaves empty the cluster fills in (dev tokens are on); mods then change
// the result.
func (c *cluster) start(t testing.TB, cfg app.Config, mods ...func(*app.Config)) *node {
	t.Helper()
	cfg.AuthDev = true
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.RedisURL == "" {
		cfg.RedisURL = testenv.RedisURL(t)
	}
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = c.db
	}
	if cfg.KeyPrefix == "" {
		// The queue is shared by every node on a prefix: a node of another
		// test must not take this test's jobs.
		cfg.KeyPrefix = c.keys.Prefix
	}
	if cfg.AuthSecret == nil {
		cfg.AuthSecret = c.secret
	}
	if cfg.Provider == nil {
		cfg.Provider = c.provider()
	}
	if c.llm != nil {
		// Pipeline tests kill and stop nodes: a dead node's jobs are taken
		// over within a second or two. (Demo clusters keep the default
		// heartbeat: a Redis failover must not pass for a dead node.)
		if cfg.HeartbeatTTL == 0 {
			cfg.HeartbeatTTL = time.Second
		}
		if cfg.Worker.ReapInterval == 0 {
			cfg.Worker.ReapInterval = 100 * time.Millisecond
		}
		if cfg.Worker.SystemPrompt == "" {
			cfg.Worker.SystemPrompt = systemPrompt
		}
	}
	for _, mod := range mods {
		mod(&cfg)
	}
	m := app.New(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &node{Main: m, url: "http://" + m.Addr().String()}
}

// node starts a node with workers generation workers (0: an API-only node);
// mods change its configuration.
func (c *cluster) node(t testing.TB, workers int, mods ...func(*app.Config)) *node {
	t.Helper()
	return c.start(t, app.Config{Workers: workers}, mods...)
}

// demoNode starts a node of a cluster of its own on the fast demo model.
func demoNode(t testing.TB, cfg app.Config) *node {
	t.Helper()
	return newDemoCluster(t, 0).start(t, cfg)
}

// demoNodes starts nodes of one demo cluster with cfg; workers[i] is node
// i's number of workers. Their per-user limits are off unless cfg sets
// them: these tests run many sockets and streams of one user.
func demoNodes(t *testing.T, cfg app.Config, workers ...int) []*node {
	t.Helper()
	if cfg.Limits == (limits.Config{}) {
		cfg.Limits = limits.Off()
	}
	c := newDemoCluster(t, 0)
	nodes := make([]*node, len(workers))
	for i, w := range workers {
		cfg.Workers = w
		nodes[i] = c.start(t, cfg)
	}
	return nodes
}

// demoPrompt is a user message that makes the demo model answer with
// exactly tokens chunks at rate chunks per second (0: as fast as it can).
func demoPrompt(tokens int, rate float64, question string) string {
	return fmt.Sprintf("/demo tokens=%d rate=%g\n%s", tokens, rate, question)
}

// seed returns the seed of a randomized test, from CHATSTREAM_SEED if set,
// and logs it so a failure can be replayed.
func seed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CHATSTREAM_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHATSTREAM_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with CHATSTREAM_SEED=%d)", seed, seed)
	return seed
}

// --- HTTP ---------------------------------------------------------------

// call sends a JSON request (in encoded as JSON, if non-nil) and decodes
// the JSON answer into out (if non-nil).
func (n *node) call(t testing.TB, method, path, token string, in, out any) int {
	t.Helper()
	var body any
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = b
	}
	code, b := n.raw(t, method, path, token, body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode answer %q: %v", method, path, b, err)
		}
	}
	return code
}

// newRequest makes a request of the node (in: nil; a string or bytes sent
// as they are; or a value to encode as JSON) with token, if any, as its
// bearer.
func (n *node) newRequest(t testing.TB, method, path, token string, in any) *http.Request {
	t.Helper()
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case string:
		body = strings.NewReader(v)
	case []byte:
		body = bytes.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, n.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req
}

// raw sends a request (in as newRequest takes it) and returns the status
// and body.
func (n *node) raw(t testing.TB, method, path, token string, in any) (int, []byte) {
	t.Helper()
	res, err := http.DefaultClient.Do(n.newRequest(t, method, path, token, in))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, b
}

// devToken gets an access token for user from a node with AuthDev.
func (n *node) devToken(t testing.TB, user string) string {
	t.Helper()
	var out struct{ Token string }
	if code := n.call(t, "POST", "/v1/auth/dev-token", "", map[string]string{"user": user}, &out); code != 200 {
		t.Fatalf("dev-token: %d", code)
	}
	return out.Token
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
	Parts          []chatstream.Part   `json:"parts"`
	Model          *string             `json:"model"`
	Usage          *chatstream.Usage   `json:"usage"`
	ParentID       *string             `json:"parent_id"`
	SiblingIDs     []string            `json:"sibling_ids"`
	ClientMsgID    string              `json:"client_message_id"`
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
func (n *node) send(t testing.TB, token, conv, content string) sent {
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

func (n *node) messages(t testing.TB, token, conv string) []apiMessage {
	t.Helper()
	var got struct{ Messages []apiMessage }
	if code := n.call(t, "GET", "/v1/conversations/"+conv, token, nil, &got); code != http.StatusOK {
		t.Fatalf("get conversation: %d", code)
	}
	return got.Messages
}

func (n *node) message(t testing.TB, token, conv, id string) apiMessage {
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
func (n *node) final(t testing.TB, token, conv, id string) apiMessage {
	t.Helper()
	var m apiMessage
	streamtest.Eventually(t, 30*time.Second, func() bool {
		m = n.message(t, token, conv, id)
		return m.Status.Final()
	}, "message %s never ended", id)
	return m
}

// metric returns the value of one series of the node's /metrics, e.g.
// `chatstream_history_reads_total` or `x_total{code="y"}`; 0 when absent.
func (n *node) metric(t testing.TB, series string) float64 {
	t.Helper()
	res, err := http.Get(n.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// llen returns the number of chunks in the log of stream id.
func (c *cluster) llen(t testing.TB, id string) int64 {
	t.Helper()
	n, err := c.redis.Do(streamtest.Ctx(t), c.redis.B().Llen().Key(c.keys.Chunks(id)).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkStream checks the contract's guarantees on an ended stream (see
// streamtest.CheckStream).
func (c *cluster) checkStream(t testing.TB, m apiMessage) []string {
	t.Helper()
	return streamtest.CheckStream(t, c.redis, c.keys, c.frames,
		&chatstream.Message{ID: m.ID, ConversationID: m.ConversationID, Role: chatstream.Role(m.Role), Content: m.Content, Status: m.Status,
			Error: m.Error, FinishReason: m.FinishReason, Parts: m.Parts, Usage: m.Usage})
}

// usage reads the token counts stored with message id.
func (c *cluster) usage(t testing.TB, id string) (prompt, completion *int) {
	t.Helper()
	return streamtest.Usage(t, c.db, id)
}

// --- WebSocket -----------------------------------------------------------

// frame is any server frame, decoded.
type frame struct {
	Type             string          `json:"type"`
	RequestID        json.RawMessage `json:"request_id"`
	StreamID         string          `json:"stream_id"`
	ConversationID   string          `json:"conversation_id"`
	Index            int64           `json:"index"`
	LastIndex        int64           `json:"last_index"`
	Content          string          `json:"content"`
	TS               int64           `json:"ts"`
	Status           string          `json:"status"`
	MessageID        string          `json:"message_id"`
	Code             string          `json:"code"`
	Message          json.RawMessage `json:"message"`
	Error            *struct{ Code, Message string }
	UserMessage      *apiMessage `json:"user_message"`
	AssistantMessage *apiMessage `json:"assistant_message"`
	// Of chunks of other kinds than text, snapshots and done frames.
	Kind         string                 `json:"kind"`
	Reasoning    string                 `json:"reasoning"`
	ToolCall     *protocol.ToolCall     `json:"tool_call"`
	ToolApproval *protocol.ToolApproval `json:"tool_approval"`
	ToolResult   *protocol.ToolResult   `json:"tool_result"`
	Parts        []chatstream.Part      `json:"parts"`
	Usage        *chatstream.Usage      `json:"usage"`
	FinishReason string                 `json:"finish_reason"`
	CallID       string                 `json:"call_id"`
	// Of conversation events.
	Event        string          `json:"event"`
	Conversation json.RawMessage `json:"conversation"`
}

// part is what a chunk frame carries.
func (f frame) part() chatstream.Part {
	return protocol.Chunk{Kind: f.Kind, Content: f.Content, Reasoning: f.Reasoning, ToolCall: f.ToolCall,
		ToolApproval: f.ToolApproval, ToolResult: f.ToolResult}.Part()
}

// wsClient is a test's WebSocket client. Its write, read and follow fail
// the test (for the test's goroutine); send and next return errors (for
// any goroutine).
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
}

// dial opens a socket to node n as the holder of token.
func (n *node) dial(t testing.TB, token string) *wsClient {
	t.Helper()
	c, err := n.connect(t, context.Background(), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// connect opens a socket without failing the test, for use in goroutines;
// opts may set the HTTP client. The socket is closed when the test ends.
func (n *node) connect(t testing.TB, ctx context.Context, token string, opts *websocket.DialOptions) (*wsClient, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	opts.HTTPHeader = http.Header{"Authorization": {"Bearer " + token}}
	conn, _, err := websocket.Dial(ctx, strings.Replace(n.url, "http://", "ws://", 1)+"/v1/ws", opts)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", n.url, err)
	}
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return &wsClient{t: t, conn: conn}, nil
}

// send writes one frame, within 10 s.
func (c *wsClient) send(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.conn.Write(ctx, websocket.MessageText, b)
}

// next returns the next frame, waiting at most 20 s for it.
func (c *wsClient) next(ctx context.Context) (frame, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return c.readFrame(ctx)
}

// readFrame reads and decodes one frame.
func (c *wsClient) readFrame(ctx context.Context) (frame, error) {
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		return frame{}, fmt.Errorf("server frame %s: %w", b, err)
	}
	return f, nil
}

// write sends one frame.
func (c *wsClient) write(v any) {
	c.t.Helper()
	if err := c.send(context.Background(), v); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wsClient) writeRaw(b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame, failing the test after 30 s.
func (c *wsClient) read() frame {
	c.t.Helper()
	f, err := c.tryRead(30 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// tryRead returns the next frame or the error that ended the wait.
func (c *wsClient) tryRead(timeout time.Duration) (frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.readFrame(ctx)
}

// readUntil reads frames until one of type typ arrives and returns it with
// the frames before it.
func (c *wsClient) readUntil(typ string) (frame, []frame) {
	c.t.Helper()
	var before []frame
	for {
		f := c.read()
		if f.Type == typ {
			return f, before
		}
		before = append(before, f)
	}
}

// streamResult is what a follower received of one stream.
type streamResult struct {
	indexes  []int64
	text     strings.Builder
	parts    chatstream.PartsBuilder // of the chunks (and snapshot)
	snapshot bool
	done     frame
	// others are the frames of other streams, or of no stream (message
	// events, acknowledgements), read meanwhile: frames of different
	// channels may arrive in any order.
	others []frame
}

// follow reads the frames of stream id until its done frame, checking that
// chunk indexes start at from and have no hole and no duplicate.
func (c *wsClient) follow(id string, from int64) *streamResult {
	c.t.Helper()
	r := &streamResult{}
	next := from
	for {
		f := c.read()
		if f.StreamID != id {
			r.others = append(r.others, f)
			continue
		}
		switch f.Type {
		case "chunk":
			if f.Index != next {
				c.t.Fatalf("stream %s: got index %d, want %d", id, f.Index, next)
			}
			next++
			r.indexes = append(r.indexes, f.Index)
			r.text.WriteString(f.Content)
			r.parts.Add(f.part())
		case "snapshot":
			r.snapshot = true
			r.text.Reset()
			r.text.WriteString(f.Content)
			r.parts = chatstream.PartsBuilder{}
			for _, p := range f.Parts {
				r.parts.Add(p)
			}
			next = f.LastIndex + 1
		case "done":
			if f.LastIndex != next-1 {
				c.t.Fatalf("stream %s: done last_index %d after index %d", id, f.LastIndex, next-1)
			}
			r.done = f
			return r
		case "error":
			c.t.Fatalf("stream %s: error frame %s: %s", id, f.Code, f.Message)
		}
	}
}
