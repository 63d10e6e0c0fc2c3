-- When a store user and a refresh token were last used (Unix seconds; NULL: never since this
-- column exists). Written at most once a minute per account, from uses noted in memory.
ALTER TABLE users ADD COLUMN last_used_at BIGINT;
ALTER TABLE refresh_tokens ADD COLUMN last_used_at BIGINT;
