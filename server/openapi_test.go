package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gin-gonic/gin"
)

// The OpenAPI document against the routes: every route the server
// registers is documented with its method, every documented operation is
// registered, and each takes the token where the document says — so the
// two cannot drift apart.

// openAPIChats maps no AI SDK chat onto a conversation (the AI SDK routes are
// registered only with a Chats).
type openAPIChats struct{}

func (openAPIChats) Chat(context.Context, string, string) (string, error) { return "", nil }
func (openAPIChats) BindChat(context.Context, string, string, string) (string, bool, error) {
	return fuzzConv, true, nil
}

// openAPIServer is a server with every route registered: dev tokens,
// the WebSocket and SSE (Streams, Watcher), the AI SDK (Chats) and the page.
func openAPIServer(t *testing.T) *Server {
	t.Helper()
	page := fstest.MapFS{"index.html": {Data: []byte("<!doctype html>")}}
	s, err := New(Config{AuthSecret: fuzzSecret, AuthDev: true}, Deps{Store: fuzzStore{}, Generations: fuzzGens{},
		Conversations: fuzzConvs{}, Streams: fuzzStreams{}, Watcher: fuzzWatcher{}, Chats: openAPIChats{}, Page: page})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// openAPIPageRoutes are the web page's routes, which are not API.
var openAPIPageRoutes = []string{"GET /", "HEAD /", "GET /assets/{file}", "GET /favicon.ico"}

// openAPIMethods are the keys of a path item that are operations.
var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// ginPathParam is a gin path parameter, :name or *name.
var ginPathParam = regexp.MustCompile(`[:*]([A-Za-z0-9_]+)`)

// openAPIPathOf is a gin path in OpenAPI form: /a/:id/*file is /a/{id}/{file}.
func openAPIPathOf(p string) string { return ginPathParam.ReplaceAllString(p, "{$1}") }

// openAPIResolve returns what a local JSON pointer ("#/a/b") names in doc; nil
// for nothing.
func openAPIResolve(doc any, ref string) any {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	v := doc
	for tok := range strings.SplitSeq(p, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		if v, ok = m[tok]; !ok {
			return nil
		}
	}
	return v
}

// openAPIRefs calls f with every $ref in v.
func openAPIRefs(v any, f func(string)) {
	switch v := v.(type) {
	case map[string]any:
		if r, ok := v["$ref"].(string); ok {
			f(r)
		}
		for _, e := range v {
			openAPIRefs(e, f)
		}
	case []any:
		for _, e := range v {
			openAPIRefs(e, f)
		}
	}
}

// openAPIOperation is one documented method of a path.
type openAPIOperation struct {
	method, path string
	op           map[string]any
	item         map[string]any // the path item: its parameters apply too
}

func (o openAPIOperation) String() string { return strings.ToUpper(o.method) + " " + o.path }

// security names the schemes the operation takes (the document's when it
// names none of its own); none: no token needed.
func (o openAPIOperation) security(doc map[string]any) []string {
	reqs, ok := o.op["security"].([]any)
	if !ok {
		reqs, _ = doc["security"].([]any)
	}
	var names []string
	for _, r := range reqs {
		for name := range r.(map[string]any) {
			names = append(names, name)
		}
	}
	return names
}

// parameters returns the operation's parameters, references resolved.
func (o openAPIOperation) parameters(doc map[string]any) []map[string]any {
	var out []map[string]any
	for _, list := range []any{o.item["parameters"], o.op["parameters"]} {
		ps, _ := list.([]any)
		for _, p := range ps {
			m, _ := p.(map[string]any)
			if r, ok := m["$ref"].(string); ok {
				m, _ = openAPIResolve(doc, r).(map[string]any)
			}
			out = append(out, m)
		}
	}
	return out
}

func TestOpenAPI_MatchesRoutes(t *testing.T) {
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, openAPI) {
		t.Fatal("the embedded document is not openapi.json")
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	if doc["openapi"] != "3.1.0" {
		t.Fatalf("openapi = %v, want 3.1.0", doc["openapi"])
	}
	openAPIRefs(doc, func(r string) {
		if !strings.HasPrefix(r, "#/components/") || openAPIResolve(doc, r) == nil {
			t.Errorf("$ref %q names no component", r)
		}
	})

	var ops []openAPIOperation
	documented := map[string]bool{}
	paths, _ := doc["paths"].(map[string]any)
	for path, v := range paths {
		item, _ := v.(map[string]any)
		for _, m := range openAPIMethods {
			if op, ok := item[m].(map[string]any); ok {
				o := openAPIOperation{method: m, path: path, op: op, item: item}
				ops = append(ops, o)
				documented[o.String()] = true
			}
		}
	}
	if len(ops) == 0 {
		t.Fatal("openapi.json documents no openAPIOperation")
	}

	s := openAPIServer(t)
	registered := map[string]bool{}
	for _, r := range s.engine.Routes() {
		route := r.Method + " " + openAPIPathOf(r.Path)
		if slices.Contains(openAPIPageRoutes, route) {
			continue
		}
		registered[route] = true
		if !documented[route] {
			t.Errorf("%s is registered but not in openapi.json", route)
		}
	}
	for _, o := range ops {
		if !registered[o.String()] {
			t.Errorf("%s is in openapi.json but not registered", o)
		}
	}

	tok, err := s.issueToken("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ops {
		t.Run(strings.ReplaceAll(o.String(), "/", "_"), func(t *testing.T) {
			// Every {name} of the path is a declared path parameter.
			for _, m := range regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(o.path, -1) {
				if !slices.ContainsFunc(o.parameters(doc), func(p map[string]any) bool {
					return p["in"] == "path" && p["name"] == m[1] && p["required"] == true
				}) {
					t.Errorf("path parameter %q is not declared (in: path, required)", m[1])
				}
			}
			// The token: without one, a route that wants it answers 401 and
			// one that does not never does; ?access_token= is taken exactly
			// where the document lists accessTokenQuery.
			if !registered[o.String()] {
				return // reported above
			}
			schemes := o.security(doc)
			if got := openAPIStatus(s, o, ""); (got == http.StatusUnauthorized) != (len(schemes) > 0) {
				t.Errorf("without a token: %d; the document's security is %v", got, schemes)
			}
			if len(schemes) > 0 {
				query := slices.Contains(schemes, "accessTokenQuery")
				if got := openAPIStatus(s, o, tok); (got != http.StatusUnauthorized) != query {
					t.Errorf("with ?access_token=: %d; the document's security is %v", got, schemes)
				}
			}
		})
	}
}

// openAPIStatus is the status operation o answers without a body, its path
// parameters "x" (no such thing: no stream or socket is opened), with
// token as ?access_token= unless "".
func openAPIStatus(s *Server, o openAPIOperation, token string) int {
	target := regexp.MustCompile(`\{[^}]+\}`).ReplaceAllString(o.path, "x")
	if token != "" {
		target += "?access_token=" + token
	}
	req := httptest.NewRequest(strings.ToUpper(o.method), target, nil)
	req.Host = "127.0.0.1" // AuthDev serves the loopback names only
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec.Code
}

func TestOpenAPI_Handler(t *testing.T) {
	s := openAPIServer(t)
	rec := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(rec)
	c.Request = httptest.NewRequest(http.MethodGet, "/v1/openapi.json", nil)
	s.handleOpenAPI(c)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" || !bytes.Equal(rec.Body.Bytes(), openAPI) {
		t.Fatalf("handleOpenAPI answered %d %q, %d bytes", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
	}
}
