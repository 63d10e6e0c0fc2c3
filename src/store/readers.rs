//! Connections kept for the one read a cold login makes (`Store::account`), outside sqlx's
//! pool.
//!
//! Why not the pool: each pooled query costs two extra trips to the connection besides the
//! query itself — a ping when the connection is taken (`test_before_acquire`) and another in a
//! spawned task when it is given back. For SQLite every trip is a hand-off to the connection's
//! own thread and back, so a cold login paid three thread switches where one does the work; in
//! the roll-out bench the pool's worker threads were a third of the issuer's CPU, most of it the
//! kernel switching threads. Here a connection is taken from a stack, runs the query, and goes
//! back: one trip.
//!
//! What the pings were for — finding a connection a restarted PostgreSQL closed — is done
//! after the fact instead: a read that fails on a kept connection is retried once on a fresh
//! one (the read changes nothing, so retrying is safe), and every kept connection is dropped,
//! since a restart closes them all. A database that is down fails the fresh connect at once.
//! Writes and the admin API keep the pool and its pings.

use std::sync::Mutex;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection};
use tokio::sync::Semaphore;

/// Reads at once, and connections kept: enough for the cores here to keep SQLite busy and
/// few enough that PostgreSQL's `max_connections` keeps room for the pool's 16 and replicas.
pub(crate) const READERS: usize = 4;

pub(crate) struct Readers {
    url: String,
    idle: Mutex<Vec<AnyConnection>>,
    permits: Semaphore,
}

impl Readers {
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            idle: Mutex::new(Vec::with_capacity(READERS)),
            permits: Semaphore::new(READERS),
        }
    }

    /// Every row `sql` returns with `name` bound as `$1`. The caller bounds the wait
    /// (`Store::timed`); a call given up mid-query drops its connection rather than keep one
    /// in an unknown state.
    pub(crate) async fn fetch_all(
        &self,
        sql: &'static str,
        name: &str,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        if let Some(mut conn) = self.take() {
            match sqlx::query(sql).bind(name).fetch_all(&mut conn).await {
                Ok(rows) => {
                    self.put(conn);
                    return Ok(rows);
                }
                // Whatever closed this one closed the others too.
                Err(_) => self.clear(),
            }
        }
        let mut conn = AnyConnection::connect(&self.url).await?;
        let rows = sqlx::query(sql).bind(name).fetch_all(&mut conn).await?;
        self.put(conn);
        Ok(rows)
    }

    fn take(&self) -> Option<AnyConnection> {
        self.idle.lock().ok()?.pop()
    }

    fn put(&self, conn: AnyConnection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < READERS {
                idle.push(conn);
            }
        }
    }

    fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Connections kept now (for tests).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }
}
