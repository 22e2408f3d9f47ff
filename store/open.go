package store

import (
	"context"
	"fmt"
	"time"

	"github.com/chatstream/chatstream"
)

// openMessagesQuery: $1 created before, $2 limit.
const openMessagesQuery = `SELECT m.id, m.conversation_id, c.user_id
	FROM messages m JOIN conversations c ON c.id = m.conversation_id
	WHERE m.status IN ('pending', 'streaming') AND m.created_at < $1
	ORDER BY m.created_at LIMIT $2`

// OpenMessages returns, as jobs, up to limit answers still open (pending or
// streaming) that were created before before, oldest first: what the
// workers' sweep checks against the chunk logs. The scan is of the open
// messages alone (messages_one_open_idx holds exactly them).
func (db *DB) OpenMessages(ctx context.Context, before time.Time, limit int) ([]chatstream.Job, error) {
	rows, err := db.pool.Query(ctx, openMessagesQuery, before, limit)
	if err != nil {
		return nil, fmt.Errorf("open messages: %w", err)
	}
	defer rows.Close()
	var jobs []chatstream.Job
	for rows.Next() {
		var j chatstream.Job
		if err := rows.Scan(&j.StreamID, &j.ConversationID, &j.UserID); err != nil {
			return nil, fmt.Errorf("open messages: %w", err)
		}
		jobs = append(jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("open messages: %w", err)
	}
	return jobs, nil
}
