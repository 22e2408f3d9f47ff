-- +goose Up
-- An assistant message's parts (text, reasoning, tool calls, approvals,
-- results) as a JSON array of objects with a "type"; the code validates the
-- rest of the schema before it writes. NULL: the message is its content as
-- one text part (user messages, answers of text alone, and every message
-- written before parts), i.e. COALESCE(parts, jsonb_build_array(
-- jsonb_build_object('type', 'text', 'text', content))) where content <> ''.
ALTER TABLE messages ADD COLUMN parts jsonb
    CHECK (parts IS NULL OR jsonb_typeof(parts) = 'array');
-- The model that answered.
ALTER TABLE messages ADD COLUMN model text;

-- +goose Down
ALTER TABLE messages DROP COLUMN model;
ALTER TABLE messages DROP COLUMN parts;
