package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream"
)

// The fuzz targets of everything a client sends the server: socket frames,
// HTTP bodies and access tokens. Their seeds run with every `go test`;
// `make fuzz` runs each with -fuzz for a while (BENCHMARKS.md has the counts).

var fuzzSecret = []byte("fuzz-secret-fuzz-secret-fuzz-secret!")

// fuzzStore and fuzzGens answer every call as a store and generations that
// hold one conversation of "alice" would, without Postgres or Redis.
type fuzzStore struct{}

const fuzzConv = "11111111-1111-4111-8111-111111111111"

func (fuzzStore) Ping(context.Context) error { return nil }
func (fuzzStore) CreateConversation(_ context.Context, user, title string) (*chatstream.Conversation, error) {
	return &chatstream.Conversation{ID: fuzzConv, UserID: user, Title: title, CreatedAt: time.Unix(0, 0)}, nil
}
func (fuzzStore) ListConversations(context.Context, string, int, string) (*chatstream.ConversationPage, error) {
	return &chatstream.ConversationPage{Conversations: []*chatstream.Conversation{}}, nil
}
func (fuzzStore) FindConversation(_ context.Context, user, id string) (*chatstream.Conversation, error) {
	if user != "alice" || id != fuzzConv {
		return nil, chatstream.Errorf(chatstream.ENOTFOUND, "Conversation not found.")
	}
	return &chatstream.Conversation{ID: id, UserID: user}, nil
}
func (f fuzzStore) BranchPage(ctx context.Context, user, conv, _ string, _ int) (*chatstream.Conversation, *chatstream.MessagePage, error) {
	c, err := f.FindConversation(ctx, user, conv)
	if err != nil {
		return nil, nil, err
	}
	return c, &chatstream.MessagePage{Messages: []*chatstream.Message{}}, nil
}

type fuzzConvs struct{}

func (fuzzConvs) Update(ctx context.Context, user, id string, ch chatstream.ConversationChange) (*chatstream.Conversation, error) {
	return fuzzStore{}.FindConversation(ctx, user, id)
}
func (fuzzConvs) Delete(ctx context.Context, user, id string) error {
	_, err := fuzzStore{}.FindConversation(ctx, user, id)
	return err
}

type fuzzGens struct{}

func (fuzzGens) Start(_ context.Context, t chatstream.Turn) (*chatstream.Started, error) {
	if t.UserID != "alice" || (t.Kind == chatstream.TurnSend && t.ConversationID != fuzzConv) ||
		(t.Kind != chatstream.TurnSend && t.MessageID != "33333333-3333-4333-8333-333333333333") {
		return nil, chatstream.Errorf(chatstream.ENOTFOUND, "Not found.")
	}
	st := &chatstream.Started{Assistant: &chatstream.Message{ID: "22222222-2222-4222-8222-222222222222", Role: chatstream.RoleAssistant}}
	if t.Kind != chatstream.TurnRegenerate {
		st.User = &chatstream.Message{ID: "u", Role: chatstream.RoleUser, Content: t.Content}
	}
	return st, nil
}
func (fuzzGens) Cancel(context.Context, string, string) error                { return nil }
func (fuzzGens) Approve(context.Context, string, string, string, bool) error { return nil }
func (fuzzGens) Authorize(context.Context, string, string) error {
	return chatstream.Errorf(chatstream.ENOTFOUND, "Stream not found.")
}

type fuzzFollow struct{}

func (fuzzFollow) Ended() bool { return false }
func (fuzzFollow) Close()      {}

type fuzzStreams struct{}

func (fuzzStreams) Follow(context.Context, string, int64, chatstream.Sink) (Follow, error) {
	return fuzzFollow{}, nil
}

type fuzzWatcher struct{}

func (fuzzWatcher) Watch(context.Context, string, chatstream.Sink) (func(), error) {
	return func() {}, nil
}

var fuzzServer = sync.OnceValue(func() *Server {
	s, err := New(Config{AuthSecret: fuzzSecret, AuthDev: true, MaxContentBytes: 1000},
		Deps{Store: fuzzStore{}, Generations: fuzzGens{}, Conversations: fuzzConvs{}, Streams: fuzzStreams{}, Watcher: fuzzWatcher{}})
	if err != nil {
		panic(err)
	}
	return s
})

// fuzzSession is a socket of alice without a connection: its frames stay
// in its queue (a writer counts as running, so none starts).
func fuzzSession(s *Server) *session {
	ss := &session{srv: s, user: "alice", ctx: context.Background(), cancel: func(error) {},
		follows: map[string]Follow{}, watches: map[string]func(){}, logger: s.logger}
	ss.subscribes = bucket{rate: 10, burst: 128, tokens: 128}
	ss.out = outQueue{max: 1 << 20, writing: true, writers: &ss.writers, wake: make(chan struct{}, 1)}
	return ss
}

// FuzzSocketFrame feeds one client frame to a socket: whatever it holds, the
// socket answers with JSON frames (an error frame with a code and a
// message when it refuses), never panics, and echoes a request_id only as
// the valid JSON value it was sent as.
func FuzzSocketFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"subscribe","stream_id":"22222222-2222-4222-8222-222222222222","last_index":3,"request_id":"r"}`,
		`{"type":"subscribe","stream_id":"x","last_index":9223372036854775807}`,
		`{"type":"subscribe","stream_id":"x","last_index":"7","request_id":{"a":[1]}}`,
		`{"type":"unsubscribe","stream_id":"x"}`,
		`{"type":"watch","conversation_id":"` + fuzzConv + `","request_id":7}`,
		`{"type":"unwatch","conversation_id":"` + fuzzConv + `"}`,
		`{"type":"send","conversation_id":"` + fuzzConv + `","content":"hi \u0000"}`,
		`{"type":"send","conversation_id":"` + fuzzConv + `","content":"` + strings.Repeat("x", 1001) + `"}`,
		`{"type":"cancel","stream_id":"22222222-2222-4222-8222-222222222222"}`,
		`{"type":"approve","stream_id":"22222222-2222-4222-8222-222222222222","call_id":"call_1","approved":true,"request_id":"a"}`,
		`{"type":"approve","stream_id":"22222222-2222-4222-8222-222222222222","call_id":"` + strings.Repeat("c", 300) + `","approved":false}`,
		`{"type":"approve","stream_id":"x","call_id":"c\u0000","approved":"yes"}`,
		`{"type":"dance"}`, `{}`, `[]`, `null`, `not json`, `{"type":1}`, `{"request_id":` + strings.Repeat("[", 200),
	} {
		f.Add([]byte(seed))
	}
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, data []byte) {
		ss := fuzzSession(s)
		ss.handle(data)
		frames, _ := ss.out.take(nil)
		if len(frames) == 0 {
			t.Fatalf("no answer to %q", data)
		}
		for _, fr := range frames {
			var out struct {
				Type      string          `json:"type"`
				Code      string          `json:"code"`
				Message   string          `json:"message"`
				RequestID json.RawMessage `json:"request_id"`
			}
			if err := json.Unmarshal(fr, &out); err != nil || out.Type == "" {
				t.Fatalf("answer %q to %q is not a frame: %v", fr, data, err)
			}
			if out.Type == "error" && (out.Code == "" || out.Message == "") {
				t.Fatalf("error frame %s lacks a code or a message", fr)
			}
			if out.Code == chatstream.EINTERNAL {
				t.Fatalf("frame %q got an internal error: %s", data, fr)
			}
			if len(out.RequestID) > 128 {
				t.Fatalf("echoed a request_id of %d bytes", len(out.RequestID))
			}
		}
	})
}

// FuzzHTTPBody posts a body to every route that reads one: the answer is
// the contract's JSON (an error object for a refusal), never a 500.
func FuzzHTTPBody(f *testing.F) {
	for _, seed := range []string{
		`{"title":"Trip"}`, `{"title":5}`, `{"title":"a\u0000b"}`, `{"content":"hello"}`, `{"content":null}`,
		`{"content":"` + strings.Repeat("é", 600) + `"}`, `{"user":"alice"}`, `{"user":""}`, `{"user":"\u0007"}`,
		`{"a":1} {}`, ``, `{`, `[1,2]`, `"str"`, `{"title":"` + strings.Repeat(`\u00e9`, 300) + `"}`,
		`{"call_id":"call_1","approved":true}`, `{"call_id":"","approved":false}`, `{"call_id":7}`,
	} {
		for route := range uint8(5) {
			f.Add(route, []byte(seed))
		}
	}
	s := fuzzServer()
	tok, err := s.issueToken("alice", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	routes := []string{"/v1/conversations", "/v1/conversations/" + fuzzConv + "/messages", "/v1/auth/dev-token",
		"/v1/streams/22222222-2222-4222-8222-222222222222/cancel", "/v1/streams/22222222-2222-4222-8222-222222222222/approvals"}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		req := httptest.NewRequest("POST", routes[int(route)%len(routes)], bytes.NewReader(body))
		req.Host = "127.0.0.1"
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q: %d %s", req.URL.Path, body, rec.Code, rec.Body)
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %q: answer %q is not JSON", req.URL.Path, body, rec.Body)
		}
		if rec.Code >= 400 {
			e, _ := out["error"].(map[string]any)
			if e == nil || e["code"] == "" || e["message"] == "" {
				t.Fatalf("%s %q: %d without the error shape: %s", req.URL.Path, body, rec.Code, rec.Body)
			}
		}
	})
}

// FuzzAccessToken checks tokens: a token is taken only if it is an HS256
// JWT signed with the secret, not expired, with a sub a user id can be; the
// reason of a refusal is short and never the token.
func FuzzAccessToken(f *testing.F) {
	s := fuzzServer()
	sign := func(m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			f.Fatal(err)
		}
		return tok
	}
	future := time.Now().Add(time.Hour).Unix()
	for _, seed := range []string{
		sign(jwt.SigningMethodHS256, fuzzSecret, jwt.MapClaims{"sub": "alice", "exp": future}),
		sign(jwt.SigningMethodHS256, fuzzSecret, jwt.MapClaims{"sub": "a\x00b", "exp": future}),
		sign(jwt.SigningMethodHS256, fuzzSecret, jwt.MapClaims{"sub": "alice"}),
		sign(jwt.SigningMethodHS256, fuzzSecret, jwt.MapClaims{"sub": 7, "exp": "soon"}),
		sign(jwt.SigningMethodHS512, fuzzSecret, jwt.MapClaims{"sub": "alice", "exp": future}),
		sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": future}),
		"", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", strings.Repeat("A", 5000),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		user, exp, err := s.verifyToken(raw)
		if err != nil {
			if len(err.Error()) > 100 || (len(raw) > 8 && strings.Contains(err.Error(), raw)) {
				t.Fatalf("reason %q", err)
			}
			return
		}
		if user == "" || !validSubject(user) || exp.IsZero() || exp.Before(time.Now().Add(-time.Minute)) {
			t.Fatalf("took %q: user %q, exp %v", raw, user, exp)
		}
	})
}

// TestFuzzServer_RoutesAnswer keeps the fuzz harness honest: a good frame
// and a good body get through it.
func TestFuzzServer_RoutesAnswer(t *testing.T) {
	ss := fuzzSession(fuzzServer())
	ss.handle([]byte(`{"type":"watch","conversation_id":"` + fuzzConv + `"}`))
	if fr, _ := ss.out.take(nil); len(fr) != 1 || !strings.Contains(string(fr[0]), `"watching"`) {
		t.Fatalf("watch answered %q", fr)
	}
	tok, _ := fuzzServer().issueToken("alice", time.Hour)
	req := httptest.NewRequest("POST", "/v1/conversations", strings.NewReader(`{"title":"t"}`))
	req.Host = "127.0.0.1"
	req.Header.Set("Authorization", "Bearer "+tok)
	rec := httptest.NewRecorder()
	fuzzServer().Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		t.Fatalf("create answered %d %s", rec.Code, rec.Body)
	}
}
