// Package integration runs whole chatstream nodes (app.Main, as the binary
// runs them) against the real Redis and Postgres that `make test` starts, and
// talks to them only through their public HTTP and WebSocket interfaces.
package integration

import (
	"context"
	"testing"
	"time"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/testenv"
)

func TestNode_HTTP(t *testing.T) {
	n := demoNode(t, app.Config{})
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
	c := newDemoCluster(t, 0)
	a := c.start(t, app.Config{})
	b := c.start(t, app.Config{}, func(cfg *app.Config) { cfg.AuthDev = false })
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
