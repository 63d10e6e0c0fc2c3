-- Refresh tokens (OAuth2 offline access). Only a SHA-256 of each token is kept; `binding`
-- ties a local or store user's token to the password hash it was issued under (a changed
-- password ends it), and `sealed` holds an upstream identity's credential encrypted under a
-- key derived from the token itself, so the database alone can open neither.
CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_name TEXT NOT NULL,
    source TEXT NOT NULL,
    client_id TEXT NOT NULL,
    binding TEXT NOT NULL,
    sealed TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX refresh_tokens_user ON refresh_tokens (user_name, created_at);
