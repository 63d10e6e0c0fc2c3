//! The audit log: one JSON line per token decision (the README's "Audit log" has the format),
//! to a file or to standard error.
//!
//! Lines are handed to one writer thread over a bounded queue and written in batches: a request
//! waits only when the queue is full (a disk slower than the token rate), so no decision goes
//! unrecorded and a stuck disk cannot grow memory without end. The writer rotates by size when
//! `audit.max_size_mb` is set, and reopens the file on SIGHUP for the platform's log rotation.
//! What a line holds is chosen here, field by field: never a password, token or key.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{setting, AuditConfig};

/// Lines waiting for the writer; past this, requests wait for it.
const QUEUE: usize = 65_536;
/// Lines written between flushes when the queue stays busy.
const BATCH: usize = 512;

/// One decision. Borrowed from the request: built only when the audit log is on.
#[derive(Serialize)]
pub struct Record<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub method: &'a str,
    pub client_id: &'a str,
    /// `""` for the anonymous caller or when the caller was not identified.
    pub user: &'a str,
    /// `htpasswd`, `store`, `upstream`, `anonymous`, or `""` when not identified.
    pub source: &'a str,
    /// `password`, `refresh_token` or `anonymous`.
    pub grant: &'a str,
    pub requested: Vec<String>,
    pub granted: Vec<String>,
    /// For each requested scope, in order: `acl[N]`, `acl[N]+upstream:allowed|refused`,
    /// `store:admin`, `store:grants` or `no-rule`.
    pub decided_by: Vec<String>,
    /// The metrics outcome: `issued`, `unauthorized`, `bad_request`, ...
    pub outcome: &'a str,
    /// Why it was refused (the message the client was given); `""` when issued.
    pub reason: &'a str,
    pub jti: &'a str,
    pub exp: Option<u64>,
    /// Whether a refresh token was handed out with this access token.
    pub refresh_token_issued: bool,
}

enum Msg {
    Line(Vec<u8>),
    Reopen,
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// The handle requests write through; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Msg>,
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
                    out: std::io::BufWriter::with_capacity(64 * 1024, file),
                    path,
                    size,
                    max: cfg.max_size_mb * 1024 * 1024,
                    keep: cfg.keep,
                }
            }
            None => Sink::Stderr,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || write_loop(rx, sink))
            .context("starting the audit writer")?;
        Ok(Some(Self { tx }))
    }

    /// Queues `record`; waits only while the queue is full.
    pub async fn record(&self, record: &Record<'_>) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let _ = self.tx.send(msg).await;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                crate::metrics::get().audit_errors.inc();
            }
        }
    }

    /// Reopens the file at its path (after the platform's log rotation moved it).
    pub fn reopen(&self) {
        let _ = self.tx.try_send(Msg::Reopen);
    }

    /// Waits (at most 5 s) until every line queued so far is on disk: at shutdown.
    pub async fn flush(&self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(done)).await.is_err() {
            return;
        }
        let _ =
            tokio::task::spawn_blocking(move || wait.recv_timeout(Duration::from_secs(5))).await;
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

enum Sink {
    Stderr,
    File {
        out: std::io::BufWriter<std::fs::File>,
        path: PathBuf,
        size: u64,
        max: u64,
        keep: usize,
    },
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn write_loop(mut rx: mpsc::Receiver<Msg>, mut sink: Sink) {
    let mut errors = ErrorLog::default();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let mut written = 0;
        // Write what is queued (up to a batch), then flush once.
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(line) => {
                    match sink.write(&line) {
                        Ok(()) => {
                            crate::metrics::get().audit_lines.inc();
                        }
                        Err(e) => errors.report("writing", &e),
                    }
                    written += 1;
                }
                Msg::Reopen => {
                    if let Err(e) = sink.reopen() {
                        errors.report("reopening", &e);
                    }
                }
                Msg::Flush(done) => {
                    if let Err(e) = sink.flush() {
                        errors.report("flushing", &e);
                    }
                    let _ = done.send(());
                }
            }
            if written < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = sink.flush() {
            errors.report("flushing", &e);
        }
    }
    let _ = sink.flush();
}

impl Sink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Stderr => std::io::stderr().lock().write_all(line),
            Self::File {
                out,
                path,
                size,
                max,
                keep,
            } => {
                if *max > 0 && *size > 0 && *size + line.len() as u64 > *max {
                    out.flush()?;
                    rotate(path, *keep)?;
                    *out = std::io::BufWriter::with_capacity(64 * 1024, open(path)?);
                    *size = 0;
                }
                out.write_all(line)?;
                *size += line.len() as u64;
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Stderr => std::io::stderr().flush(),
            Self::File { out, .. } => out.flush(),
        }
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        if let Self::File {
            out, path, size, ..
        } = self
        {
            out.flush()?;
            let file = open(path)?;
            *size = file.metadata().map(|m| m.len()).unwrap_or(0);
            *out = std::io::BufWriter::with_capacity(64 * 1024, file);
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
mod tests {
    use super::*;

    fn line(i: usize) -> Record<'static> {
        Record {
            time: now(),
            request_id: "r",
            client_ip: IpAddr::from([127, 0, 0, 1]),
            method: "GET",
            client_id: "",
            user: "alice",
            source: "htpasswd",
            grant: "password",
            requested: vec![format!("repository:r{i}:pull")],
            granted: vec![],
            decided_by: vec!["no-rule".into()],
            outcome: "issued",
            reason: "",
            jti: "",
            exp: None,
            refresh_token_issued: false,
        }
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_every_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let cfg: AuditConfig = figment::Figment::new()
            .merge(figment::providers::Serialized::defaults(
                serde_json::json!({
                    "enabled": true,
                    "path": path,
                    "max_size_mb": 1,
                    "keep": 3,
                }),
            ))
            .extract()
            .expect("config");
        let audit = Audit::start(&cfg).expect("start").expect("enabled");
        // ~300 bytes a line: 10,000 lines are ~3 MB, so three files are filled and one
        // falls off the end.
        for i in 0..10_000 {
            audit.record(&line(i)).await;
        }
        audit.flush().await;
        let mut seen = Vec::new();
        // Oldest first.
        for name in ["audit.log.3", "audit.log.2", "audit.log.1", "audit.log"] {
            let p = dir.path().join(name);
            assert!(p.exists(), "{name} exists");
            let text = std::fs::read_to_string(&p).expect("read");
            assert!(
                text.len() as u64 <= 1024 * 1024,
                "{name} is within the size"
            );
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
                seen.push(v["requested"][0].as_str().expect("scope").to_string());
            }
        }
        assert!(!dir.path().join("audit.log.4").exists(), "keep = 3");
        // The newest lines are all there, in order, ending with the last one.
        assert_eq!(
            seen.last().map(String::as_str),
            Some("repository:r9999:pull")
        );
        let n: Vec<usize> = seen
            .iter()
            .map(|s| s[12..s.len() - 5].parse().expect("number"))
            .collect();
        let mut sorted = n.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), n.len(), "no line twice");
        assert_eq!(*sorted.last().expect("some"), 9_999);
        assert!(n.len() > 5_000, "three files hold most of the lines");
        // Contiguous from the oldest kept line to the end: nothing lost in between.
        assert_eq!(sorted.last().expect("x") - sorted[0] + 1, sorted.len());
    }
}
