package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/store"
	"github.com/chatstream/chatstream/streaming"
)

var secret = []byte("test-secret-test-secret-test-secret!")

type pingFunc func(context.Context) error

func (f pingFunc) Ping(ctx context.Context) error { return f(ctx) }

type testServer struct {
	*httptest.Server
	db *store.DB
}

type option func(*server.Config, *server.Store, map[string]server.Pinger)

// noGenerations stands in where a test sends no message.
type noGenerations struct{}

func (noGenerations) Start(context.Context, chatstream.Turn) (*chatstream.Started, error) {
	return nil, errors.New("no generations in this test")
}
func (noGenerations) Cancel(context.Context, string, string) error {
	return errors.New("no generations in this test")
}
func (noGenerations) Approve(context.Context, string, string, string, bool) error {
	return errors.New("no generations in this test")
}
func (noGenerations) Authorize(context.Context, string, string) error {
	return errors.New("no generations in this test")
}

func newServer(t *testing.T, opts ...option) *testServer {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, testenv.NewDatabase(t), store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	rc, err := streaming.NewClient(testenv.RedisURL(t), streaming.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.Close)
	cfg := server.Config{AuthSecret: secret, AuthDev: true}
	var st server.Store = db
	checks := map[string]server.Pinger{"postgres": db, "redis": streaming.Pinger{Client: rc}}
	for _, o := range opts {
		o(&cfg, &st, checks)
	}
	srv, err := server.New(cfg, server.Deps{Store: st, Generations: noGenerations{}, Checks: checks})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &testServer{Server: ts, db: db}
}

func token(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func userToken(t *testing.T, user string) string {
	return token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Hour).Unix()})
}

type response struct {
	status int
	body   map[string]any
	raw    string
	header http.Header
}

func (ts *testServer) do(t *testing.T, method, path, tok, body string) response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{status: res.StatusCode, raw: string(raw), header: res.Header}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

// wantError checks the contract's error shape.
func (r response) wantError(t *testing.T, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.raw)
	}
	e, ok := r.body["error"].(map[string]any)
	if !ok {
		t.Fatalf("body %s has no error object", r.raw)
	}
	if e["code"] != code {
		t.Fatalf("error code = %v, want %s", e["code"], code)
	}
	if msg, _ := e["message"].(string); msg == "" {
		t.Fatalf("error has no message: %s", r.raw)
	}
}

func TestServer_Health(t *testing.T) {
	ts := newServer(t)
	if r := ts.do(t, "GET", "/healthz", "", ""); r.status != 200 {
		t.Fatalf("healthz = %d", r.status)
	}
	if r := ts.do(t, "GET", "/readyz", "", ""); r.status != 200 {
		t.Fatalf("readyz = %d %s", r.status, r.raw)
	}
	r := ts.do(t, "GET", "/metrics", "", "")
	if r.status != 200 || !strings.Contains(r.raw, `chatstream_http_requests_total{code="200",method="GET",route="/readyz"} 1`) {
		t.Fatalf("metrics lack the request counter: %d\n%s", r.status, r.raw)
	}
	if !strings.Contains(r.raw, "go_goroutines") {
		t.Fatal("metrics lack the Go collector")
	}
}

// A worker-only node (OpsOnly) answers health, readiness and metrics, and
// nothing else: no API, no socket, no page.
func TestServer_OpsOnly(t *testing.T) {
	ts := newServer(t, func(c *server.Config, _ *server.Store, _ map[string]server.Pinger) { c.OpsOnly = true })
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := ts.do(t, "GET", path, "", ""); r.status != 200 {
			t.Errorf("%s = %d", path, r.status)
		}
	}
	tok := userToken(t, "alice")
	for _, req := range [][2]string{{"GET", "/v1/conversations"}, {"POST", "/v1/conversations"}, {"GET", "/v1/ws"},
		{"POST", "/v1/auth/dev-token"}, {"GET", "/v1/openapi.json"}, {"GET", "/"}, {"GET", "/assets/app.js"}} {
		ts.do(t, req[0], req[1], tok, "{}").wantError(t, 404, "not_found")
	}
}

func TestServer_ReadyFailing(t *testing.T) {
	ts := newServer(t, func(_ *server.Config, _ *server.Store, checks map[string]server.Pinger) {
		checks["redis"] = pingFunc(func(context.Context) error { return errors.New("connection refused") })
	})
	r := ts.do(t, "GET", "/readyz", "", "")
	r.wantError(t, 503, "unavailable")
	if strings.Contains(r.raw, "connection refused") {
		t.Fatalf("readyz leaks the internal error: %s", r.raw)
	}
}

func TestServer_DevToken(t *testing.T) {
	ts := newServer(t)
	r := ts.do(t, "POST", "/v1/auth/dev-token", "", `{"user":"alice"}`)
	if r.status != 200 {
		t.Fatalf("dev-token = %d %s", r.status, r.raw)
	}
	tok, _ := r.body["token"].(string)
	if r := ts.do(t, "GET", "/v1/conversations", tok, ""); r.status != 200 {
		t.Fatalf("the dev token is refused: %d %s", r.status, r.raw)
	}
	ts.do(t, "POST", "/v1/auth/dev-token", "", `{"user":""}`).wantError(t, 400, "invalid_request")
	ts.do(t, "POST", "/v1/auth/dev-token", "", `{"user":`).wantError(t, 400, "invalid_request")
	ts.do(t, "POST", "/v1/auth/dev-token", "", `{"user":"`+strings.Repeat("a", 65)+`"}`).wantError(t, 400, "invalid_request")

	off := newServer(t, func(c *server.Config, _ *server.Store, _ map[string]server.Pinger) { c.AuthDev = false })
	off.do(t, "POST", "/v1/auth/dev-token", "", `{"user":"alice"}`).wantError(t, 404, "not_found")
}

func TestServer_Auth(t *testing.T) {
	ts := newServer(t)
	future := time.Now().Add(time.Hour).Unix()
	cases := []struct {
		name   string
		tok    string
		reason string // what the message says
	}{
		{"Missing", "", "required"},
		{"Malformed", "not.a.jwt", "malformed"},
		{"Expired", token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}), "expired"},
		{"WrongKey", token(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-12"), jwt.MapClaims{"sub": "alice", "exp": future}), "signature"},
		{"WrongAlg", token(t, jwt.SigningMethodHS512, secret, jwt.MapClaims{"sub": "alice", "exp": future}), "signature"},
		{"AlgNone", token(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": future}), "signature"},
		{"NoSubject", token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": future}), "no subject"},
		{"NoExpiry", token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice"}), "no exp"},
		{"NotYetValid", token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": future, "nbf": future - 600}), "not valid yet"},
		{"SubjectWithNUL", token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "al\x00ice", "exp": future}), "control characters"},
		{"SubjectTooLong", token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": strings.Repeat("a", 257), "exp": future}), "bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.do(t, "GET", "/v1/conversations", tc.tok, "")
			r.wantError(t, 401, "unauthorized")
			if msg := r.body["error"].(map[string]any)["message"].(string); !strings.Contains(msg, tc.reason) {
				t.Fatalf("message %q does not say %q", msg, tc.reason)
			}
		})
	}
	t.Run("QueryTokenOnlyOnTheUpgrade", func(t *testing.T) {
		// Tokens in URLs end up in proxies' logs and browser histories:
		// only the WebSocket upgrade, which browsers cannot give headers,
		// takes one there.
		r := ts.do(t, "GET", "/v1/conversations?access_token="+userToken(t, "alice"), "", "")
		r.wantError(t, 401, "unauthorized")
		if !strings.Contains(r.raw, "Authorization header") {
			t.Fatalf("the refusal does not say where the token goes: %s", r.raw)
		}
	})
}

func TestServer_Conversations(t *testing.T) {
	ts := newServer(t)
	alice, bob := userToken(t, "alice"), userToken(t, "bob")

	r := ts.do(t, "POST", "/v1/conversations", alice, `{"title":"Trip"}`)
	if r.status != 201 || r.body["title"] != "Trip" || r.body["id"] == "" {
		t.Fatalf("create = %d %s", r.status, r.raw)
	}
	first := r.body["id"].(string)
	if _, err := time.Parse(time.RFC3339, r.body["created_at"].(string)); err != nil {
		t.Fatalf("created_at is not RFC 3339: %v", err)
	}
	r = ts.do(t, "POST", "/v1/conversations", alice, "")
	if r.status != 201 {
		t.Fatalf("create without body = %d %s", r.status, r.raw)
	}
	second := r.body["id"].(string)

	t.Run("List", func(t *testing.T) {
		r := ts.do(t, "GET", "/v1/conversations", alice, "")
		list, _ := r.body["conversations"].([]any)
		if r.status != 200 || len(list) != 2 || list[0].(map[string]any)["id"] != second || list[1].(map[string]any)["id"] != first {
			t.Fatalf("list = %d %s", r.status, r.raw)
		}
		r = ts.do(t, "GET", "/v1/conversations", bob, "")
		if r.raw != `{"conversations":[],"next_cursor":null}` {
			t.Fatalf("bob's list = %s", r.raw)
		}
	})
	t.Run("Get", func(t *testing.T) {
		conv, err := ts.db.FindConversation(context.Background(), "alice", first)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := ts.db.CreateExchange(context.Background(), "alice", conv.ID, "hi"); err != nil {
			t.Fatal(err)
		}
		r := ts.do(t, "GET", "/v1/conversations/"+first, alice, "")
		msgs, _ := r.body["messages"].([]any)
		if r.status != 200 || r.body["title"] != "Trip" || len(msgs) != 2 {
			t.Fatalf("get = %d %s", r.status, r.raw)
		}
		m := msgs[0].(map[string]any)
		for _, k := range []string{"id", "conversation_id", "role", "content", "status", "created_at"} {
			if _, ok := m[k]; !ok {
				t.Errorf("message lacks %q: %v", k, m)
			}
		}
		if m["role"] != "user" || m["content"] != "hi" || msgs[1].(map[string]any)["status"] != "streaming" {
			t.Fatalf("messages = %v", msgs)
		}
	})
	t.Run("GetOthersIsNotFound", func(t *testing.T) {
		ts.do(t, "GET", "/v1/conversations/"+first, bob, "").wantError(t, 404, "not_found")
		ts.do(t, "GET", "/v1/conversations/00000000-0000-0000-0000-000000000000", alice, "").wantError(t, 404, "not_found")
		ts.do(t, "GET", "/v1/conversations/nope", alice, "").wantError(t, 404, "not_found")
	})
	t.Run("BadInput", func(t *testing.T) {
		ts.do(t, "POST", "/v1/conversations", alice, `{"title":`).wantError(t, 400, "invalid_request")
		ts.do(t, "POST", "/v1/conversations", alice, `{"title":5}`).wantError(t, 400, "invalid_request")
		ts.do(t, "POST", "/v1/conversations", alice, `{"title":"a"} {}`).wantError(t, 400, "invalid_request")
		ts.do(t, "POST", "/v1/conversations", alice, `{"title":"`+strings.Repeat("x", 201)+`"}`).wantError(t, 400, "invalid_request")
		ts.do(t, "POST", "/v1/conversations", alice, `{"title":"`+strings.Repeat("x", 20000)+`"}`).wantError(t, 413, "too_large")
		ts.do(t, "POST", "/v1/conversations", alice, `{"title":"a\u0000b"}`).wantError(t, 400, "invalid_request")
		if r := ts.do(t, "POST", "/v1/conversations", alice, `{"title":5}`); !strings.Contains(r.raw, "string") || strings.Contains(r.raw, "struct") {
			t.Fatalf("a title of the wrong type is not explained in JSON's words: %s", r.raw)
		}
		r := ts.do(t, "GET", "/v1/conversations", alice, "")
		if n := len(r.body["conversations"].([]any)); n != 2 {
			t.Fatalf("bad input changed the list: %d conversations", n)
		}
	})
}

func TestServer_ErrorShape(t *testing.T) {
	ts := newServer(t, func(_ *server.Config, st *server.Store, _ map[string]server.Pinger) {
		*st = panicky{*st}
	})
	ts.do(t, "GET", "/nope", "", "").wantError(t, 404, "not_found")
	ts.do(t, "DELETE", "/v1/conversations", userToken(t, "a"), "").wantError(t, 405, "method_not_allowed")
	r := ts.do(t, "GET", "/v1/conversations", userToken(t, "a"), "")
	r.wantError(t, 500, "internal")
	if strings.Contains(r.raw, "boom") {
		t.Fatalf("the panic value leaks: %s", r.raw)
	}
	if r.header.Get("X-Request-ID") == "" {
		t.Fatal("no request id header")
	}
	// The server survives the panic.
	if r := ts.do(t, "GET", "/healthz", "", ""); r.status != 200 {
		t.Fatalf("healthz after panic = %d", r.status)
	}
}

type panicky struct{ server.Store }

func (panicky) ListConversations(context.Context, string, int, string) (*chatstream.ConversationPage, error) {
	panic("boom")
}

func TestServer_LogsNoToken(t *testing.T) {
	var buf testenv.Buffer
	ts := newServer(t, func(c *server.Config, _ *server.Store, _ map[string]server.Pinger) {
		c.Logger = newJSONLogger(&buf)
	})
	tok := userToken(t, "alice")
	ts.do(t, "GET", "/v1/conversations?access_token="+tok, "", "")
	ts.do(t, "GET", "/v1/conversations", tok, "")
	ts.do(t, "GET", "/v1/conversations", tok+"x", "")
	ts.Close() // waits for the handlers, so every log line is written
	if buf.Len() == 0 {
		t.Fatal("nothing logged")
	}
	if strings.Contains(buf.String(), tok[:20]) {
		t.Fatalf("a token reached the log:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), `"request_id"`) {
		t.Fatalf("log lines lack request_id:\n%s", buf.String())
	}
}
