-- A cold login reads a user's groups twice (their names, and the groups whose grants apply) by
-- members.user_name. With the group's name in the index too, each read is the index alone, not
-- the index and then the table: at a million members that is half the B-tree descents of the
-- groups' part of the read (docs/speed.md, "Store size"). The new index is built before the old
-- one is dropped: building takes a lock that lets reads go on, dropping one that stops them,
-- held to the end of the migration's transaction, which is then at once.
CREATE INDEX members_user_group ON members (user_name, group_name);
DROP INDEX members_user;
