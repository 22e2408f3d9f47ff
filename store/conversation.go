package store

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatstream/chatstream"
)

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

// ListConversations returns userID's conversations, newest first, at most limit.
func (db *DB) ListConversations(ctx context.Context, userID string, limit int) ([]*chatstream.Conversation, error) {
	rows, err := db.pool.Query(ctx,
		`SELECT id, user_id, title, created_at FROM conversations
		 WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2`, userID, limit)
	if err != nil {
		return nil, queryError(err, "list conversations")
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*chatstream.Conversation, error) {
		var c chatstream.Conversation
		err := row.Scan(&c.ID, &c.UserID, &c.Title, &c.CreatedAt)
		return &c, err
	})
	if err != nil {
		return nil, queryError(err, "list conversations")
	}
	return list, nil
}

// FindConversation returns the conversation id if userID owns it, else a
// not_found error.
func (db *DB) FindConversation(ctx context.Context, userID, id string) (*chatstream.Conversation, error) {
	if !validID(id) {
		return nil, notFound("Conversation")
	}
	var c chatstream.Conversation
	err := db.pool.QueryRow(ctx,
		`SELECT id, user_id, title, created_at FROM conversations WHERE id = $1 AND user_id = $2`,
		id, userID).Scan(&c.ID, &c.UserID, &c.Title, &c.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("Conversation")
	} else if err != nil {
		return nil, queryError(err, "find conversation %s", id)
	}
	return &c, nil
}

func newID() string { return uuid.NewString() }

// validID reports whether id is a UUID; anything else cannot name a row.
func validID(id string) bool {
	return len(id) == 36 && uuid.Validate(id) == nil
}
