//! When each store user and refresh token was last used, for `users list --unused` and the
//! admin API's lists.
//!
//! Not a database write per token: a use is noted in memory (a map insert under a lock held
//! for nanoseconds) and [`Store::flush_last_used`] writes what was noted, in batched
//! transactions. `serve` flushes once a minute and at shutdown, so an account costs at most one
//! write a minute however many tokens it asks for. Replicas each note and write their own; a
//! write never moves a time backwards, so the latest use wins whichever replica saw it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{now, Result, Store};

/// Accounts (and, apart, refresh tokens) noted between two writes at most. Past it a use is
/// not noted until the next write, which a full map asks for at once: a
/// roll-out of more distinct accounts than this in a minute costs an extra write, not memory,
/// and the uses that arrive while the map is full are not recorded.
pub(super) const MAX_PENDING: usize = 100_000;
/// Rows one transaction updates: one commit (one fsync on SQLite) per batch, not per row.
const BATCH: usize = 100;
/// How long one batch may take: a row is a round trip, so a batch over a slow link to
/// PostgreSQL needs longer than one query's `QUERY_TIMEOUT`.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How often `serve` writes the uses noted.
pub(super) const EVERY: Duration = Duration::from_secs(60);

/// Uses noted since the last write (name or token id → Unix seconds), the signal that the
/// map is full, and the lock that makes flushes one at a time (so that the one at shutdown
/// waits for one already running rather than letting the process end under it).
#[derive(Default)]
pub(super) struct Pending(Mutex<Noted>, Notify, tokio::sync::Mutex<()>);

#[derive(Default)]
struct Noted {
    users: HashMap<String, i64>,
    tokens: HashMap<String, i64>,
}

/// One of the two maps of [`Noted`].
type Side = fn(&mut Noted) -> &mut HashMap<String, i64>;

fn users(n: &mut Noted) -> &mut HashMap<String, i64> {
    &mut n.users
}

fn tokens(n: &mut Noted) -> &mut HashMap<String, i64> {
    &mut n.tokens
}

/// Notes `key` used at `t`; false when the map is full and it was not noted.
fn note(map: &mut HashMap<String, i64>, key: &str, t: i64) -> bool {
    if let Some(at) = map.get_mut(key) {
        *at = (*at).max(t);
        return true;
    }
    if map.len() >= MAX_PENDING {
        return false;
    }
    map.insert(key.to_string(), t);
    true
}

/// What one flush wrote: rows updated (a row another replica had written later is not).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub users: u64,
    pub tokens: u64,
}

impl Store {
    /// Reads (writing it at the first start) when last use began to be recorded.
    pub(super) async fn note_tracking_start(&self) -> Result<()> {
        self.timed(
            sqlx::query(
                "INSERT INTO store_meta (key, value) VALUES ('last_used_since', $1) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(now())
            .execute(&self.pool),
        )
        .await?;
        let row = self
            .timed(
                sqlx::query("SELECT value FROM store_meta WHERE key = 'last_used_since'")
                    .fetch_one(&self.pool),
            )
            .await?;
        let since: i64 = super::get(&row, 0)?;
        self.last_used_since
            .store(since, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// When last use began to be recorded: an account never used counts as idle from then or
    /// its creation, whichever is later.
    pub fn last_used_since(&self) -> i64 {
        self.last_used_since
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes that the store user `name` logged in (or refreshed) now.
    pub fn note_user_used(&self, name: &str) {
        self.note_use(name, users);
    }

    /// Notes that the refresh token `id` was redeemed now.
    pub fn note_token_used(&self, id: &str) {
        self.note_use(id, tokens);
    }

    fn note_use(&self, key: &str, map: Side) {
        let noted = self
            .used
            .0
            .lock()
            .is_ok_and(|mut n| note(map(&mut n), key, now()));
        if !noted {
            // Full: write now rather than at the minute.
            self.used.1.notify_one();
        }
    }

    /// Writes the uses noted since the last call. What could not be written (the database
    /// away) is noted again for the next call, so a flush that fails loses nothing.
    pub async fn flush_last_used(&self) -> Result<Flushed> {
        let _one_at_a_time = self.used.2.lock().await;
        let taken = match self.used.0.lock() {
            Ok(mut n) => std::mem::take(&mut *n),
            Err(_) => return Ok(Flushed::default()),
        };
        // In key order: replicas writing the same rows at once lock them in the same order,
        // so PostgreSQL never finds them waiting on each other.
        let mut users: Vec<_> = taken.users.into_iter().collect();
        let mut tokens: Vec<_> = taken.tokens.into_iter().collect();
        users.sort_unstable();
        tokens.sort_unstable();
        let mut done = Flushed::default();
        let plan: [(_, _, _, Side, _); 2] = [
            (&users, "users", "name", self::users, &mut done.users),
            (
                &tokens,
                "refresh_tokens",
                "id",
                self::tokens,
                &mut done.tokens,
            ),
        ];
        let mut failed = None;
        for (rows, table, key, side, count) in plan {
            for (i, chunk) in rows.chunks(BATCH).enumerate() {
                match self.write_used(table, key, chunk).await {
                    Ok(n) => *count += n,
                    Err(e) => {
                        self.renote(side, &rows[i * BATCH..]);
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// One transaction: each row's time, unless the row already holds a later one or was made
    /// after the use (a name deleted and made again within the minute is another account).
    async fn write_used(&self, table: &str, key: &str, rows: &[(String, i64)]) -> Result<u64> {
        let sql = format!(
            "UPDATE {table} SET last_used_at = $1 WHERE {key} = $2 AND created_at <= $1 \
             AND (last_used_at IS NULL OR last_used_at < $1)"
        );
        let batch = async {
            let mut tx = self.pool.begin().await?;
            let mut n = 0;
            for (k, t) in rows {
                n += sqlx::query(&sql)
                    .bind(*t)
                    .bind(k.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n)
        };
        match tokio::time::timeout(BATCH_TIMEOUT, batch).await {
            Ok(r) => r.map_err(super::StoreError::from),
            Err(_) => Err(super::StoreError::Unavailable(format!(
                "no answer within {} s",
                BATCH_TIMEOUT.as_secs()
            ))),
        }
    }

    fn renote(&self, side: Side, rows: &[(String, i64)]) {
        if let Ok(mut n) = self.used.0.lock() {
            for (k, t) in rows {
                note(side(&mut n), k, *t);
            }
        }
    }
}

/// Writes the uses noted every [`EVERY`], or at once when the map is full, until the process
/// ends (`serve` writes once more at shutdown). A failed write is logged and retried next time.
pub fn spawn_flusher(store: Arc<Store>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = store.used.1.notified() => {}
            }
            if let Err(e) = store.flush_last_used().await {
                tracing::warn!("last use times not written (kept for the next try): {e}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &std::path::Path) -> Store {
        Store::open("sqlite://s.db", dir).await.expect("store")
    }

    #[tokio::test]
    async fn many_uses_of_one_account_are_one_write_and_times_never_go_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = store(tmp.path()).await;
        s.add_user("robot", "x", false, false, None)
            .await
            .expect("add");
        for _ in 0..1000 {
            s.note_user_used("robot");
        }
        s.note_user_used("nobody");
        let done = s.flush_last_used().await.expect("flush");
        // One row for a thousand uses; the unknown name updates nothing.
        assert_eq!(
            done,
            Flushed {
                users: 1,
                tokens: 0
            }
        );
        let at = s.user("robot").await.expect("read").expect("robot");
        let t = at.last_used_at.expect("last used");
        assert!((now() - t).abs() <= 2, "{t}");
        // Nothing noted since: nothing written.
        assert_eq!(
            s.flush_last_used().await.expect("flush"),
            Flushed::default()
        );
        // An older time (another replica's, late) does not replace a later one.
        s.renote(users, &[("robot".into(), t - 600)]);
        assert_eq!(s.flush_last_used().await.expect("flush").users, 0);
        let again = s.user("robot").await.expect("read").expect("robot");
        assert_eq!(again.last_used_at, Some(t));
    }

    #[test]
    fn the_pending_map_is_bounded() {
        let mut m = HashMap::new();
        for i in 0..MAX_PENDING {
            assert!(note(&mut m, &i.to_string(), 1));
        }
        assert!(!note(&mut m, "one more", 1), "full");
        assert!(note(&mut m, "7", 2), "a noted key is still updated");
        assert_eq!(m.get("7"), Some(&2));
        assert_eq!(m.len(), MAX_PENDING);
    }
}
