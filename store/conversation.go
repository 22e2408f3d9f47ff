package store

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatstream/chatstream"
)

const conversationColumns = `c.id, c.user_id, c.title, c.created_at, c.current_message_id`

func scanConversation(row pgx.Row) (*chatstream.Conversation, error) {
	var c chatstream.Conversation
	var current *string
	if err := row.Scan(&c.ID, &c.UserID, &c.Title, &c.CreatedAt, &current); err != nil {
		return nil, err
	}
	if current != nil {
		c.CurrentMessageID = *current
	}
	return &c, nil
}

// CreateConversation creates a conversation owned by userID.
func (db *DB) CreateConversation(ctx context.Context, userID, title string) (*chatstream.Conversation, error) {
	c := &chatstream.Conversation{ID: newID(), UserID: userID, Title: title}
	err := db.pool.QueryRow(ctx,
		`INSERT INTO conversations (id, user_id, title) VALUES ($1, $2, $3) RETURNING created_at`,
		c.ID, userID, title).Scan(&c.CreatedAt)
	if err != nil {
		return nil, queryError(err, "insert conversation")
	}
	return c, nil
}

// cursor is where a page of conversations ends: the next page holds the
// ones created before it.
type cursor struct {
	createdAt time.Time
	id        string
}

// String is the cursor as clients pass it back: opaque, URL-safe.
func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.createdAt.UTC().Format(time.RFC3339Nano) + "|" + c.id))
}

var errBadCursor = chatstream.Errorf(chatstream.EINVALID, "Parameter \"before\" is not a cursor this server gave.")

// parseCursor reads a cursor a client passed back.
func parseCursor(s string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, errBadCursor
	}
	at, id, ok := strings.Cut(string(b), "|")
	t, err := time.Parse(time.RFC3339Nano, at)
	if !ok || err != nil || !validID(id) {
		return cursor{}, errBadCursor
	}
	return cursor{createdAt: t, id: id}, nil
}

// ListConversations returns userID's conversations created before the
// cursor before (empty: from the newest), newest first, at most limit; the
// page's NextCursor names the next page. Pages are keyed by (created_at,
// id): a conversation created meanwhile lands before the first page, never
// between two. A cursor this server did not give is invalid_request.
func (db *DB) ListConversations(ctx context.Context, userID string, limit int, before string) (*chatstream.ConversationPage, error) {
	var rows pgx.Rows
	var err error
	if before == "" {
		rows, err = db.pool.Query(ctx, `SELECT `+conversationColumns+` FROM conversations c
			WHERE c.user_id = $1 ORDER BY c.created_at DESC, c.id DESC LIMIT $2`, userID, limit+1)
	} else {
		c, perr := parseCursor(before)
		if perr != nil {
			return nil, perr
		}
		rows, err = db.pool.Query(ctx, `SELECT `+conversationColumns+` FROM conversations c
			WHERE c.user_id = $1 AND (c.created_at, c.id) < ($3, $4::uuid)
			ORDER BY c.created_at DESC, c.id DESC LIMIT $2`, userID, limit+1, c.createdAt, c.id)
	}
	if err != nil {
		return nil, queryError(err, "list conversations")
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*chatstream.Conversation, error) { return scanConversation(row) })
	if err != nil {
		return nil, queryError(err, "list conversations")
	}
	p := &chatstream.ConversationPage{Conversations: list}
	if len(list) > limit {
		p.Conversations = list[:limit]
		last := list[limit-1]
		p.NextCursor = cursor{createdAt: last.CreatedAt, id: last.ID}.String()
	}
	if p.Conversations == nil {
		p.Conversations = []*chatstream.Conversation{}
	}
	return p, nil
}

// FindConversation returns the conversation id if userID owns it, else a
// not_found error.
func (db *DB) FindConversation(ctx context.Context, userID, id string) (*chatstream.Conversation, error) {
	if !validID(id) {
		return nil, notFound("Conversation")
	}
	c, err := scanConversation(db.pool.QueryRow(ctx,
		`SELECT `+conversationColumns+` FROM conversations c WHERE c.id = $1 AND c.user_id = $2`, id, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("Conversation")
	} else if err != nil {
		return nil, queryError(err, "find conversation %s", id)
	}
	return c, nil
}

// Conversation returns conversation id whoever owns it; callers have
// checked access. A deleted one is not_found.
func (db *DB) Conversation(ctx context.Context, id string) (*chatstream.Conversation, error) {
	if !validID(id) {
		return nil, notFound("Conversation")
	}
	c, err := scanConversation(db.pool.QueryRow(ctx, `SELECT `+conversationColumns+` FROM conversations c WHERE c.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("Conversation")
	} else if err != nil {
		return nil, queryError(err, "conversation %s", id)
	}
	return c, nil
}

// UpdateConversation renames conversation id or switches the branch it
// shows, if userID owns it. A Show that is not a message of the
// conversation is not_found, and nothing changes.
func (db *DB) UpdateConversation(ctx context.Context, userID, id string, ch chatstream.ConversationChange) (*chatstream.Conversation, error) {
	if !validID(id) {
		return nil, notFound("Conversation")
	}
	var conv *chatstream.Conversation
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		c, err := scanConversation(tx.QueryRow(ctx, `SELECT `+conversationColumns+` FROM conversations c
			WHERE c.id = $1 AND c.user_id = $2 FOR UPDATE`, id, userID))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("Conversation")
		} else if err != nil {
			return queryError(err, "lock conversation %s", id)
		}
		if ch.Title != nil {
			c.Title = *ch.Title
		}
		if ch.Show != nil {
			if c.CurrentMessageID, err = newestDescendant(ctx, tx, id, *ch.Show); err != nil {
				return err
			}
		}
		var current *string
		if c.CurrentMessageID != "" {
			current = &c.CurrentMessageID
		}
		if _, err := tx.Exec(ctx, `UPDATE conversations SET title = $2, current_message_id = $3, updated_at = now() WHERE id = $1`,
			id, c.Title, current); err != nil {
			return queryError(err, "update conversation %s", id)
		}
		conv = c
		return nil
	})
	if err != nil {
		return nil, err
	}
	return conv, nil
}

// descendantQuery walks down from message $2 of conversation $1 to the
// leaf reached by taking the newest child at each step: one index lookup
// (messages_parent_seq_idx, backwards) a step.
const descendantQuery = `WITH RECURSIVE down AS (
		SELECT m.id, 0 AS depth FROM messages m WHERE m.id = $2 AND m.conversation_id = $1
		UNION ALL
		SELECT child.id, down.depth + 1 FROM down,
			LATERAL (SELECT c.id FROM messages c WHERE c.parent_id = down.id ORDER BY c.seq DESC LIMIT 1) child
	)
	SELECT id::text FROM down ORDER BY depth DESC LIMIT 1`

// newestDescendant walks down from message msgID of conversation convID,
// taking the newest child at each step, and returns the leaf it reaches.
func newestDescendant(ctx context.Context, tx pgx.Tx, convID, msgID string) (string, error) {
	if !validID(msgID) {
		return "", notFound("Message")
	}
	var leaf string
	err := tx.QueryRow(ctx, descendantQuery, convID, msgID).Scan(&leaf)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", notFound("Message")
	} else if err != nil {
		return "", queryError(err, "descendants of %s", msgID)
	}
	return leaf, nil
}

// DeleteConversation deletes conversation id, its messages and their
// client ids, if userID owns it, and returns the ids of its assistant
// messages (its streams), whose chunk logs the caller removes.
func (db *DB) DeleteConversation(ctx context.Context, userID, id string) (streams []string, err error) {
	if !validID(id) {
		return nil, notFound("Conversation")
	}
	rows, err := db.pool.Query(ctx, `WITH gone AS (
			DELETE FROM conversations WHERE id = $1 AND user_id = $2 RETURNING id)
		SELECT (SELECT count(*) FROM gone), m.id::text
		FROM (SELECT 1) one LEFT JOIN messages m ON m.conversation_id IN (SELECT id FROM gone) AND m.role = 'assistant'`, id, userID)
	if err != nil {
		return nil, queryError(err, "delete conversation %s", id)
	}
	defer rows.Close()
	deleted := false
	for rows.Next() {
		var n int
		var stream *string
		if err := rows.Scan(&n, &stream); err != nil {
			return nil, queryError(err, "delete conversation %s", id)
		}
		deleted = n > 0
		if stream != nil {
			streams = append(streams, *stream)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, queryError(err, "delete conversation %s", id)
	}
	if !deleted {
		return nil, notFound("Conversation")
	}
	return streams, nil
}

func newID() string { return uuid.NewString() }

// validID reports whether id is a UUID; anything else cannot name a row.
func validID(id string) bool {
	return len(id) == 36 && uuid.Validate(id) == nil
}
