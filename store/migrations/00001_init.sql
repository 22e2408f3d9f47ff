-- +goose Up
CREATE TABLE conversations (
    id         uuid PRIMARY KEY,
    user_id    text        NOT NULL CHECK (user_id <> ''),
    title      text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- A user's conversations, newest first.
CREATE INDEX conversations_user_created_idx ON conversations (user_id, created_at DESC, id DESC);

CREATE TABLE messages (
    id                uuid PRIMARY KEY,
    conversation_id   uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- seq orders the messages of a conversation; identity values only grow.
    seq               bigint      GENERATED ALWAYS AS IDENTITY,
    role              text        NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content           text        NOT NULL DEFAULT '',
    status            text        NOT NULL CHECK (status IN ('pending', 'streaming', 'complete', 'cancelled', 'failed')),
    error_code        text,
    error_message     text,
    prompt_tokens     integer,
    completion_tokens integer,
    -- last_index is the index of the last chunk of an assistant message's
    -- stream (-1: none), kept so that a resume after the chunk log expired
    -- can be answered with a snapshot that ends where the stream ended.
    last_index        integer     NOT NULL DEFAULT -1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- A conversation's messages in order.
CREATE INDEX messages_conversation_seq_idx ON messages (conversation_id, seq);
-- A conversation runs one generation at a time: at most one open message.
CREATE UNIQUE INDEX messages_one_open_idx ON messages (conversation_id) WHERE status IN ('pending', 'streaming');

-- +goose Down
DROP TABLE messages;
DROP TABLE conversations;
