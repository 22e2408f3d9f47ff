// Package integration runs whole chatstream nodes (app.Main, as the binary
// runs them) against the real Redis and Postgres that `make test` starts, and
// talks to them only through their public HTTP and WebSocket interfaces.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/testenv"
)

// node is one running chatstream node.
type node struct {
	*app.Main
	url string
}

// startNode runs a node on a free port and shuts it down when the test ends.
func startNode(t testing.TB, cfg app.Config) *node {
	t.Helper()
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.RedisURL == "" {
		cfg.RedisURL = testenv.RedisURL(t)
	}
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = testenv.NewDatabase(t)
	}
	if cfg.KeyPrefix == "" {
		// The queue is shared by every node on a prefix: a node of another
		// test must not take this test's jobs.
		cfg.KeyPrefix = testenv.Namespace(t)
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

// call sends a JSON request and decodes a JSON answer into out (if non-nil).
func (n *node) call(t testing.TB, method, path, token string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
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
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if out != nil {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode answer: %v", method, path, err)
		}
	}
	return res.StatusCode
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

func TestNode_HTTP(t *testing.T) {
	n := startNode(t, app.Config{AuthDev: true})
	if code := n.call(t, "GET", "/readyz", "", nil, nil); code != 200 {
		t.Fatalf("readyz = %d", code)
	}
	alice := n.devToken(t, "alice")
	var conv struct{ ID, Title string }
	if code := n.call(t, "POST", "/v1/conversations", alice, map[string]string{"title": "hello"}, &conv); code != 201 {
		t.Fatalf("create = %d", code)
	}
	var got struct {
		ID       string
		Title    string
		Messages []any
	}
	if code := n.call(t, "GET", "/v1/conversations/"+conv.ID, alice, nil, &got); code != 200 || got.Title != "hello" || got.Messages == nil {
		t.Fatalf("get = %d %+v", code, got)
	}
	if code := n.call(t, "GET", "/v1/conversations/"+conv.ID, n.devToken(t, "bob"), nil, nil); code != 404 {
		t.Fatalf("bob gets alice's conversation: %d", code)
	}
}

func TestNode_SharedSecretAcrossNodes(t *testing.T) {
	// Two nodes on one database with one AUTH_SECRET accept each other's tokens.
	db := testenv.NewDatabase(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	a := startNode(t, app.Config{AuthDev: true, AuthSecret: secret, DatabaseURL: db})
	b := startNode(t, app.Config{AuthSecret: secret, DatabaseURL: db})
	tok := a.devToken(t, "alice")
	var conv struct{ ID string }
	a.call(t, "POST", "/v1/conversations", tok, map[string]string{}, &conv)
	if code := b.call(t, "GET", "/v1/conversations/"+conv.ID, tok, nil, nil); code != 200 {
		t.Fatalf("node b = %d", code)
	}
	if code := b.call(t, "POST", "/v1/auth/dev-token", "", map[string]string{"user": "x"}, nil); code != 404 {
		t.Fatalf("dev-token on a node without AUTH_DEV = %d, want 404", code)
	}
}

func TestNode_StartFailsCleanly(t *testing.T) {
	m := app.New(app.Config{HTTPAddr: "127.0.0.1:0", AuthDev: true, RedisURL: testenv.RedisURL(t),
		DatabaseURL: "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Start(ctx); err == nil {
		t.Fatal("start succeeded without Postgres")
	}
	m2 := app.New(app.Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: testenv.NewDatabase(t), RedisURL: testenv.RedisURL(t)})
	if err := m2.Start(ctx); err == nil {
		t.Fatal("start succeeded without AUTH_SECRET or AUTH_DEV")
	}
}
