-- +goose Up
-- The AI SDK's chat ids: each names one of its user's conversations (made
-- on the chat's first request, or the user's conversation of that id).
CREATE TABLE ai_sdk_chats (
    user_id         text        NOT NULL,
    chat_id         text        NOT NULL CHECK (char_length(chat_id) BETWEEN 1 AND 128),
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, chat_id)
);
CREATE INDEX ai_sdk_chats_conversation_idx ON ai_sdk_chats (conversation_id);

-- +goose Down
DROP TABLE ai_sdk_chats;
