-- +goose Up
-- Why the model stopped ("stop", "length", ...); NULL for none, and for
-- every message written before it was kept.
ALTER TABLE messages ADD COLUMN finish_reason text;

-- +goose Down
ALTER TABLE messages DROP COLUMN finish_reason;
