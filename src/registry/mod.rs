//! The built-in development registry: the OCI distribution API (`handlers`, one file per
//! resource) over filesystem storage (`storage`), with one manifest model (`manifest`),
//! accepting only tokens from this issuer (`auth`), plus garbage collection (`gc`). What works against it must work against distribution, so it follows
//! distribution's behaviour, status codes and challenge wording.

pub mod auth;
pub(crate) mod errors;
pub mod gc;
pub(crate) mod handlers;
pub(crate) mod manifest;
pub(crate) mod sessions;
pub mod storage;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use poem::{Endpoint, EndpointExt, Route};

use crate::config::{setting, RegistryConfig};
use auth::TokenAuth;
use storage::Storage;

pub struct Registry {
    pub(crate) storage: Storage,
    pub(crate) auth: TokenAuth,
    /// Each download holds a reader thread; this bounds them (slow clients wait, others go on).
    pub(crate) downloads: Arc<tokio::sync::Semaphore>,
    /// Held while the registry runs, so the offline `gc` cannot sweep under a live push.
    pub(crate) _lock: std::fs::File,
    /// What the collection inside the serving registry needs (see `gc`).
    pub(crate) gc: gc::Guard,
}

impl Registry {
    /// Opens `[registry]`'s storage (waiting out a registry that is stopping), takes its lock
    /// for the life of the process, and starts the upload sweeper and the scheduled garbage
    /// collection. Within a Tokio runtime.
    pub fn open(rc: &RegistryConfig, auth: TokenAuth) -> anyhow::Result<Arc<Self>> {
        let root = rc.storage.relative();
        let storage =
            Storage::open_with_limits(&root, rc.max_uploads, rc.max_uploads_per_repository)
                .with_context(|| format!("{}: {}", setting("registry.storage"), root.display()))?;
        // Longer than a stopping registry's grace period (server.rs), so a restart waits it out.
        let lock = storage
            .lock_waiting(Duration::from_secs(15))
            .map_err(|e| anyhow::anyhow!("{}: {e}", setting("registry.storage")))?;
        let every = rc.gc.every()?;
        let reg = Arc::new(Self {
            storage,
            auth,
            downloads: Arc::new(tokio::sync::Semaphore::new(MAX_DOWNLOADS)),
            _lock: lock,
            gc: gc::Guard {
                gate: tokio::sync::RwLock::new(()),
                grace: Duration::from_secs(rc.gc.grace_seconds),
                scheduled: every.is_some(),
            },
        });
        tracing::info!(listen = %rc.listen, storage = %root.display(), realm = %reg.auth.realm, "registry starting");
        spawn_upload_sweeper(reg.clone(), Duration::from_secs(rc.upload_ttl_seconds));
        if let Some(every) = every {
            gc::spawn_schedule(reg.clone(), every, rc.gc.delete_untagged);
            tracing::info!(every = %rc.gc.interval, delete_untagged = rc.gc.delete_untagged, grace_seconds = rc.gc.grace_seconds, "garbage collection scheduled");
        }
        Ok(reg)
    }
}

/// At most this many blob downloads read from disk at once.
pub const MAX_DOWNLOADS: usize = 128;

pub fn routes(reg: Arc<Registry>) -> impl poem::Endpoint<Output = poem::Response> {
    Route::new()
        .at("/v2", handlers::dispatch)
        .at("/v2/*path", handlers::dispatch)
        .data(reg)
        .around(|ep, req| async move {
            // Counted by route, method and status; bytes sent from the declared length
            // (every body the registry sends declares it).
            let route = handlers::route_label(req.uri().path());
            let method = method_label(req.method());
            let resp = ep.call(req).await?;
            let m = crate::metrics::get();
            m.registry_request(route, method, resp.status().as_u16());
            if method != "HEAD" {
                let sent = resp
                    .headers()
                    .get(poem::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                m.registry_bytes_out.inc_by(sent.unwrap_or(0));
            }
            Ok(resp)
        })
}

fn method_label(m: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// Removes expired upload sessions every `ttl / 4` (at most every 5 minutes).
fn spawn_upload_sweeper(reg: Arc<Registry>, ttl: Duration) {
    let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(300));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let n = reg.storage.sweep_uploads(ttl).await;
            if n > 0 {
                tracing::info!("removed {n} expired upload session(s)");
            }
        }
    });
}
