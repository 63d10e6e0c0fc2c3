//! The benchmark's stand-in upstream identity API (`scripts/bench`): answers every call after a
//! fixed delay, as a real API across a network would, and counts its calls.
//!
//! `cargo run --release --example bench_upstream -- <port> <delay_ms>`
//!
//! - `GET /whoami` with `Authorization: Bearer key-<n>` → 200 `{"username":"up<n>"}`; any other
//!   key → 401.
//! - `GET /repository/<name>` with such a key → 200 (the caller may use every repository).
//! - `GET /count` → `{"whoami":N,"repository":N,"in_flight_max":N}`, answered at once.
//!
//! In Rust rather than Python: a roll-out of 1,000 keys makes 2,000 calls within a second, and
//! a Python server's own CPU time per call would be what the row measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{
    get, handler, listener::TcpListener, EndpointExt, IntoResponse, Request, Response, Route,
    Server,
};

#[derive(Default)]
struct Counts {
    whoami: AtomicU64,
    repository: AtomicU64,
    in_flight: AtomicU64,
    in_flight_max: AtomicU64,
}

struct State {
    delay: Duration,
    counts: Counts,
}

/// The `<n>` of `Bearer key-<n>`.
fn key(req: &Request) -> Option<&str> {
    req.header("authorization")?
        .strip_prefix("Bearer key-")
        .filter(|n| !n.is_empty())
}

async fn delayed(state: &State, counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
    let now = state.counts.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    state.counts.in_flight_max.fetch_max(now, Ordering::Relaxed);
    tokio::time::sleep(state.delay).await;
    state.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
}

#[handler]
async fn whoami(req: &Request, Data(state): Data<&Arc<State>>) -> Response {
    delayed(state, &state.counts.whoami).await;
    match key(req) {
        Some(n) => Json(serde_json::json!({ "username": format!("up{n}") })).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

#[handler]
async fn repository(req: &Request, Data(state): Data<&Arc<State>>) -> StatusCode {
    delayed(state, &state.counts.repository).await;
    match key(req) {
        Some(_) => StatusCode::OK,
        None => StatusCode::UNAUTHORIZED,
    }
}

#[handler]
fn count(Data(state): Data<&Arc<State>>) -> Json<serde_json::Value> {
    let c = &state.counts;
    Json(serde_json::json!({
        "whoami": c.whoami.load(Ordering::Relaxed),
        "repository": c.repository.load(Ordering::Relaxed),
        "in_flight_max": c.in_flight_max.load(Ordering::Relaxed),
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || std::io::Error::other("usage: bench_upstream <port> <delay_ms>");
    let port: u16 = args.next().and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let delay_ms: u64 = args.next().and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let state = Arc::new(State {
        delay: Duration::from_millis(delay_ms),
        counts: Counts::default(),
    });
    let app = Route::new()
        .at("/whoami", get(whoami))
        .at("/repository/*name", get(repository))
        .at("/count", get(count))
        .data(state);
    Server::new(TcpListener::bind(("127.0.0.1", port)))
        .run(app)
        .await
}
