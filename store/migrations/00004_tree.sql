-- +goose Up
-- Messages form a tree: parent_id is the message before a message on its
-- branch (NULL for a conversation's first messages: a first question and
-- its edits). Every v1 conversation becomes one branch: each message's
-- parent is the one before it.
ALTER TABLE messages ADD COLUMN parent_id uuid REFERENCES messages (id) ON DELETE CASCADE;
UPDATE messages AS m SET parent_id = p.prev
FROM (SELECT id, lag(id) OVER (PARTITION BY conversation_id ORDER BY seq) AS prev FROM messages) AS p
WHERE p.id = m.id AND p.prev IS NOT NULL;
-- Siblings in creation order: the children of a message, and the roots of
-- a conversation.
CREATE INDEX messages_parent_seq_idx ON messages (parent_id, seq);
CREATE INDEX messages_roots_idx ON messages (conversation_id, seq) WHERE parent_id IS NULL;
-- The leaf of the branch a conversation shows (NULL: no message yet).
ALTER TABLE conversations ADD COLUMN current_message_id uuid REFERENCES messages (id) ON DELETE SET NULL;
UPDATE conversations AS c SET current_message_id =
    (SELECT id FROM messages WHERE conversation_id = c.id ORDER BY seq DESC LIMIT 1);
-- The id a client gave a user message, and the answer the send (or edit)
-- that wrote it gave: a repeat of the id by the same user is answered with
-- it, for as long as the conversation exists.
ALTER TABLE messages ADD COLUMN client_message_id text;
CREATE TABLE client_messages (
    user_id           text        NOT NULL,
    client_message_id text        NOT NULL CHECK (client_message_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    conversation_id   uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    answer            jsonb       NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_message_id)
);
CREATE INDEX client_messages_conversation_idx ON client_messages (conversation_id);

-- +goose Down
DROP TABLE client_messages;
ALTER TABLE messages DROP COLUMN client_message_id;
ALTER TABLE conversations DROP COLUMN current_message_id;
DROP INDEX messages_roots_idx;
DROP INDEX messages_parent_seq_idx;
ALTER TABLE messages DROP COLUMN parent_id;
