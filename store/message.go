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

// siblingIDs is the SQL of the sibling ids of message m, oldest first: the
// children of its parent, or the roots of its conversation. Each is one
// index range (messages_parent_seq_idx, messages_roots_idx).
const siblingIDs = `CASE WHEN m.parent_id IS NULL
	THEN ARRAY(SELECT s.id::text FROM messages s WHERE s.conversation_id = m.conversation_id AND s.parent_id IS NULL ORDER BY s.seq)
	ELSE ARRAY(SELECT s.id::text FROM messages s WHERE s.parent_id = m.parent_id ORDER BY s.seq) END`

// messageColumns are the columns of a message as scanMessage reads them.
const messageColumns = `m.id, m.conversation_id, m.role, m.content, m.status, m.error_code, m.error_message, m.created_at,
	m.last_index, m.finish_reason, m.parts, m.model, m.prompt_tokens, m.completion_tokens,
	m.parent_id, m.client_message_id, ` + siblingIDs

// scanMessage reads the messageColumns of a row. A row of NULLs (an outer
// join that found nothing) gives nil.
func scanMessage(row pgx.Row) (*chatstream.Message, error) {
	var id, conv, role, content, status *string
	var code, msg, reason, model, parent, clientID *string
	var created *time.Time
	var last *int64
	var parts []byte
	var prompt, completion *int
	var siblings []string
	if err := row.Scan(&id, &conv, &role, &content, &status, &code, &msg, &created, &last, &reason, &parts, &model,
		&prompt, &completion, &parent, &clientID, &siblings); err != nil {
		return nil, err
	}
	if id == nil {
		return nil, nil
	}
	m := &chatstream.Message{ID: *id, ConversationID: *conv, Role: chatstream.Role(*role), Content: *content,
		Status: chatstream.Status(*status), CreatedAt: *created, LastIndex: *last, SiblingIDs: siblings}
	if parent != nil {
		m.ParentID = *parent
	}
	if clientID != nil {
		m.ClientMessageID = *clientID
	}
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
			return nil, fmt.Errorf("parts of message %s: %w", m.ID, err)
		}
	}
	if code != nil {
		m.Error = &chatstream.Failure{Code: *code}
		if msg != nil {
			m.Error.Message = *msg
		}
	}
	return m, nil
}

// collectMessages reads the rows of a query of messageColumns, skipping
// rows of NULLs.
func collectMessages(rows pgx.Rows) ([]*chatstream.Message, error) {
	defer rows.Close()
	var list []*chatstream.Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, err
		}
		if m != nil {
			list = append(list, m)
		}
	}
	return list, rows.Err()
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

// messagesByID reads messages ids, in that order, through q (inside a
// transaction: it sees the transaction's own rows).
func messagesByID(ctx context.Context, q pgx.Tx, ids ...string) ([]*chatstream.Message, error) {
	rows, err := q.Query(ctx, `SELECT `+messageColumns+` FROM messages m WHERE m.id = ANY($1::uuid[])`, ids)
	if err != nil {
		return nil, err
	}
	list, err := collectMessages(rows)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*chatstream.Message, len(list))
	for _, m := range list {
		byID[m.ID] = m
	}
	out := make([]*chatstream.Message, len(ids))
	for i, id := range ids {
		if out[i] = byID[id]; out[i] == nil {
			return nil, fmt.Errorf("message %s not found", id)
		}
	}
	return out, nil
}
