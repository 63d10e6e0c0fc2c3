//! The schema's migrations, embedded in the binary.
//!
//! Listed here by hand rather than with sqlx's `migrate!` macro: the macro needs sqlx's
//! `macros` feature, which builds a second copy of sqlx, its drivers and SQLite's C source for
//! the compiler's own use, several minutes of every clean build (docs/testing.md, "How long
//! CI takes"). The values are what the macro makes of the same files: version and description
//! from the file name, the SQL as written (its SHA-384 is the checksum recorded in
//! `_sqlx_migrations`, so databases migrated by earlier builds validate unchanged). A unit test
//! checks that every file in `migrations/` is listed, and listed as its name says.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// (version, description, SQL), in order. A new migration is a new file and a new line here.
pub(super) const FILES: [(i64, &str, &str); 7] = [
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (
        2,
        "refresh tokens",
        include_str!("../../migrations/0002_refresh_tokens.sql"),
    ),
    (
        3,
        "name folds",
        include_str!("../../migrations/0003_name_folds.sql"),
    ),
    (
        4,
        "grant services",
        include_str!("../../migrations/0004_grant_services.sql"),
    ),
    (
        5,
        "last used",
        include_str!("../../migrations/0005_last_used.sql"),
    ),
    (
        6,
        "member groups covered",
        include_str!("../../migrations/0006_member_groups_covered.sql"),
    ),
    (
        7,
        "users expires at",
        include_str!("../../migrations/0007_users_expires_at.sql"),
    ),
];

pub(super) fn migrator() -> Migrator {
    let migrations = FILES
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                sql.starts_with("-- no-transaction"),
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::FILES;

    /// Every file in `migrations/` is listed, with the version and description sqlx's own reader
    /// takes from its name (`0003_name_folds.sql`: 3, "name folds"), and the file's text.
    #[test]
    fn every_migration_file_is_listed_as_its_name_says() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("migrations/") {
            let name = entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8 name");
            let (version, rest) = name.split_once('_').expect("VERSION_DESCRIPTION.sql");
            let description = rest.strip_suffix(".sql").expect(".sql").replace('_', " ");
            let sql = std::fs::read_to_string(dir.join(&name)).expect("read");
            found.push((version.parse::<i64>().expect("version"), description, sql));
        }
        found.sort();
        let listed: Vec<_> = FILES
            .iter()
            .map(|&(v, d, s)| (v, d.to_string(), s.to_string()))
            .collect();
        assert_eq!(listed, found);
    }
}
