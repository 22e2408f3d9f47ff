package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/chatstream/chatstream"
)

// Branches. A conversation is a tree of messages by parent_id; a branch is
// the path from one of its messages up to a root. Every read of one is a
// single statement: a recursive walk up parent_id, one primary-key lookup a
// step, stopped after the rows asked for (see docs/ARCHITECTURE.md for its
// plan on a conversation of 10,000 messages).

// branchQuery walks up from message $2 of conversation $1 (from itself, or
// from its parent when $4 is false) and returns the first $3 messages met,
// oldest first. The walk carries whole rows, so that reading them is no
// second join (which the planner would make a hash join over all of
// messages once the page is large). The row of NULLs that the outer join
// gives when the start exists but the walk finds nothing tells "no message"
// from "no such start".
const branchQuery = `WITH RECURSIVE start AS (
		SELECT CASE WHEN $4::bool THEN s.id ELSE s.parent_id END AS id
		FROM messages s WHERE s.id = $2 AND s.conversation_id = $1
	), branch AS (
		SELECT b.*, 1 AS depth FROM messages b JOIN start ON b.id = start.id
		UNION ALL
		SELECT p.*, branch.depth + 1 FROM branch JOIN messages p ON p.id = branch.parent_id
	), page AS (
		SELECT * FROM branch LIMIT $3
	)
	SELECT ` + messageColumns + `
	FROM start LEFT JOIN page m ON true
	ORDER BY m.depth DESC`

// branch runs branchQuery. found is false when from is not a message of
// convID.
func (db *DB) branch(ctx context.Context, convID, from string, inclusive bool, limit int) (msgs []*chatstream.Message, found bool, err error) {
	if !validID(convID) || !validID(from) {
		return nil, false, nil
	}
	rows, err := db.pool.Query(ctx, branchQuery, convID, from, limit, inclusive)
	if err != nil {
		return nil, false, queryError(err, "branch of %s", from)
	}
	defer rows.Close()
	for rows.Next() {
		found = true
		m, err := scanMessage(rows)
		if err != nil {
			return nil, false, queryError(err, "branch of %s", from)
		}
		if m != nil {
			msgs = append(msgs, m)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, queryError(err, "branch of %s", from)
	}
	return msgs, found, nil
}

// BranchPage returns the newest limit messages of the current branch of
// conversation convID, older than message before (empty: from the branch's
// leaf on), if userID owns the conversation. A before that is not a message
// of the conversation is not_found.
func (db *DB) BranchPage(ctx context.Context, userID, convID, before string, limit int) (*chatstream.Conversation, *chatstream.MessagePage, error) {
	conv, err := db.FindConversation(ctx, userID, convID)
	if err != nil {
		return nil, nil, err
	}
	from, inclusive := before, false
	if from == "" {
		if from, inclusive = conv.CurrentMessageID, true; from == "" {
			return conv, &chatstream.MessagePage{Messages: []*chatstream.Message{}}, nil
		}
	}
	msgs, found, err := db.branch(ctx, conv.ID, from, inclusive, limit+1)
	if err != nil {
		return nil, nil, err
	}
	if !found {
		return nil, nil, notFound("Message")
	}
	p := &chatstream.MessagePage{Messages: msgs}
	if len(msgs) > limit {
		p.Messages, p.HasMore = msgs[1:], true
	}
	if p.Messages == nil {
		p.Messages = []*chatstream.Message{}
	}
	return conv, p, nil
}

// History returns the messages on the branch of message beforeID before it,
// the newest limit of them, oldest first: the prompt of the generation that
// writes beforeID. A beforeID that is not (yet) a message of convID gives a
// not_found error.
func (db *DB) History(ctx context.Context, convID, beforeID string, limit int) ([]*chatstream.Message, error) {
	msgs, found, err := db.branch(ctx, convID, beforeID, false, limit)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("Message")
	}
	return msgs, nil
}

// RecentMessages returns the newest limit messages of the current branch of
// conversation convID, oldest first, whoever owns it: the caller has
// checked that.
func (db *DB) RecentMessages(ctx context.Context, convID string, limit int) ([]*chatstream.Message, error) {
	if !validID(convID) {
		return nil, nil
	}
	var leaf *string
	err := db.pool.QueryRow(ctx, `SELECT current_message_id::text FROM conversations WHERE id = $1`, convID).Scan(&leaf)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil // deleted
	} else if err != nil {
		return nil, queryError(err, "recent messages of %s", convID)
	}
	if leaf == nil {
		return nil, nil
	}
	msgs, _, err := db.branch(ctx, convID, *leaf, true, limit)
	return msgs, err
}
