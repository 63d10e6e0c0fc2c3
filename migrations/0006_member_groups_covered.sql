-- A cold login reads a user's groups twice (their names, and the groups whose grants apply) by
-- members.user_name. With the group's name in the index too, each read is the index alone, not
-- the index and then the table: at a million members that is half the B-tree descents of the
-- groups' part of the read (docs/speed.md, "Store size").
DROP INDEX members_user;
CREATE INDEX members_user ON members (user_name, group_name);
