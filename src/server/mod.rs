//! The listeners: accepting connections under a cap, serving each with hyper under the
//! `[http]` timeouts, and shutting down gracefully on Ctrl-C or SIGTERM.
//!
//! Served with hyper directly rather than `poem::Server`: poem's accept loop retries a failed
//! `accept` at once (at the file-descriptor limit that is a busy spin that starves every
//! request), and it offers no header or body timeout and no connection cap. poem still routes:
//! each hyper request becomes a `poem::Request` for the same endpoints. HTTP/1.1 only: that is
//! what registry clients speak to a plain-HTTP realm or registry (TLS, and HTTP/2 with it, is
//! the reverse proxy's job in front).

mod deadline;
mod panics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use poem::web::{LocalAddr, RemoteAddr};
use poem::Endpoint;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::limits::HttpLimits;
use deadline::{Busy, Deadlined, Timeouts};

/// How long requests in progress may finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);
/// Pause after `accept` fails for lack of descriptors or memory, before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A bound listener, not yet serving: binding comes first, so start-up fails fast on a taken
/// port (before `dev` prints its hints) and the log shows the real address.
pub struct Bound {
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    what: &'static str,
}

pub async fn bind(addr: SocketAddr, what: &'static str) -> anyhow::Result<Bound> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{what}: cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    Ok(Bound {
        listener,
        local,
        what,
    })
}

/// Serves `endpoint` on `bound` until Ctrl-C or SIGTERM, then lets requests finish.
pub async fn serve(
    bound: Bound,
    endpoint: impl Endpoint + 'static,
    limits: HttpLimits,
) -> anyhow::Result<()> {
    let Bound {
        listener,
        local,
        what,
    } = bound;
    tracing::info!(listen = %local, max_connections = limits.max_connections, "{what} listening");
    let endpoint = Arc::new(endpoint);
    let test_route = panics::test_route();
    let timeouts = Timeouts {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
        body: limits.body_timeout,
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut accept_errors = AcceptErrors::default();
    loop {
        // Past max_connections, stop accepting: new connections wait in the kernel's queue.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p?,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    accept_errors.handle(what, e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Responses go out as a header write and a body write; with Nagle's algorithm on, a
        // small body waits for the client's delayed ACK of the header (~40 ms on Linux).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {e}");
        }
        let busy = Arc::new(Busy::default());
        let io = TokioIo::new(Deadlined::new(stream, busy.clone(), timeouts));
        let endpoint = endpoint.clone();
        let service = hyper::service::service_fn(move |req| {
            let endpoint = endpoint.clone();
            let guard = busy.begin();
            async move {
                let req = poem::Request::from((
                    req,
                    LocalAddr(local.into()),
                    RemoteAddr(peer.into()),
                    poem::http::uri::Scheme::HTTP,
                ));
                let in_flight = InFlight::begin();
                let resp = panics::respond(&*endpoint, req, test_route).await;
                drop(in_flight);
                drop(guard);
                Ok::<_, Infallible>(hyper::Response::from(resp))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Timeouts, resets and clients that go away mid-request: theirs, not ours.
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(GRACE) => {
            tracing::warn!("{what}: requests still running {GRACE:?} after shutdown began were cut off");
        }
    }
    Ok(())
}

/// Counts a request in `token_issuer_http_requests_in_flight` until it is answered or
/// dropped (a client that went away).
struct InFlight;

impl InFlight {
    fn begin() -> Self {
        crate::metrics::get().in_flight.inc();
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::metrics::get().in_flight.dec();
    }
}

/// `accept` failures. Running out of descriptors (`EMFILE`, `ENFILE`) or memory leaves the
/// connection in the kernel's queue, so retrying at once fails again at once: back off, and
/// log one line per 10 s with how many failed, not one per attempt.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    async fn handle(&mut self, what: &str, e: std::io::Error) {
        let exhausted = matches!(
            e.raw_os_error(),
            Some(
                libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOBUFS | libc_errno::ENOMEM
            )
        );
        if !exhausted {
            // A connection reset before it was accepted, and the like: the next one is fine.
            tracing::debug!("{what}: accept failed: {e}");
            return;
        }
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            tracing::error!(
                failures = self.unlogged,
                "{what}: cannot accept connections: {e}; raise the open-file limit (ulimit -n) or lower http.max_connections"
            );
            self.last_logged = Some(now);
            self.unlogged = 0;
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

/// The errno values `accept` reports for exhausted resources (Linux).
mod libc_errno {
    pub(super) const ENOMEM: i32 = 12;
    pub(super) const ENFILE: i32 = 23;
    pub(super) const EMFILE: i32 = 24;
    pub(super) const ENOBUFS: i32 = 105;
}

/// Raises the soft open-file limit to the hard one: each connection is a descriptor, and the
/// usual soft default (1024) is far below `http.max_connections`.
pub fn raise_fd_limit() {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) if soft < hard => match rlimit::Resource::NOFILE.set(hard, hard) {
            Ok(()) => tracing::info!(was = soft, now = hard, "open-file limit raised"),
            Err(e) => tracing::warn!(soft, hard, "open-file limit not raised: {e}"),
        },
        Ok((soft, hard)) => tracing::info!(soft, hard, "open-file limit"),
        Err(e) => tracing::warn!("open-file limit unknown: {e}"),
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
