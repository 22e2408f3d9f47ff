package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chatstream/chatstream"
)

const messageColumns = `m.id, m.conversation_id, m.role, m.content, m.status, m.error_code, m.error_message, m.created_at, m.last_index, m.finish_reason, m.parts, m.model, m.prompt_tokens, m.completion_tokens`

func scanMessage(row pgx.Row) (*chatstream.Message, error) {
	var m chatstream.Message
	var code, msg, reason, model *string
	var parts []byte
	var prompt, completion *int
	if err := row.Scan(&m.ID, &m.ConversationID, &m.Role, &m.Content, &m.Status, &code, &msg, &m.CreatedAt, &m.LastIndex,
		&reason, &parts, &model, &prompt, &completion); err != nil {
		return nil, err
	}
	if err := fillMessage(&m, reason, parts, model, prompt, completion); err != nil {
		return nil, err
	}
	if code != nil {
		m.Error = &chatstream.Failure{Code: *code}
		if msg != nil {
			m.Error.Message = *msg
		}
	}
	return &m, nil
}

// ListMessages returns the messages of conversation convID, oldest first, if
// userID owns it.
func (db *DB) ListMessages(ctx context.Context, userID, convID string) ([]*chatstream.Message, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+messageColumns+`
		FROM messages m JOIN conversations c ON c.id = m.conversation_id
		WHERE m.conversation_id = $1 AND c.user_id = $2 ORDER BY m.seq`, convID, userID)
	if err != nil {
		return nil, queryError(err, "list messages")
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*chatstream.Message, error) { return scanMessage(row) })
	if err != nil {
		return nil, queryError(err, "list messages")
	}
	return list, nil
}

// RecentMessages returns the newest limit messages of conversation convID,
// oldest first, whoever owns it: the caller has checked that.
func (db *DB) RecentMessages(ctx context.Context, convID string, limit int) ([]*chatstream.Message, error) {
	if !validID(convID) {
		return nil, nil
	}
	rows, err := db.pool.Query(ctx, `SELECT `+messageColumns+` FROM messages m
		WHERE m.id IN (SELECT id FROM messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2)
		ORDER BY m.seq`, convID, limit)
	if err != nil {
		return nil, queryError(err, "recent messages")
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*chatstream.Message, error) { return scanMessage(row) })
	if err != nil {
		return nil, queryError(err, "recent messages")
	}
	return list, nil
}

// History returns the messages of conversation convID written before message
// beforeID, the newest limit of them, oldest first: the prompt of the
// generation that writes beforeID. A beforeID that is not (yet) a message of
// convID gives a not_found error.
func (db *DB) History(ctx context.Context, convID, beforeID string, limit int) ([]*chatstream.Message, error) {
	if !validID(convID) || !validID(beforeID) {
		return nil, notFound("Message")
	}
	// One statement: the target row decides between "no history" (one row
	// of NULLs) and "no such message" (no row).
	rows, err := db.pool.Query(ctx, `WITH target AS (
			SELECT seq FROM messages WHERE id = $2 AND conversation_id = $1)
		SELECT h.id, h.conversation_id, h.role, h.content, h.status, h.error_code, h.error_message, h.created_at, h.last_index,
		       h.finish_reason, h.parts, h.model, h.prompt_tokens, h.completion_tokens
		FROM target LEFT JOIN LATERAL (
			SELECT `+messageColumns+`, m.seq FROM messages m
			WHERE m.conversation_id = $1 AND m.seq < target.seq
			ORDER BY m.seq DESC LIMIT $3) h ON true
		ORDER BY h.seq`, convID, beforeID, limit)
	if err != nil {
		return nil, queryError(err, "history of %s", beforeID)
	}
	found := false
	var list []*chatstream.Message
	for rows.Next() {
		found = true
		var id, conv, role, content, status *string
		var code, msg, reason, model *string
		var created *time.Time
		var last *int64
		var parts []byte
		var prompt, completion *int
		if err := rows.Scan(&id, &conv, &role, &content, &status, &code, &msg, &created, &last, &reason, &parts, &model, &prompt, &completion); err != nil {
			rows.Close()
			return nil, queryError(err, "history of %s", beforeID)
		}
		if id == nil {
			continue // the target exists and has no history
		}
		m := &chatstream.Message{ID: *id, ConversationID: *conv, Role: chatstream.Role(*role), Content: *content,
			Status: chatstream.Status(*status), CreatedAt: *created, LastIndex: *last}
		if err := fillMessage(m, reason, parts, model, prompt, completion); err != nil {
			rows.Close()
			return nil, queryError(err, "history of %s", beforeID)
		}
		if code != nil {
			m.Error = &chatstream.Failure{Code: *code}
			if msg != nil {
				m.Error.Message = *msg
			}
		}
		list = append(list, m)
	}
	if err := rows.Err(); err != nil {
		return nil, queryError(err, "history of %s", beforeID)
	}
	if !found {
		return nil, notFound("Message")
	}
	return list, nil
}

// FindMessage returns message id if userID owns its conversation, else a
// not_found error.
func (db *DB) FindMessage(ctx context.Context, userID, id string) (*chatstream.Message, error) {
	if !validID(id) {
		return nil, notFound("Message")
	}
	m, err := scanMessage(db.pool.QueryRow(ctx, `SELECT `+messageColumns+`
		FROM messages m JOIN conversations c ON c.id = m.conversation_id
		WHERE m.id = $1 AND c.user_id = $2`, id, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("Message")
	} else if err != nil {
		return nil, queryError(err, "find message %s", id)
	}
	return m, nil
}

// Message returns message id whoever owns it; callers have checked access.
func (db *DB) Message(ctx context.Context, id string) (*chatstream.Message, error) {
	if !validID(id) {
		return nil, notFound("Message")
	}
	m, err := scanMessage(db.pool.QueryRow(ctx, `SELECT `+messageColumns+` FROM messages m WHERE m.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("Message")
	} else if err != nil {
		return nil, queryError(err, "message %s", id)
	}
	return m, nil
}

// fillMessage sets the columns that may be NULL on m.
func fillMessage(m *chatstream.Message, reason *string, parts []byte, model *string, prompt, completion *int) error {
	if reason != nil {
		m.FinishReason = *reason
	}
	if model != nil {
		m.Model = *model
	}
	if prompt != nil || completion != nil {
		u := chatstream.Usage{}
		if prompt != nil {
			u.PromptTokens = *prompt
		}
		if completion != nil {
			u.CompletionTokens = *completion
		}
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
		m.Usage = &u
	}
	if parts != nil {
		if err := json.Unmarshal(parts, &m.Parts); err != nil {
			return fmt.Errorf("parts of message %s: %w", m.ID, err)
		}
	}
	return nil
}
