-- When a store user and a refresh token were last used (Unix seconds; NULL: never since this
-- column exists). Written at most once a minute per account, from uses noted in memory.
ALTER TABLE users ADD COLUMN last_used_at BIGINT;
ALTER TABLE refresh_tokens ADD COLUMN last_used_at BIGINT;
-- When last use began to be recorded ('last_used_since', set at the first start with this
-- column): an account with no last use counts as idle from then or its creation, whichever is
-- later, not from a creation that predates the recording.
CREATE TABLE store_meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
