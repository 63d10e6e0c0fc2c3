-- Names that differ only in case or compatibility forms (Alice, alice, ａｌｉｃｅ) cannot both
-- exist: `fold` holds each name's NFKC lower case, computed by token-issuer (rows from before
-- this migration are filled in at start-up), and is unique where set.
ALTER TABLE users ADD COLUMN fold TEXT;
ALTER TABLE user_groups ADD COLUMN fold TEXT;
CREATE UNIQUE INDEX users_fold ON users (fold);
CREATE UNIQUE INDEX user_groups_fold ON user_groups (fold);
