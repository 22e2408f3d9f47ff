package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/chatstream/chatstream"
)

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
