//! The audit log: one JSON line per token decision (docs/observability.md, "The audit log", has the format),
//! to a file or to standard error.
//!
//! A request serializes its line and appends it to a shared buffer; one writer thread takes the
//! whole buffer every few milliseconds and writes it in one go. So a request makes no system
//! call and wakes nobody but for the first line of a batch, and the disk sees large writes. The
//! buffer is bounded: past it, requests wait for the writer (no decision goes unrecorded, and a
//! stuck disk cannot grow memory without end). The writer rotates by size when
//! `audit.max_size_mb` is set, and reopens the file on SIGHUP for the platform's log rotation.
//! What a line holds is chosen here, field by field: never a password, token or key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::{setting, AuditConfig};
use anyhow::Context;

mod line;
pub(crate) use line::{AdminRecord, Record};

/// Bytes waiting for the writer; past this, requests wait for it.
const MAX_PENDING: usize = 16 * 1024 * 1024;
/// How long the writer gathers lines after the first of a batch.
const GATHER: Duration = Duration::from_millis(10);

/// Lines waiting for the writer, and requests to it.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    lines: u64,
    reopen: bool,
    flushed: Vec<std::sync::mpsc::SyncSender<()>>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer: the first line of a batch, a reopen, a flush.
    wake: Condvar,
    /// Wakes requests waiting for room.
    drained: tokio::sync::Notify,
}

/// The handle requests write through; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    shared: Arc<Shared>,
}

impl Audit {
    /// Opens the file (a failure names `audit.path`) and starts the writer thread.
    pub fn start(cfg: &AuditConfig) -> anyhow::Result<Option<Self>> {
        if !cfg.enabled {
            return Ok(None);
        }
        let sink = match &cfg.path {
            Some(p) => {
                let path = p.relative();
                let file = open(&path).with_context(|| {
                    format!("{}: cannot open {}", setting("audit.path"), path.display())
                })?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                Sink::File {
                    out: file,
                    path,
                    size,
                    max: cfg.max_size_mb * 1024 * 1024,
                    keep: cfg.keep,
                }
            }
            None => Sink::Stderr,
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            drained: tokio::sync::Notify::new(),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || write_loop(&writer, sink))
            .context("starting the audit writer")?;
        Ok(Some(Self { shared }))
    }

    /// Queues an administrative change's line, as [`Audit::record`] does a decision's.
    pub async fn record_admin(&self, record: &AdminRecord<'_>) {
        self.queue(|line| record.write_to(line)).await
    }

    /// Queues `record`; waits only while the writer is `MAX_PENDING` bytes behind.
    pub async fn record(&self, record: &Record<'_>) {
        self.queue(|line| record.write_to(line)).await
    }

    async fn queue(&self, write: impl Fn(&mut Vec<u8>)) {
        thread_local! {
            /// Each worker thread's line buffer, reused: the line is written (well under a
            /// microsecond) before the shared buffer is locked, so the lock is held for a copy
            /// of a few hundred bytes and two worker threads rarely meet on it.
            static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        loop {
            let queued = LINE.with_borrow_mut(|line| {
                line.clear();
                write(line);
                line.push(b'\n');
                let mut p = self.lock();
                if p.buf.len() >= MAX_PENDING {
                    return false;
                }
                let first = p.buf.is_empty();
                p.buf.extend_from_slice(line);
                p.lines += 1;
                drop(p);
                if first {
                    self.shared.wake.notify_one();
                }
                true
            });
            if queued {
                return;
            }
            // Full: wait for the writer to take the buffer (re-checked at least every 100 ms,
            // so a wake-up that came before the wait is not waited for).
            let _ =
                tokio::time::timeout(Duration::from_millis(100), self.shared.drained.notified())
                    .await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Reopens the file at its path (after the platform's log rotation moved it).
    pub fn reopen(&self) {
        self.lock().reopen = true;
        self.shared.wake.notify_one();
    }

    /// Waits (at most 5 s) until every line queued so far is on disk: at shutdown.
    pub async fn flush(&self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.lock().flushed.push(done);
        self.shared.wake.notify_one();
        let _ =
            tokio::task::spawn_blocking(move || wait.recv_timeout(Duration::from_secs(5))).await;
    }
}

/// A request id: unique in this process (a counter) and across restarts (a random prefix),
/// without a system call per request.
pub(crate) fn request_id() -> String {
    static PREFIX: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
    id_text(&PREFIX, next_number())
}

/// Numbers are handed to each thread in blocks of this many: one add to the shared counter per
/// block, not per request, whose cache line would otherwise move between the worker threads'
/// cores on every request. So ids are unique but, across threads, not in the order of requests.
const ID_BLOCK: u64 = 4096;

/// The next request number (from 1), from this thread's block.
fn next_number() -> u64 {
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        /// The next number and the end of this thread's block.
        static BLOCK: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    }
    BLOCK.with(|b| {
        let (mut next, mut end) = b.get();
        if next == end {
            next = NEXT_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed) + 1;
            end = next + ID_BLOCK;
        }
        b.set((next + 1, end));
        next
    })
}

/// `{prefix}-{n:x}`, the hex digits written by hand: `format!` was visible in the profile.
fn id_text(prefix: &str, n: u64) -> String {
    let mut id = String::with_capacity(prefix.len() + 1 + 16);
    id.push_str(prefix);
    id.push('-');
    let digits = (64 - (n | 1).leading_zeros()).div_ceil(4);
    for i in (0..digits).rev() {
        id.push(char::from(
            b"0123456789abcdef"[(n >> (4 * i)) as usize & 0xf],
        ));
    }
    id
}

enum Sink {
    Stderr,
    File {
        out: std::fs::File,
        path: PathBuf,
        size: u64,
        max: u64,
        keep: usize,
    },
}

/// A new audit file is readable by this user alone, whatever the umask: it names every caller
/// and what they were granted. An existing file keeps its mode (log shippers may need a group).
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn write_loop(shared: &Shared, mut sink: Sink) {
    let mut errors = ErrorLog::default();
    let mut spare = Vec::new();
    loop {
        let mut p = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        while p.buf.is_empty() && !p.reopen && p.flushed.is_empty() {
            p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if p.flushed.is_empty() && !p.reopen {
            // Let the batch grow: one write for many lines.
            drop(p);
            std::thread::sleep(GATHER);
            p = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        }
        let mut batch = std::mem::replace(&mut p.buf, std::mem::take(&mut spare));
        let lines = std::mem::take(&mut p.lines);
        let reopen = std::mem::take(&mut p.reopen);
        let flushed = std::mem::take(&mut p.flushed);
        drop(p);
        shared.drained.notify_waiters();
        if reopen {
            if let Err(e) = sink.reopen() {
                errors.report("reopening", &e);
            }
        }
        match sink.write(&batch) {
            Ok(()) => {
                crate::metrics::get().audit_lines.inc_by(lines);
            }
            Err(e) => errors.report("writing", &e),
        }
        for done in flushed {
            let _ = done.send(());
        }
        batch.clear();
        spare = batch;
    }
}

impl Sink {
    /// Writes whole lines; a file past its size is rotated between lines.
    fn write(&mut self, batch: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Stderr => std::io::stderr().lock().write_all(batch),
            Self::File {
                out,
                path,
                size,
                max,
                keep,
            } => {
                let mut rest = batch;
                while !rest.is_empty() {
                    // As many whole lines as fit (at least one, into an empty file).
                    let room = if *max == 0 {
                        rest.len()
                    } else {
                        max.saturating_sub(*size) as usize
                    };
                    let mut take = rest[..room.min(rest.len())]
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(0, |i| i + 1);
                    if take == 0 {
                        if *size > 0 {
                            rotate(path, *keep)?;
                            *out = open(path)?;
                            *size = 0;
                            continue;
                        }
                        take = rest
                            .iter()
                            .position(|b| *b == b'\n')
                            .map_or(rest.len(), |i| i + 1);
                    }
                    out.write_all(&rest[..take])?;
                    *size += take as u64;
                    rest = &rest[take..];
                }
                Ok(())
            }
        }
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        if let Self::File {
            out, path, size, ..
        } = self
        {
            let file = open(path)?;
            *size = file.metadata().map(|m| m.len()).unwrap_or(0);
            *out = file;
            tracing::info!(path = %path.display(), "audit log reopened");
        }
        Ok(())
    }
}

/// `path.{keep-1}` → `path.{keep}`, ..., `path` → `path.1` (the oldest falls off).
fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let numbered = |n: usize| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))
}

/// Write failures are logged at most once per 10 s (and always counted).
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
}

impl ErrorLog {
    fn report(&mut self, what: &str, e: &std::io::Error) {
        crate::metrics::get().audit_errors.inc();
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::error!("audit log: {what} failed: {e}; lines are being lost");
            self.last = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;

/// One line for a change the CLI made against the store (`by` is `cli:<OS user>`), written
/// and flushed before the command exits; nothing when `[audit]` is off.
pub async fn cli_change(
    cfg: &crate::config::AuditConfig,
    action: &str,
    target: &str,
    fields: serde_json::Value,
    ok: bool,
) -> anyhow::Result<()> {
    let Some(audit) = Audit::start(cfg)? else {
        return Ok(());
    };
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let request_id = request_id();
    audit
        .record_admin(&AdminRecord {
            time: std::time::SystemTime::now(),
            request_id: &request_id,
            client_ip: None,
            by: &format!("cli:{user}"),
            action,
            target,
            fields: &fields,
            outcome: if ok { "ok" } else { "failed" },
            status: 0,
        })
        .await;
    audit.flush().await;
    Ok(())
}
