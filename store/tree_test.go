package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/store"
)

// turn starts a turn as alice and fails the test on an error.
func turn(t *testing.T, db *store.DB, tn chatstream.Turn) *chatstream.Started {
	t.Helper()
	if tn.UserID == "" {
		tn.UserID = "alice"
	}
	s, err := db.StartTurn(context.Background(), tn, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// finish ends answer id complete.
func finish(t *testing.T, db *store.DB, id string) {
	t.Helper()
	if _, _, err := db.FinishMessage(context.Background(), id, chatstream.Final{Content: "answer", Status: chatstream.StatusComplete, LastIndex: 0}); err != nil {
		t.Fatal(err)
	}
}

// ids returns the ids of msgs.
func ids(msgs []*chatstream.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func wantBranch(t *testing.T, db *store.DB, convID string, want ...string) {
	t.Helper()
	if got := ids(branch(t, db, convID)); !slices.Equal(got, want) {
		t.Fatalf("branch = %v, want %v", got, want)
	}
}

func TestDB_Tree(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	conv, err := db.CreateConversation(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	send := func(content string) *chatstream.Started {
		t.Helper()
		s := turn(t, db, chatstream.Turn{Kind: chatstream.TurnSend, ConversationID: conv.ID, Content: content})
		finish(t, db, s.Assistant.ID)
		return s
	}
	first := send("q1")
	u1, a1 := first.User, first.Assistant
	second := send("q2")
	u2, a2 := second.User, second.Assistant
	if u1.ParentID != "" || a1.ParentID != u1.ID || u2.ParentID != a1.ID || a2.ParentID != u2.ID {
		t.Fatalf("parents: u1←%q a1←%q u2←%q a2←%q", u1.ParentID, a1.ParentID, u2.ParentID, a2.ParentID)
	}
	if second.Conversation.CurrentMessageID != a2.ID {
		t.Fatalf("current leaf = %s, want %s", second.Conversation.CurrentMessageID, a2.ID)
	}

	// Regenerate: a sibling of the answer, answering the same question.
	regen := turn(t, db, chatstream.Turn{Kind: chatstream.TurnRegenerate, MessageID: a2.ID})
	a2b := regen.Assistant
	if regen.User != nil || a2b.ParentID != u2.ID || !slices.Equal(a2b.SiblingIDs, []string{a2.ID, a2b.ID}) {
		t.Fatalf("regenerated %+v (user %v)", a2b, regen.User)
	}
	if regen.Conversation.ID != conv.ID || regen.Conversation.CurrentMessageID != a2b.ID {
		t.Fatalf("conversation after regenerate = %+v", regen.Conversation)
	}
	// While it streams, the conversation takes nothing else.
	_, err = db.StartTurn(ctx, chatstream.Turn{Kind: chatstream.TurnEdit, UserID: "alice", MessageID: u2.ID, Content: "x"}, nil)
	wantCode(t, err, chatstream.ECONFLICT)
	finish(t, db, a2b.ID)
	wantBranch(t, db, conv.ID, u1.ID, a1.ID, u2.ID, a2b.ID)
	if hist, err := db.History(ctx, conv.ID, a2b.ID, 100); err != nil || !slices.Equal(ids(hist), []string{u1.ID, a1.ID, u2.ID}) {
		t.Fatalf("history of the regenerated answer = %v, %v", ids(hist), err)
	}

	// Edit: a sibling of the question, with an answer of its own.
	edit := turn(t, db, chatstream.Turn{Kind: chatstream.TurnEdit, MessageID: u2.ID, Content: "q2, better"})
	u2b, a3 := edit.User, edit.Assistant
	if u2b.ParentID != a1.ID || u2b.Content != "q2, better" || a3.ParentID != u2b.ID ||
		!slices.Equal(u2b.SiblingIDs, []string{u2.ID, u2b.ID}) || !slices.Equal(a3.SiblingIDs, []string{a3.ID}) {
		t.Fatalf("edited %+v answered by %+v", u2b, a3)
	}
	finish(t, db, a3.ID)
	wantBranch(t, db, conv.ID, u1.ID, a1.ID, u2b.ID, a3.ID)
	// The prompt of the new answer is its branch only.
	if hist, err := db.History(ctx, conv.ID, a3.ID, 100); err != nil || !slices.Equal(ids(hist), []string{u1.ID, a1.ID, u2b.ID}) {
		t.Fatalf("history of the edited answer = %v, %v", ids(hist), err)
	}
	// A send goes on from the current leaf.
	third := send("q3")
	if third.User.ParentID != a3.ID {
		t.Fatalf("send after an edit: parent %s, want %s", third.User.ParentID, a3.ID)
	}

	// Every message reads its siblings, oldest first.
	msgs := branch(t, db, conv.ID)
	if !slices.Equal(msgs[2].SiblingIDs, []string{u2.ID, u2b.ID}) || !slices.Equal(msgs[0].SiblingIDs, []string{u1.ID}) {
		t.Fatalf("siblings on the branch: %v, %v", msgs[0].SiblingIDs, msgs[2].SiblingIDs)
	}

	t.Run("Switch", func(t *testing.T) {
		show := func(id string) *chatstream.Conversation {
			t.Helper()
			c, err := db.UpdateConversation(ctx, "alice", conv.ID, chatstream.ConversationChange{Show: &id})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		// To an old answer: it is a leaf.
		if c := show(a2.ID); c.CurrentMessageID != a2.ID {
			t.Fatalf("current = %s, want %s", c.CurrentMessageID, a2.ID)
		}
		wantBranch(t, db, conv.ID, u1.ID, a1.ID, u2.ID, a2.ID)
		// To a question: down to its newest answer.
		if c := show(u2.ID); c.CurrentMessageID != a2b.ID {
			t.Fatalf("current = %s, want %s", c.CurrentMessageID, a2b.ID)
		}
		// To the first answer: the newest child at each step.
		show(a1.ID)
		wantBranch(t, db, conv.ID, u1.ID, a1.ID, u2b.ID, a3.ID, third.User.ID, third.Assistant.ID)
		// A send on a switched branch appends there.
		show(a2.ID)
		s := send("q3 on the old branch")
		if s.User.ParentID != a2.ID {
			t.Fatalf("send on the old branch: parent %s, want %s", s.User.ParentID, a2.ID)
		}
		wantBranch(t, db, conv.ID, u1.ID, a1.ID, u2.ID, a2.ID, s.User.ID, s.Assistant.ID)
		show(third.Assistant.ID)
	})

	t.Run("EditTheFirstQuestion", func(t *testing.T) {
		s := turn(t, db, chatstream.Turn{Kind: chatstream.TurnEdit, MessageID: u1.ID, Content: "q1 again"})
		finish(t, db, s.Assistant.ID)
		if s.User.ParentID != "" || !slices.Equal(s.User.SiblingIDs, []string{u1.ID, s.User.ID}) {
			t.Fatalf("edited root %+v", s.User)
		}
		wantBranch(t, db, conv.ID, s.User.ID, s.Assistant.ID)
		if hist, err := db.History(ctx, conv.ID, s.Assistant.ID, 100); err != nil || !slices.Equal(ids(hist), []string{s.User.ID}) {
			t.Fatalf("history = %v, %v", ids(hist), err)
		}
	})

	t.Run("BadIDsChangeNothing", func(t *testing.T) {
		other, err := db.CreateConversation(ctx, "alice", "other")
		if err != nil {
			t.Fatal(err)
		}
		elsewhere := turn(t, db, chatstream.Turn{Kind: chatstream.TurnSend, ConversationID: other.ID, Content: "x"})
		finish(t, db, elsewhere.Assistant.ID)
		before := ids(branch(t, db, conv.ID))
		for _, c := range []struct {
			name string
			turn chatstream.Turn
			code string
		}{
			{"EditAnAnswer", chatstream.Turn{Kind: chatstream.TurnEdit, UserID: "alice", MessageID: a1.ID, Content: "x"}, chatstream.EINVALID},
			{"RegenerateAQuestion", chatstream.Turn{Kind: chatstream.TurnRegenerate, UserID: "alice", MessageID: u1.ID}, chatstream.EINVALID},
			{"EditOfAnotherUser", chatstream.Turn{Kind: chatstream.TurnEdit, UserID: "bob", MessageID: u1.ID, Content: "x"}, chatstream.ENOTFOUND},
			{"RegenerateOfAnotherUser", chatstream.Turn{Kind: chatstream.TurnRegenerate, UserID: "bob", MessageID: a1.ID}, chatstream.ENOTFOUND},
			{"Malformed", chatstream.Turn{Kind: chatstream.TurnRegenerate, UserID: "alice", MessageID: "nope"}, chatstream.ENOTFOUND},
			{"Unknown", chatstream.Turn{Kind: chatstream.TurnEdit, UserID: "alice", MessageID: "00000000-0000-4000-8000-000000000000", Content: "x"}, chatstream.ENOTFOUND},
			{"BadClientID", chatstream.Turn{Kind: chatstream.TurnSend, UserID: "alice", ConversationID: conv.ID, Content: "x", ClientMessageID: "has space"}, chatstream.EINVALID},
		} {
			t.Run(c.name, func(t *testing.T) {
				_, err := db.StartTurn(ctx, c.turn, nil)
				wantCode(t, err, c.code)
			})
		}
		for _, id := range []string{elsewhere.Assistant.ID, "nope", "00000000-0000-4000-8000-000000000000"} {
			_, err := db.UpdateConversation(ctx, "alice", conv.ID, chatstream.ConversationChange{Show: &id})
			wantCode(t, err, chatstream.ENOTFOUND)
		}
		title := "mine"
		_, err = db.UpdateConversation(ctx, "bob", conv.ID, chatstream.ConversationChange{Title: &title})
		wantCode(t, err, chatstream.ENOTFOUND)
		if _, _, err := db.BranchPage(ctx, "alice", conv.ID, elsewhere.User.ID, 10); chatstream.ErrorCode(err) != chatstream.ENOTFOUND {
			t.Fatalf("page before another conversation's message: %v", err)
		}
		wantBranch(t, db, conv.ID, before...)
		if c, _ := db.FindConversation(ctx, "alice", conv.ID); c.Title != "" {
			t.Fatalf("title = %q", c.Title)
		}
	})
}

// Pages of a long branch, newest first by before: together they are the
// branch, once each, in order.
func TestDB_BranchPages(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	conv, err := db.CreateConversation(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for i := range 9 {
		s := turn(t, db, chatstream.Turn{Kind: chatstream.TurnSend, ConversationID: conv.ID, Content: fmt.Sprint("q", i)})
		finish(t, db, s.Assistant.ID)
		all = append(all, s.User.ID, s.Assistant.ID)
	}
	// A regenerated answer on the way: pages follow the current branch.
	s := turn(t, db, chatstream.Turn{Kind: chatstream.TurnRegenerate, MessageID: all[len(all)-1]})
	finish(t, db, s.Assistant.ID)
	all[len(all)-1] = s.Assistant.ID

	var got []string
	before, pages := "", 0
	for {
		_, p, err := db.BranchPage(ctx, "alice", conv.ID, before, 4)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(ids(p.Messages), got...)
		if !p.HasMore {
			break
		}
		if len(p.Messages) != 4 {
			t.Fatalf("page %d has %d messages and more after it", pages, len(p.Messages))
		}
		before = p.Messages[0].ID
	}
	if !slices.Equal(got, all) || pages != 5 {
		t.Fatalf("%d pages = %v, want %v", pages, got, all)
	}
	// A page that ends exactly at the branch's first message says so.
	_, p, err := db.BranchPage(ctx, "alice", conv.ID, all[4], 4)
	if err != nil || p.HasMore || !slices.Equal(ids(p.Messages), all[:4]) {
		t.Fatalf("page before %s = %v has_more=%v, %v", all[4], ids(p.Messages), p.HasMore, err)
	}
	_, p, err = db.BranchPage(ctx, "alice", conv.ID, all[0], 4)
	if err != nil || p.HasMore || len(p.Messages) != 0 {
		t.Fatalf("page before the first message = %v, %v", p, err)
	}
}

// The conversation list in pages while new conversations arrive between
// them: every conversation that existed at the first page comes once, in
// order, and none is skipped.
func TestDB_ListPagesWhileConversationsArrive(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	var want []string
	for range 23 {
		c, err := db.CreateConversation(ctx, "alice", "")
		if err != nil {
			t.Fatal(err)
		}
		want = append([]string{c.ID}, want...)
	}
	var got []string
	before := ""
	for range 10 {
		p, err := db.ListConversations(ctx, "alice", 5, before)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Conversations {
			got = append(got, c.ID)
		}
		if p.NextCursor == "" {
			break
		}
		before = p.NextCursor
		for range 3 { // newer than every page still to come
			if _, err := db.CreateConversation(ctx, "alice", ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages = %v\nwant    %v", got, want)
	}
	for _, bad := range []string{"nope", "!!", "MjAyNnxub3BlCg"} {
		_, err := db.ListConversations(ctx, "alice", 5, bad)
		wantCode(t, err, chatstream.EINVALID)
	}
}

func TestDB_Idempotency(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	conv, err := db.CreateConversation(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	send := chatstream.Turn{Kind: chatstream.TurnSend, UserID: "alice", ConversationID: conv.ID, Content: "hi", ClientMessageID: "c-1"}
	first := turn(t, db, send)
	if first.Repeat || first.User.ClientMessageID != "c-1" {
		t.Fatalf("first = %+v", first)
	}
	// While the first still streams (a new send would be a conflict) and
	// after it ended, a repeat is the first answer.
	for range 2 {
		again := turn(t, db, send)
		if !again.Repeat || again.User.ID != first.User.ID || again.Assistant.ID != first.Assistant.ID || again.Conversation != nil {
			t.Fatalf("repeat = %+v, want the first answer", again)
		}
		finish(t, db, first.Assistant.ID)
	}
	// The same id elsewhere is a conflict, and another user's is theirs.
	other, err := db.CreateConversation(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := send
	elsewhere.ConversationID = other.ID
	_, err = db.StartTurn(ctx, elsewhere, nil)
	wantCode(t, err, chatstream.ECONFLICT)
	bobs, err := db.CreateConversation(ctx, "bob", "")
	if err != nil {
		t.Fatal(err)
	}
	if s := turn(t, db, chatstream.Turn{Kind: chatstream.TurnSend, UserID: "bob", ConversationID: bobs.ID, Content: "hi", ClientMessageID: "c-1"}); s.Repeat {
		t.Fatal("bob's c-1 was taken for alice's")
	}
	// Edits take a client id too.
	edit := chatstream.Turn{Kind: chatstream.TurnEdit, UserID: "alice", MessageID: first.User.ID, Content: "hello", ClientMessageID: "c-2"}
	e1 := turn(t, db, edit)
	if e2 := turn(t, db, edit); !e2.Repeat || e2.User.ID != e1.User.ID || e2.Assistant.ID != e1.Assistant.ID {
		t.Fatalf("repeated edit = %+v", e2)
	}
	if s, convID, err := db.ClientMessage(ctx, "alice", "c-2"); err != nil || convID != conv.ID || s.Assistant.ID != e1.Assistant.ID {
		t.Fatalf("client message c-2 = %+v in %s, %v", s, convID, err)
	}
	if got := branch(t, db, conv.ID); len(got) != 2 {
		t.Fatalf("branch after repeats = %v", ids(got))
	}
	// Deleted with its conversation: the id is free again.
	if _, err := db.DeleteConversation(ctx, "alice", conv.ID); err != nil {
		t.Fatal(err)
	}
	if s, _, err := db.ClientMessage(ctx, "alice", "c-1"); err != nil || s != nil {
		t.Fatalf("client message of a deleted conversation = %+v, %v", s, err)
	}
	if s := turn(t, db, elsewhere); s.Repeat {
		t.Fatal("the id of a deleted conversation was still taken")
	}
}

// Duplicates at once through two pools (two nodes): one message, and every
// one of them answered with it.
func TestDB_IdempotencyRace(t *testing.T) {
	ctx := context.Background()
	url := testenv.NewDatabase(t)
	var nodes []*store.DB
	for range 2 {
		db, err := store.Open(ctx, url, store.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		if err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, db)
	}
	conv, err := nodes[0].CreateConversation(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		send := chatstream.Turn{Kind: chatstream.TurnSend, UserID: "alice", ConversationID: conv.ID, Content: "hi",
			ClientMessageID: fmt.Sprint("race-", round)}
		got := make([]*chatstream.Started, 8)
		errs := make([]error, len(got))
		start := make(chan struct{})
		var wg = make(chan struct{}, len(got))
		for i := range got {
			go func() {
				<-start
				got[i], errs[i] = nodes[i%2].StartTurn(ctx, send, nil)
				wg <- struct{}{}
			}()
		}
		close(start)
		for range got {
			<-wg
		}
		firsts := 0
		for i, s := range got {
			if errs[i] != nil {
				t.Fatalf("round %d, request %d: %v", round, i, errs[i])
			}
			if !s.Repeat {
				firsts++
			}
			if s.User.ID != got[0].User.ID || s.Assistant.ID != got[0].Assistant.ID {
				t.Fatalf("round %d: answers differ: %s/%s and %s/%s", round, s.User.ID, s.Assistant.ID, got[0].User.ID, got[0].Assistant.ID)
			}
		}
		if firsts != 1 {
			t.Fatalf("round %d: %d requests wrote a message, want 1", round, firsts)
		}
		finish(t, nodes[0], got[0].Assistant.ID)
	}
	if n := len(branch(t, nodes[0], conv.ID)); n != 10 {
		t.Fatalf("branch has %d messages after 5 rounds of duplicates, want 10", n)
	}
}

// The tree migration on a database filled the v1 way: each conversation
// becomes one branch, in seq order, showing its last message.
func TestDB_TreeMigrationOnV1Rows(t *testing.T) {
	ctx := context.Background()
	db, conn := migratedTo(t, 3)
	uuid := func(conv, i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%06d%06d", conv, i) }
	// Two conversations written interleaved (seq is global), and an empty one.
	for i := range 6 {
		for conv := 1; conv <= 2; conv++ {
			if i == 0 {
				if _, err := conn.Exec(ctx, `INSERT INTO conversations (id, user_id, title) VALUES ($1, 'alice', '')`, uuid(conv, 0)); err != nil {
					t.Fatal(err)
				}
			}
			role := []string{"user", "assistant"}[i%2]
			if _, err := conn.Exec(ctx, `INSERT INTO messages (id, conversation_id, role, content, status) VALUES ($1, $2, $3, 'x', 'complete')`,
				uuid(conv, i+1), uuid(conv, 0), role); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := conn.Exec(ctx, `INSERT INTO conversations (id, user_id, title) VALUES ($1, 'alice', 'empty')`, uuid(3, 0)); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for conv := 1; conv <= 2; conv++ {
		msgs := branch(t, db, uuid(conv, 0))
		if len(msgs) != 6 {
			t.Fatalf("conversation %d: %d messages", conv, len(msgs))
		}
		for i, m := range msgs {
			parent := ""
			if i > 0 {
				parent = uuid(conv, i)
			}
			if m.ID != uuid(conv, i+1) || m.ParentID != parent || !slices.Equal(m.SiblingIDs, []string{m.ID}) {
				t.Fatalf("conversation %d, message %d = %s parent %q siblings %v", conv, i, m.ID, m.ParentID, m.SiblingIDs)
			}
		}
		c, err := db.FindConversation(ctx, "alice", uuid(conv, 0))
		if err != nil || c.CurrentMessageID != uuid(conv, 6) {
			t.Fatalf("conversation %d shows %+v, %v", conv, c, err)
		}
		// And it goes on as a v2 conversation.
		s := turn(t, db, chatstream.Turn{Kind: chatstream.TurnRegenerate, MessageID: uuid(conv, 6)})
		if s.Assistant.ParentID != uuid(conv, 5) || !slices.Equal(s.Assistant.SiblingIDs, []string{uuid(conv, 6), s.Assistant.ID}) {
			t.Fatalf("regenerated after the migration: %+v", s.Assistant)
		}
	}
	if c, err := db.FindConversation(ctx, "alice", uuid(3, 0)); err != nil || c.CurrentMessageID != "" {
		t.Fatalf("the empty conversation = %+v, %v", c, err)
	}
	if msgs := branch(t, db, uuid(3, 0)); len(msgs) != 0 {
		t.Fatalf("the empty conversation has %v", ids(msgs))
	}
}
