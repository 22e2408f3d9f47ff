package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/store"
)

// newDB opens a migrated store on a fresh database.
func newDB(t *testing.T) *store.DB {
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
	return db
}

// branch returns the messages of conversation convID's current branch.
func branch(t *testing.T, db *store.DB, convID string) []*chatstream.Message {
	t.Helper()
	_, p, err := db.BranchPage(context.Background(), "alice", convID, "", 200)
	if err != nil {
		t.Fatal(err)
	}
	return p.Messages
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := chatstream.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
}

func TestDB_Migrate(t *testing.T) {
	ctx := context.Background()
	url := testenv.NewDatabase(t)
	t.Run("ConcurrentNodes", func(t *testing.T) {
		// Several nodes starting at once take turns on the advisory lock.
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() {
				db, err := store.Open(ctx, url, store.Config{})
				if err != nil {
					errs[i] = err
					return
				}
				defer db.Close()
				errs[i] = db.Migrate(ctx)
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("node %d: %v", i, err)
			}
		}
	})
	t.Run("Idempotent", func(t *testing.T) {
		db, err := store.Open(ctx, url, store.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		before, err := db.SchemaVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if before < 1 {
			t.Fatalf("schema version %d after migrating", before)
		}
		if err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		after, err := db.SchemaVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Fatalf("version moved from %d to %d on a second run", before, after)
		}
	})
}

func TestOpen_Unreachable(t *testing.T) {
	_, err := store.Open(context.Background(), "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", store.Config{})
	if err == nil {
		t.Fatal("Open succeeded against a closed port")
	}
}

func TestDB_Conversations(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)

	a1, err := db.CreateConversation(ctx, "alice", "first")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := db.CreateConversation(ctx, "alice", "second")
	if err != nil {
		t.Fatal(err)
	}
	b1, err := db.CreateConversation(ctx, "bob", "bob's")
	if err != nil {
		t.Fatal(err)
	}
	if a1.ID == "" || a1.CreatedAt.IsZero() || a1.Title != "first" {
		t.Fatalf("created %+v", a1)
	}

	t.Run("ListNewestFirstOwnOnly", func(t *testing.T) {
		p, err := db.ListConversations(ctx, "alice", 10, "")
		if err != nil {
			t.Fatal(err)
		}
		if list := p.Conversations; len(list) != 2 || list[0].ID != a2.ID || list[1].ID != a1.ID || p.NextCursor != "" {
			t.Fatalf("alice's list = %+v, want [%s %s]", p, a2.ID, a1.ID)
		}
		p, err = db.ListConversations(ctx, "carol", 10, "")
		if err != nil || len(p.Conversations) != 0 {
			t.Fatalf("carol's list = %v, %v; want empty", p, err)
		}
	})
	t.Run("FindOwn", func(t *testing.T) {
		c, err := db.FindConversation(ctx, "bob", b1.ID)
		if err != nil || c.Title != "bob's" || c.UserID != "bob" {
			t.Fatalf("find = %+v, %v", c, err)
		}
	})
	t.Run("FindOthersIsNotFound", func(t *testing.T) {
		_, err := db.FindConversation(ctx, "alice", b1.ID)
		wantCode(t, err, chatstream.ENOTFOUND)
	})
	t.Run("FindMalformedIsNotFound", func(t *testing.T) {
		_, err := db.FindConversation(ctx, "alice", "not-a-uuid")
		wantCode(t, err, chatstream.ENOTFOUND)
	})
}

func TestDB_Messages(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	conv, err := db.CreateConversation(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}

	user, asst, err := db.CreateExchange(ctx, "alice", conv.ID, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if user.Role != chatstream.RoleUser || user.Status != chatstream.StatusComplete || user.Content != "hello" {
		t.Fatalf("user message %+v", user)
	}
	if asst.Role != chatstream.RoleAssistant || asst.Status != chatstream.StatusStreaming || asst.Content != "" {
		t.Fatalf("assistant message %+v", asst)
	}

	t.Run("OneGenerationAtATime", func(t *testing.T) {
		_, _, err := db.CreateExchange(ctx, "alice", conv.ID, "again")
		wantCode(t, err, chatstream.ECONFLICT)
	})
	t.Run("OthersConversationIsNotFound", func(t *testing.T) {
		_, _, err := db.CreateExchange(ctx, "bob", conv.ID, "hi")
		wantCode(t, err, chatstream.ENOTFOUND)
		_, err = db.FindMessage(ctx, "bob", asst.ID)
		wantCode(t, err, chatstream.ENOTFOUND)
		_, _, err = db.BranchPage(ctx, "bob", conv.ID, "", 50)
		wantCode(t, err, chatstream.ENOTFOUND)
	})
	t.Run("Finish", func(t *testing.T) {
		usage := &chatstream.Usage{PromptTokens: 3, CompletionTokens: 2}
		m, changed, err := db.FinishMessage(ctx, asst.ID, chatstream.Final{Content: "hi there", Status: chatstream.StatusComplete, Usage: usage})
		if err != nil || !changed {
			t.Fatalf("finish: changed=%v err=%v", changed, err)
		}
		if m.Content != "hi there" || m.Status != chatstream.StatusComplete {
			t.Fatalf("finished %+v", m)
		}
		// A second finish (a retry, or a reaper that came late) changes nothing.
		m, changed, err = db.FinishMessage(ctx, asst.ID, chatstream.Final{Content: "other", Status: chatstream.StatusFailed,
			Failure: &chatstream.Failure{Code: "x", Message: "y"}})
		if err != nil || changed || m.Content != "hi there" || m.Status != chatstream.StatusComplete {
			t.Fatalf("second finish: %+v changed=%v err=%v", m, changed, err)
		}
		if _, _, err := db.FinishMessage(ctx, asst.ID, chatstream.Final{Status: chatstream.StatusStreaming}); err == nil {
			t.Fatal("finish with a non-final status succeeded")
		}
	})
	t.Run("ListOldestFirst", func(t *testing.T) {
		u2, a2, err := db.CreateExchange(ctx, "alice", conv.ID, "second question")
		if err != nil {
			t.Fatal(err)
		}
		fail := &chatstream.Failure{Code: "llm_error", Message: "boom"}
		if _, _, err := db.FinishMessage(ctx, a2.ID, chatstream.Final{Content: "part", Status: chatstream.StatusFailed, Failure: fail}); err != nil {
			t.Fatal(err)
		}
		msgs := branch(t, db, conv.ID)
		ids := []string{user.ID, asst.ID, u2.ID, a2.ID}
		if len(msgs) != len(ids) {
			t.Fatalf("got %d messages, want %d", len(msgs), len(ids))
		}
		for i, m := range msgs {
			if m.ID != ids[i] {
				t.Fatalf("message %d = %s, want %s", i, m.ID, ids[i])
			}
		}
		if msgs[3].Error == nil || *msgs[3].Error != *fail {
			t.Fatalf("failure not stored: %+v", msgs[3].Error)
		}
		hist, err := db.History(ctx, conv.ID, a2.ID, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != 2 || hist[0].ID != asst.ID || hist[1].ID != u2.ID {
			t.Fatalf("history = %v, want the 2 messages before %s", hist, a2.ID)
		}
	})
}

func TestDB_StartTurnThen(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	conv, err := db.CreateConversation(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	// The hook fails (Redis down): nothing is stored.
	boom := errors.New("redis down")
	var seen *chatstream.Message
	send := chatstream.Turn{Kind: chatstream.TurnSend, UserID: "alice", ConversationID: conv.ID, Content: "hi"}
	_, err = db.StartTurn(ctx, send, func(_, a *chatstream.Message) error {
		seen = a
		return boom
	})
	if !errors.Is(err, boom) || seen == nil {
		t.Fatalf("err = %v, hook saw %v", err, seen)
	}
	if msgs := branch(t, db, conv.ID); len(msgs) != 0 {
		t.Fatalf("a failed hook left %d messages", len(msgs))
	}
	if _, err := db.History(ctx, conv.ID, seen.ID, 10); chatstream.ErrorCode(err) != chatstream.ENOTFOUND {
		t.Fatalf("history of a rolled back message: %v, want not_found", err)
	}
	// The hook succeeds: both are stored, and the history of the answer is
	// the question.
	st, err := db.StartTurn(ctx, send, func(_, _ *chatstream.Message) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	u, a := st.User, st.Assistant
	hist, err := db.History(ctx, conv.ID, a.ID, 10)
	if err != nil || len(hist) != 1 || hist[0].ID != u.ID {
		t.Fatalf("history = %v, %v; want the question", hist, err)
	}
	if hist, err := db.History(ctx, conv.ID, u.ID, 10); err != nil || len(hist) != 0 {
		t.Fatalf("history of the first message = %v, %v; want none", hist, err)
	}
}

func TestDB_CreateExchangeRace(t *testing.T) {
	// Concurrent sends to one conversation: exactly one wins.
	ctx := context.Background()
	db := newDB(t)
	conv, err := db.CreateConversation(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { _, _, errs[i] = db.CreateExchange(ctx, "alice", conv.ID, "hi") })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
		} else {
			wantCode(t, err, chatstream.ECONFLICT)
		}
	}
	if won != 1 {
		t.Fatalf("%d sends won, want 1", won)
	}
}

func TestDB_RecentMessages(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	conv, err := db.CreateConversation(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		user, asst, err := db.CreateExchange(ctx, "alice", conv.ID, fmt.Sprint("q", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, user.ID, asst.ID)
		if _, _, err := db.FinishMessage(ctx, asst.ID, chatstream.Final{Status: chatstream.StatusComplete, Content: "a", LastIndex: 0}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.RecentMessages(ctx, conv.ID, 4)
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, m := range got {
		gotIDs = append(gotIDs, m.ID)
	}
	if !slices.Equal(gotIDs, ids[2:]) {
		t.Fatalf("recent 4 = %v, want the newest 4 oldest first %v", gotIDs, ids[2:])
	}
	if got[3].Status != chatstream.StatusComplete {
		t.Fatalf("newest message %+v", got[3])
	}
	if got, err := db.RecentMessages(ctx, "not-a-uuid", 4); err != nil || len(got) != 0 {
		t.Fatalf("a bad id: %v, %v", got, err)
	}
}
