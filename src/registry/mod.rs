//! The built-in development registry: the OCI distribution API (`handlers`, one file per
//! resource) over filesystem storage (`storage`), with one manifest model (`manifest`),
//! accepting only tokens from this issuer (`auth`), plus garbage collection (`gc`). What works against it must work against distribution, so it follows
//! distribution's behaviour, status codes and challenge wording.

pub mod auth;
pub mod errors;
pub mod gc;
pub mod handlers;
pub mod manifest;
pub mod sessions;
pub mod storage;

use std::sync::Arc;
use std::time::Duration;

use poem::{Endpoint, EndpointExt, Route};

use auth::TokenAuth;
use storage::Storage;

pub struct Registry {
    pub storage: Storage,
    pub auth: TokenAuth,
    /// Each download holds a reader thread; this bounds them (slow clients wait, others go on).
    pub downloads: Arc<tokio::sync::Semaphore>,
    /// Held while the registry runs, so the offline `gc` cannot sweep under a live push.
    pub _lock: std::fs::File,
    /// What the collection inside the serving registry needs (see `gc`).
    pub gc: gc::Guard,
}

/// At most this many blob downloads read from disk at once.
pub const MAX_DOWNLOADS: usize = 128;

pub fn routes(reg: Arc<Registry>) -> impl poem::Endpoint {
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
pub fn spawn_upload_sweeper(reg: Arc<Registry>, ttl: Duration) {
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
