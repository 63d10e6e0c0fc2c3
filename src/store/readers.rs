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
//! after the fact instead: a read that fails on a kept connection with a connection error is
//! retried once on a fresh one (the read changes nothing, so retrying is safe), and every kept
//! connection is dropped, since a restart closes them all. A connection idle for a minute is
//! not reused (a firewall may have forgotten it). Writes and the admin API keep the pool and
//! its pings.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection};
use tokio::sync::Semaphore;

/// Reads at once, and connections kept, on SQLite: its reads are CPU on this machine, and more
/// connections than cores only add threads (16 did no better than 4 in the roll-out bench).
const SQLITE_READERS: usize = 4;
/// The same on PostgreSQL, where a read is mostly a network round trip, so more may be in
/// flight; few enough that `max_connections` keeps room for the pool's 16 and the replicas.
const POSTGRES_READERS: usize = 8;
/// A kept connection idle longer is closed rather than used: a NAT or firewall that dropped it
/// silently would otherwise cost the next login the whole query timeout.
const MAX_IDLE: Duration = Duration::from_secs(60);
/// How long opening a connection may take: a database that went away turns into 503s this
/// soon, as the pool's acquire timeout does for its callers.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// PostgreSQL gives up a reader's statement itself after this (below `Store::timed`'s 3 s): a
/// login that stopped waiting must not leave the server working for it.
const PG_STATEMENT_TIMEOUT: &str = "SET statement_timeout = 2500";

pub(crate) struct Readers {
    url: String,
    postgres: bool,
    idle: Mutex<Vec<(AnyConnection, Instant)>>,
    permits: Semaphore,
    /// How many connections are kept (and reads run at once).
    size: usize,
}

impl Readers {
    pub(crate) fn new(url: String, postgres: bool) -> Self {
        let size = if postgres {
            POSTGRES_READERS
        } else {
            SQLITE_READERS
        };
        Self {
            url,
            postgres,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
            size,
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
                Err(e) if connection_lost(&e) => {
                    tracing::info!("store: a kept connection was closed ({e}); reconnecting");
                    self.lock().clear();
                }
                Err(e) => return Err(e),
            }
        }
        let mut conn = self.connect().await?;
        let rows = sqlx::query(sql).bind(name).fetch_all(&mut conn).await?;
        self.put(conn);
        Ok(rows)
    }

    async fn connect(&self) -> Result<AnyConnection, sqlx::Error> {
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(&self.url))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        if self.postgres {
            sqlx::query(PG_STATEMENT_TIMEOUT).execute(&mut conn).await?;
        }
        Ok(conn)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(AnyConnection, Instant)>> {
        // The stack is valid whatever a panicking holder was doing: keep using it.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Option<AnyConnection> {
        self.take_at(Instant::now())
    }

    /// The most recently used connection, closing first every one idle too long at `now`.
    fn take_at(&self, now: Instant) -> Option<AnyConnection> {
        let mut idle = self.lock();
        idle.retain(|(_, at)| now.saturating_duration_since(*at) < MAX_IDLE);
        idle.pop().map(|(conn, _)| conn)
    }

    fn put(&self, conn: AnyConnection) {
        let mut idle = self.lock();
        if idle.len() < self.size {
            idle.push((conn, Instant::now()));
        }
    }

    /// Connections kept now (for tests).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.lock().len()
    }

    /// Takes a connection as if `idle` had passed since the last use (for tests).
    #[cfg(test)]
    pub(crate) fn take_after(&self, idle: Duration) -> bool {
        self.take_at(Instant::now() + idle).is_some()
    }
}

/// Whether `e` says the connection is gone (so a fresh one may succeed), not that the query
/// failed: an I/O or protocol error, or PostgreSQL's connection exception (class 08) or
/// operator intervention (57P: a shutdown or a terminated backend).
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}
