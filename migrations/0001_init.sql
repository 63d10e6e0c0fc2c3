-- Users, groups, memberships and grants. One schema for SQLite and PostgreSQL: text keys,
-- times as Unix seconds and flags as 0/1, both BIGINT (what sqlx's Any driver maps on both),
-- grant ids as text (UUIDs made by token-issuer).
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    admin BIGINT NOT NULL DEFAULT 0,
    disabled BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE user_groups (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE members (
    group_name TEXT NOT NULL REFERENCES user_groups (name) ON DELETE CASCADE,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, user_name)
);

CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    user_name TEXT REFERENCES users (name) ON DELETE CASCADE,
    group_name TEXT REFERENCES user_groups (name) ON DELETE CASCADE,
    resource_type TEXT NOT NULL,
    name TEXT NOT NULL,
    actions TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK ((user_name IS NULL) <> (group_name IS NULL))
);

CREATE INDEX grants_user ON grants (user_name);
CREATE INDEX grants_group ON grants (group_name);
CREATE INDEX members_user ON members (user_name);
