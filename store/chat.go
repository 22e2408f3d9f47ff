package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// The AI SDK's chats: a chat id, chosen by the client, names one of its
// user's conversations.

// Chat returns the conversation that userID's chat chatID names; "" if the
// chat was never used (or its conversation was deleted).
func (db *DB) Chat(ctx context.Context, userID, chatID string) (string, error) {
	var conv string
	err := db.pool.QueryRow(ctx, `SELECT conversation_id::text FROM ai_sdk_chats WHERE user_id = $1 AND chat_id = $2`, userID, chatID).Scan(&conv)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", queryError(err, "chat %q", chatID)
	}
	return conv, nil
}

// BindChat returns the conversation that userID's chat chatID names,
// naming one first if there is none: the user's conversation whose id is
// chatID, else a new conversation titled title (created reports it). Two
// first requests of a chat at once get the same conversation.
func (db *DB) BindChat(ctx context.Context, userID, chatID, title string) (conv string, created bool, err error) {
	for range 2 {
		if conv, err = db.Chat(ctx, userID, chatID); err != nil || conv != "" {
			return conv, false, err
		}
		bound := false
		err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
			conv, created = "", false
			if validID(chatID) {
				err := tx.QueryRow(ctx, `SELECT id::text FROM conversations WHERE id = $1 AND user_id = $2`, chatID, userID).Scan(&conv)
				if err != nil && !errors.Is(err, pgx.ErrNoRows) {
					return queryError(err, "find conversation %s", chatID)
				}
			}
			if conv == "" {
				conv, created = newID(), true
				if _, err := tx.Exec(ctx, `INSERT INTO conversations (id, user_id, title) VALUES ($1, $2, $3)`, conv, userID, title); err != nil {
					return queryError(err, "insert conversation")
				}
			}
			tag, err := tx.Exec(ctx, `INSERT INTO ai_sdk_chats (user_id, chat_id, conversation_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
				userID, chatID, conv)
			if err != nil {
				return queryError(err, "bind chat %q", chatID)
			}
			bound = tag.RowsAffected() == 1
			if !bound {
				return errChatRaced // another request bound it: roll back and read its
			}
			return nil
		})
		if errors.Is(err, errChatRaced) {
			continue
		}
		return conv, created, err
	}
	return "", false, queryError(errChatRaced, "bind chat %q", chatID)
}

var errChatRaced = errors.New("the chat was bound meanwhile")
