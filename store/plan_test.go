package store

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/testenv"
)

// longConversation opens a store with one conversation of alice's whose
// branch is 10,000 messages long, beside 10,000 messages of 200 other
// conversations, and returns its id and the ids of its last, middle and
// first messages.
func longConversation(tb testing.TB) (db *DB, conv, leaf, mid, root string) {
	ctx := context.Background()
	db, err := Open(ctx, testenv.NewDatabase(tb), Config{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(db.Close)
	if err := db.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	conv = "00000000-0000-4000-8000-000000000001"
	for _, q := range []string{
		`INSERT INTO conversations (id, user_id, title) VALUES ('` + conv + `', 'alice', 'long')`,
		// Other users' conversations, so that messages is not only this one.
		`INSERT INTO conversations (id, user_id, title) SELECT md5('c' || i)::uuid, 'bob', '' FROM generate_series(1, 200) i`,
		`INSERT INTO messages (id, conversation_id, role, content, status, parent_id)
		 SELECT md5('o' || i)::uuid, md5('c' || (i % 200 + 1))::uuid, 'user', 'other', 'complete', NULL FROM generate_series(1, 10000) i`,
		// One branch of 10,000 messages, each the parent of the next.
		`INSERT INTO messages (id, conversation_id, role, content, status, parent_id)
		 SELECT md5('m' || i)::uuid, '` + conv + `', CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END, 'message ' || i, 'complete',
		        CASE WHEN i > 1 THEN md5('m' || (i - 1))::uuid END
		 FROM generate_series(1, 10000) i ORDER BY i`,
		`UPDATE conversations SET current_message_id = md5('m10000')::uuid WHERE id = '` + conv + `'`,
		`ANALYZE`,
	} {
		if _, err := db.pool.Exec(ctx, q); err != nil {
			tb.Fatal(err)
		}
	}
	if err := db.pool.QueryRow(ctx, `SELECT md5('m10000')::uuid::text, md5('m5000')::uuid::text, md5('m1')::uuid::text`).Scan(&leaf, &mid, &root); err != nil {
		tb.Fatal(err)
	}
	return db, conv, leaf, mid, root
}

// The reads of a long conversation, through the store's API: the newest
// page (GET /v1/conversations/:id), a page from its middle, the prompt
// history of a new answer.
func BenchmarkBranch(b *testing.B) {
	ctx := context.Background()
	db, conv, leaf, mid, _ := longConversation(b)
	b.Run("Newest100", func(b *testing.B) {
		for b.Loop() {
			if _, p, err := db.BranchPage(ctx, "alice", conv, "", 100); err != nil || len(p.Messages) != 100 {
				b.Fatal(err)
			}
		}
	})
	b.Run("Page50Before", func(b *testing.B) {
		for b.Loop() {
			if _, p, err := db.BranchPage(ctx, "alice", conv, mid, 50); err != nil || len(p.Messages) != 50 {
				b.Fatal(err)
			}
		}
	})
	b.Run("History200", func(b *testing.B) {
		for b.Loop() {
			if h, err := db.History(ctx, conv, leaf, 200); err != nil || len(h) != 200 {
				b.Fatal(err)
			}
		}
	})
}

// The reads of a branch stay index walks on a conversation of 10,000
// messages: no sequential scan of messages, and the walk visits only the
// messages asked for, not the conversation. PLAN_FILE=path writes the
// plans (docs/ARCHITECTURE.md shows them).
func TestPlans_LongConversation(t *testing.T) {
	ctx := context.Background()
	db, conv, leaf, mid, root := longConversation(t)

	var out strings.Builder
	for _, c := range []struct {
		name  string
		query string
		args  []any
		// visits is the most rows the walk may take.
		visits int
	}{
		{"the newest 101 of the branch (GET /v1/conversations/:id)", branchQuery, []any{conv, leaf, 101, true}, 101},
		{"a page of 51 before a message in the middle", branchQuery, []any{conv, mid, 51, false}, 51},
		{"the prompt history: up to 200 before the new answer", branchQuery, []any{conv, leaf, 200, false}, 200},
		{"PATCH current_message_id: the newest descendant of the root", descendantQuery, []any{conv, root}, 10001},
		{"the workers' sweep: the open answers", openMessagesQuery, []any{time.Now(), 500}, 0},
	} {
		rows, err := db.pool.Query(ctx, `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) `+c.query, c.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, line)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		out.WriteString("-- " + c.name + "\n" + text + "\n\n")
		if strings.Contains(text, "Seq Scan on messages") {
			t.Errorf("%s scans messages:\n%s", c.name, text)
		}
		// The recursive walk stops after the rows asked for.
		for _, m := range regexp.MustCompile(`Recursive Union \(actual rows=(\d+)`).FindAllStringSubmatch(text, -1) {
			if n, _ := strconv.Atoi(m[1]); n > c.visits {
				t.Errorf("%s walked %d messages, want at most %d:\n%s", c.name, n, c.visits, text)
			}
		}
	}
	t.Log("\n" + out.String())
	if f := os.Getenv("PLAN_FILE"); f != "" {
		if err := os.WriteFile(f, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
