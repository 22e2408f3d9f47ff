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

// FinishMessage writes the final content and status of an assistant message
// in one statement. Only an open (pending or streaming) message changes: it
// returns the message as stored and whether this call ended it, so a retried
// or duplicate finish is harmless.
func (db *DB) FinishMessage(ctx context.Context, id string, f chatstream.Final) (*chatstream.Message, bool, error) {
	if !f.Status.Final() {
		return nil, false, fmt.Errorf("finish message %s: status %q is not final", id, f.Status)
	}
	var code, text *string
	if f.Failure != nil {
		code, text = &f.Failure.Code, &f.Failure.Message
	}
	var prompt, completion *int
	if f.Usage != nil {
		prompt, completion = &f.Usage.PromptTokens, &f.Usage.CompletionTokens
	}
	var reason, model *string
	if f.FinishReason != "" {
		reason = &f.FinishReason
	}
	if f.Model != "" {
		model = &f.Model
	}
	parts, err := partsJSON(f.Parts)
	if err != nil {
		// Parts that break the schema can never be stored: a refusal.
		return nil, false, &refusedError{op: "finish message " + id, err: err}
	}
	m, err := scanMessage(db.pool.QueryRow(ctx, `UPDATE messages AS m
		SET content = $2, status = $3, error_code = $4, error_message = $5,
		    prompt_tokens = $6, completion_tokens = $7, last_index = $8, finish_reason = $9,
		    parts = $10, model = $11, updated_at = now()
		WHERE id = $1 AND status IN ('pending', 'streaming')
		RETURNING `+messageColumns, id, f.Content, f.Status, code, text, prompt, completion, f.LastIndex, reason, parts, model))
	if errors.Is(err, pgx.ErrNoRows) {
		// Already final (or unknown): report what is stored.
		m, err = scanMessage(db.pool.QueryRow(ctx, `SELECT `+messageColumns+` FROM messages m WHERE m.id = $1`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, false, notFound("Message")
		} else if err != nil {
			return nil, false, queryError(err, "finish message %s", id)
		}
		return m, false, nil
	} else if err != nil {
		return nil, false, queryError(err, "finish message %s", id)
	}
	return m, true, nil
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

// partsJSON is parts as the parts column holds them, once each is checked
// against the schema. An answer of text alone (or of nothing) is NULL, as
// the messages written before parts are: its content is its one part, and
// the text is not stored twice.
func partsJSON(parts []chatstream.Part) ([]byte, error) {
	if len(parts) == 0 || (len(parts) == 1 && parts[0].Type == chatstream.PartText) {
		return nil, nil
	}
	for i, p := range parts {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("part %d: %w", i, err)
		}
	}
	return json.Marshal(parts)
}
