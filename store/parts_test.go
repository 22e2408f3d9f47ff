package store_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/store"
)

// An answer's parts, model, usage and finish reason are stored and read
// back as they were written; text alone is stored once (parts NULL).
func TestDB_FinishWithParts(t *testing.T) {
	ctx := context.Background()
	url := testenv.NewDatabase(t)
	db, err := store.Open(ctx, url, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	sql, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer sql.Close(ctx)
	conv, err := db.CreateConversation(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	parts := []chatstream.Part{
		{Type: chatstream.PartReasoning, Text: "think"},
		{Type: chatstream.PartText, Text: "Let me check. "},
		{Type: chatstream.PartToolCall, CallID: "c1", Name: "save", Arguments: `{"q":"x"}`, RequiresApproval: true},
		{Type: chatstream.PartToolApproval, CallID: "c1", Approved: true, Reason: chatstream.ApprovalByUser},
		{Type: chatstream.PartToolResult, CallID: "c1", Name: "save", Output: "saved", IsError: false},
		{Type: chatstream.PartText, Text: "Done."},
	}
	usage := &chatstream.Usage{PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15}
	_, asst, err := db.CreateExchange(ctx, "alice", conv.ID, "q")
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := db.FinishMessage(ctx, asst.ID, chatstream.Final{Content: chatstream.TextOf(parts), Parts: parts,
		Status: chatstream.StatusComplete, Usage: usage, Model: "gpt-x", FinishReason: "stop", LastIndex: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range []*chatstream.Message{m, mustFind(t, db, asst.ID)} {
		if !reflect.DeepEqual(got.Parts, parts) || got.Model != "gpt-x" || got.FinishReason != "stop" || *got.Usage != *usage ||
			got.Content != "Let me check. Done." {
			t.Fatalf("message = %+v (usage %+v)", got, got.Usage)
		}
	}
	// The parts column holds the contract's JSON, which SQL can query.
	var calls int
	if err := sql.QueryRow(ctx, `SELECT count(*) FROM messages, jsonb_array_elements(parts) p
		WHERE id = $1 AND p->>'type' = 'tool_call' AND p->>'name' = 'save'`, asst.ID).Scan(&calls); err != nil || calls != 1 {
		t.Fatalf("tool calls found by SQL = %d, %v", calls, err)
	}

	t.Run("text alone is not stored twice", func(t *testing.T) {
		_, a, err := db.CreateExchange(ctx, "alice", conv.ID, "again")
		if err != nil {
			t.Fatal(err)
		}
		text := []chatstream.Part{{Type: chatstream.PartText, Text: "plain"}}
		if _, _, err := db.FinishMessage(ctx, a.ID, chatstream.Final{Content: "plain", Parts: text, Status: chatstream.StatusComplete}); err != nil {
			t.Fatal(err)
		}
		var null bool
		if err := sql.QueryRow(ctx, `SELECT parts IS NULL FROM messages WHERE id = $1`, a.ID).Scan(&null); err != nil || !null {
			t.Fatalf("parts IS NULL = %v, %v", null, err)
		}
		if got := mustFind(t, db, a.ID); !reflect.DeepEqual(got.PartsOrText(), text) {
			t.Fatalf("parts = %+v", got.PartsOrText())
		}
	})
	t.Run("parts that break the schema are refused", func(t *testing.T) {
		_, a, err := db.CreateExchange(ctx, "alice", conv.ID, "bad")
		if err != nil {
			t.Fatal(err)
		}
		bad := []chatstream.Part{{Type: chatstream.PartText, Text: "x"}, {Type: chatstream.PartToolCall, Name: "no id"}}
		_, _, err = db.FinishMessage(ctx, a.ID, chatstream.Final{Content: "x", Parts: bad, Status: chatstream.StatusComplete})
		wantCode(t, err, chatstream.EINVALID)
		if got := mustFind(t, db, a.ID); got.Status != chatstream.StatusStreaming {
			t.Fatalf("a refused write changed the message: %+v", got)
		}
	})
}

// migratedTo opens a store on a fresh database migrated up to version
// only, and a plain connection to it to fill it the way that version did.
func migratedTo(t *testing.T, version int64) (*store.DB, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	url := testenv.NewDatabase(t)
	db, err := store.Open(ctx, url, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.MigrateTo(ctx, version); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return db, conn
}

func mustFind(t *testing.T, db *store.DB, id string) *chatstream.Message {
	t.Helper()
	m, err := db.FindMessage(context.Background(), "alice", id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The parts migration leaves the rows of a v1 database valid: each message
// reads as its content in one text part, with its usage and no model.
func TestDB_PartsMigrationOnV1Rows(t *testing.T) {
	ctx := context.Background()
	db, conn := migratedTo(t, 2)
	// Rows as the v1 release wrote them.
	const conv, user, asst, empty = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002",
		"00000000-0000-4000-8000-000000000003", "00000000-0000-4000-8000-000000000004"
	for _, q := range []string{
		`INSERT INTO conversations (id, user_id, title) VALUES ('` + conv + `', 'alice', 'old')`,
		`INSERT INTO messages (id, conversation_id, role, content, status) VALUES ('` + user + `', '` + conv + `', 'user', 'hi', 'complete')`,
		`INSERT INTO messages (id, conversation_id, role, content, status, prompt_tokens, completion_tokens, last_index, finish_reason)
		 VALUES ('` + asst + `', '` + conv + `', 'assistant', 'hello there', 'complete', 3, 2, 1, 'stop')`,
		`INSERT INTO messages (id, conversation_id, role, content, status, error_code, error_message)
		 VALUES ('` + empty + `', '` + conv + `', 'assistant', '', 'failed', 'llm_error', 'boom')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := db.SchemaVersion(ctx); v < 3 {
		t.Fatalf("schema version %d", v)
	}
	msgs := branch(t, db, conv)
	if len(msgs) != 3 {
		t.Fatalf("messages = %v", msgs)
	}
	want := []string{
		`"parts":[{"type":"text","text":"hi"}]`,
		`"parts":[{"type":"text","text":"hello there"}],"created_at":`,
		`"parts":[],"created_at":`,
	}
	for i, m := range msgs {
		b, _ := json.Marshal(m)
		if !strings.Contains(string(b), want[i]) {
			t.Fatalf("message %d = %s, want %s", i, b, want[i])
		}
	}
	if a := msgs[1]; a.Usage == nil || *a.Usage != (chatstream.Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}) ||
		a.Model != "" || a.FinishReason != "stop" {
		t.Fatalf("v1 answer = %+v", a)
	}
	b, _ := json.Marshal(msgs[1])
	if !strings.Contains(string(b), `"model":null,"finish_reason":"stop","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}`) {
		t.Fatalf("v1 answer as JSON = %s", b)
	}
	// The column takes arrays only.
	if _, err := conn.Exec(ctx, `UPDATE messages SET parts = '{"not": "an array"}' WHERE id = '`+asst+`'`); err == nil {
		t.Fatal("the parts column took an object")
	}
}
