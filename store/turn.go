package store

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/chatstream/chatstream"
)

var (
	errBusy           = chatstream.Errorf(chatstream.ECONFLICT, "An answer is still being generated in this conversation.")
	errClientIDInUse  = chatstream.Errorf(chatstream.ECONFLICT, "That client_message_id was used in another conversation.")
	errNotUserMessage = chatstream.Errorf(chatstream.EINVALID, "Only a user message can be edited.")
	errNotAnswer      = chatstream.Errorf(chatstream.EINVALID, "Only an assistant message can be regenerated.")
)

// answerOf is what client_messages keeps of a turn: the messages it
// answered with.
type answerOf struct {
	User      *chatstream.Message `json:"user_message"`
	Assistant *chatstream.Message `json:"assistant_message"`
}

// ClientMessage returns what the turn that userID sent with client message
// id answered, and its conversation; nil if there is none.
func (db *DB) ClientMessage(ctx context.Context, userID, id string) (*chatstream.Started, string, error) {
	return clientMessage(ctx, db.pool, userID, id)
}

// clientMessage is ClientMessage through q (the pool, or a transaction).
func clientMessage(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, userID, id string) (*chatstream.Started, string, error) {
	var conv string
	var raw []byte
	err := q.QueryRow(ctx, `SELECT conversation_id::text, answer FROM client_messages WHERE user_id = $1 AND client_message_id = $2`,
		userID, id).Scan(&conv, &raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", nil
	} else if err != nil {
		return nil, "", queryError(err, "client message %s", id)
	}
	var a answerOf
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, "", queryError(err, "client message %s", id)
	}
	return &chatstream.Started{User: a.User, Assistant: a.Assistant, Repeat: true}, conv, nil
}

// CreateExchange sends content to conversation convID: a convenience for
// StartTurn with nothing to do in the transaction.
func (db *DB) CreateExchange(ctx context.Context, userID, convID, content string) (user, assistant *chatstream.Message, err error) {
	s, err := db.StartTurn(ctx, chatstream.Turn{Kind: chatstream.TurnSend, UserID: userID, ConversationID: convID, Content: content}, nil)
	if err != nil {
		return nil, nil, err
	}
	return s.User, s.Assistant, nil
}

// StartTurn writes, in one transaction, the messages of a send, edit or
// regenerate — the user message (none for a regenerate) and the streaming
// assistant message that will answer it — and makes the answer the
// conversation's current leaf. It calls then, if not nil, inside the
// transaction once both are written, and commits only if it succeeds: the
// generation queues its job there, so that a message is never stored
// without its job, and a job whose transaction did not commit finds no
// message and ends.
//
// A conversation runs one generation at a time: while one is open it
// returns a conflict error. A turn with a client message id the user used
// before in the same conversation writes nothing and returns what that one
// answered (Repeat); used in another conversation it is a conflict.
func (db *DB) StartTurn(ctx context.Context, t chatstream.Turn, then func(user, assistant *chatstream.Message) error) (*chatstream.Started, error) {
	if t.ClientMessageID != "" && !chatstream.ValidClientMessageID(t.ClientMessageID) {
		return nil, chatstream.Errorf(chatstream.EINVALID, "Field \"client_message_id\" must be 1 to 64 of A-Z a-z 0-9 _ -.")
	}
	var started *chatstream.Started
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		conv, parent, userMsg, err := db.turnPlace(ctx, tx, t)
		if err != nil {
			return err
		}
		convID := conv.ID
		if t.ClientMessageID != "" {
			// After the conversation's lock: a repeat racing its first
			// sees it committed.
			first, conv, err := clientMessage(ctx, tx, t.UserID, t.ClientMessageID)
			switch {
			case err != nil:
				return err
			case first != nil && conv != convID:
				return errClientIDInUse
			case first != nil:
				started = first
				return nil
			}
		}
		insert := `INSERT INTO messages (id, conversation_id, role, content, status, parent_id, client_message_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`
		ids := []string{}
		if t.Kind != chatstream.TurnRegenerate {
			userMsg = newID()
			var clientID *string
			if t.ClientMessageID != "" {
				clientID = &t.ClientMessageID
			}
			if _, err := tx.Exec(ctx, insert, userMsg, convID, chatstream.RoleUser, t.Content, chatstream.StatusComplete, parent, clientID); err != nil {
				return queryError(err, "insert user message")
			}
			ids = append(ids, userMsg)
		}
		answer := newID()
		_, err = tx.Exec(ctx, insert, answer, convID, chatstream.RoleAssistant, "", chatstream.StatusStreaming, userMsg, nil)
		if isCode(err, codeUniqueViolation) {
			return errBusy
		} else if err != nil {
			return queryError(err, "insert assistant message")
		}
		ids = append(ids, answer)
		if _, err = tx.Exec(ctx, `UPDATE conversations SET current_message_id = $2, updated_at = now() WHERE id = $1`, convID, answer); err != nil {
			return queryError(err, "move conversation %s", convID)
		}
		msgs, err := messagesByID(ctx, tx, ids...)
		if err != nil {
			return queryError(err, "read the new messages")
		}
		conv.CurrentMessageID = answer
		s := &chatstream.Started{Assistant: msgs[len(msgs)-1], Conversation: conv}
		if t.Kind != chatstream.TurnRegenerate {
			s.User = msgs[0]
		}
		if t.ClientMessageID != "" {
			raw, _ := json.Marshal(answerOf{User: s.User, Assistant: s.Assistant})
			_, err := tx.Exec(ctx, `INSERT INTO client_messages (user_id, client_message_id, conversation_id, answer) VALUES ($1, $2, $3, $4)`,
				t.UserID, t.ClientMessageID, convID, raw)
			if isCode(err, codeUniqueViolation) {
				return errClientIDInUse // taken meanwhile, in another conversation
			} else if err != nil {
				return queryError(err, "insert client message %s", t.ClientMessageID)
			}
		}
		if then != nil {
			if err := then(s.User, s.Assistant); err != nil {
				return err
			}
		}
		started = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	return started, nil
}

// turnPlace locks the conversation of turn t and returns it, the parent of
// the turn's user message (nil: a root) and, for a regenerate, the user
// message the new answer answers.
func (db *DB) turnPlace(ctx context.Context, tx pgx.Tx, t chatstream.Turn) (conv *chatstream.Conversation, parent *string, userMsg string, err error) {
	convID := t.ConversationID
	if t.Kind != chatstream.TurnSend {
		if !validID(t.MessageID) {
			return nil, nil, "", notFound("Message")
		}
		var role string
		var p *string
		err := tx.QueryRow(ctx, `SELECT m.conversation_id::text, m.role, m.parent_id::text
			FROM messages m JOIN conversations c ON c.id = m.conversation_id
			WHERE m.id = $1 AND c.user_id = $2`, t.MessageID, t.UserID).Scan(&convID, &role, &p)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil, "", notFound("Message")
		} else if err != nil {
			return nil, nil, "", queryError(err, "find message %s", t.MessageID)
		}
		switch {
		case t.Kind == chatstream.TurnEdit && role != string(chatstream.RoleUser):
			return nil, nil, "", errNotUserMessage
		case t.Kind == chatstream.TurnRegenerate && role != string(chatstream.RoleAssistant):
			return nil, nil, "", errNotAnswer
		case t.Kind == chatstream.TurnRegenerate && p == nil:
			return nil, nil, "", errNotAnswer // an answer always has its question
		case t.Kind == chatstream.TurnRegenerate:
			userMsg = *p
		}
		parent = p
	}
	if !validID(convID) {
		return nil, nil, "", notFound("Conversation")
	}
	// Lock the conversation row so that concurrent turns take turns; the
	// unique index on open messages is the guarantee behind the check.
	conv, err = scanConversation(tx.QueryRow(ctx, `SELECT `+conversationColumns+` FROM conversations c
		WHERE c.id = $1 AND c.user_id = $2 FOR UPDATE`, convID, t.UserID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, "", notFound("Conversation")
	} else if err != nil {
		return nil, nil, "", queryError(err, "lock conversation %s", convID)
	}
	if leaf := conv.CurrentMessageID; t.Kind == chatstream.TurnSend && leaf != "" {
		parent = &leaf
	}
	return conv, parent, userMsg, nil
}
