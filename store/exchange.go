package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/chatstream/chatstream"
)

var errBusy = chatstream.Errorf(chatstream.ECONFLICT, "An answer is still being generated in this conversation.")

// CreateExchange writes, in one transaction, a complete user message with
// content and the streaming assistant message that will answer it. A
// conversation runs one generation at a time: while one is open it returns a
// conflict error.
func (db *DB) CreateExchange(ctx context.Context, userID, convID, content string) (user, assistant *chatstream.Message, err error) {
	return db.CreateExchangeThen(ctx, userID, convID, content, nil)
}

// CreateExchangeThen is CreateExchange that calls then, if not nil, inside
// the transaction once both messages are written, and commits only if it
// succeeds. The generation queues its job there: a message is never stored
// without its job, and a job whose transaction did not commit finds no
// message and ends.
func (db *DB) CreateExchangeThen(ctx context.Context, userID, convID, content string,
	then func(user, assistant *chatstream.Message) error) (user, assistant *chatstream.Message, err error) {
	if !validID(convID) {
		return nil, nil, notFound("Conversation")
	}
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		// Lock the conversation row so that concurrent sends take turns; the
		// unique index on open messages is the guarantee behind the check.
		err := tx.QueryRow(ctx, `SELECT id FROM conversations WHERE id = $1 AND user_id = $2 FOR UPDATE`,
			convID, userID).Scan(new(string))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("Conversation")
		} else if err != nil {
			return queryError(err, "lock conversation %s", convID)
		}
		insert := `INSERT INTO messages AS m (id, conversation_id, role, content, status)
			VALUES ($1, $2, $3, $4, $5) RETURNING ` + messageColumns
		if user, err = scanMessage(tx.QueryRow(ctx, insert, newID(), convID, chatstream.RoleUser, content, chatstream.StatusComplete)); err != nil {
			return queryError(err, "insert user message")
		}
		assistant, err = scanMessage(tx.QueryRow(ctx, insert, newID(), convID, chatstream.RoleAssistant, "", chatstream.StatusStreaming))
		if isCode(err, codeUniqueViolation) {
			return errBusy
		} else if err != nil {
			return queryError(err, "insert assistant message")
		}
		if _, err = tx.Exec(ctx, `UPDATE conversations SET updated_at = now() WHERE id = $1`, convID); err != nil {
			return err
		}
		if then != nil {
			return then(user, assistant)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return user, assistant, nil
}
