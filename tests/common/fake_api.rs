//! A real HTTP identity API for tests, speaking the upstream contract: session tokens resolved
//! by `whoami` (Jellyfish-shaped and balena-shaped bodies), repositories readable per token.
//! It counts its calls and can be told to fail in the ways a real API fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{get, handler, EndpointExt, Request, Response, Route};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Status(u16),
    /// Never answers in time.
    Hang,
    /// 200 with an HTML page (a proxy's login page, say).
    Html,
    /// 302 to a login page that answers 200.
    Redirect,
}

pub struct User {
    pub slug: String,
    pub groups: Vec<String>,
    pub readable: Vec<String>,
}

#[derive(Default)]
pub struct State {
    pub mode: Mutex<Option<Mode>>,
    pub delay: Mutex<Duration>,
    pub users: Mutex<HashMap<String, User>>,
    pub whoami_calls: AtomicUsize,
    pub repo_calls: AtomicUsize,
    pub repo_paths: Mutex<Vec<String>>,
}

impl State {
    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().expect("lock") = Some(m);
    }
    pub fn add(&self, token: &str, slug: &str, groups: &[&str], readable: &[&str]) {
        self.users.lock().expect("lock").insert(
            token.into(),
            User {
                slug: slug.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                readable: readable.iter().map(|r| r.to_string()).collect(),
            },
        );
    }
    pub fn whoami(&self) -> usize {
        self.whoami_calls.load(Ordering::SeqCst)
    }
    pub fn repos(&self) -> usize {
        self.repo_calls.load(Ordering::SeqCst)
    }
}

pub struct FakeApi {
    pub port: u16,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    pub async fn start() -> Self {
        Self::start_on(0, Arc::new(State::default())).await
    }

    pub async fn start_on(port: u16, state: Arc<State>) -> Self {
        let app = Route::new()
            .at("/api/v2/whoami", get(jellyfish_whoami))
            .at("/actor/v1/whoami", get(balena_whoami))
            .at("/api/v2/slug/*", get(repository))
            .at("/login", get(login))
            .data(state.clone());
        let (port, task) = super::serve_loopback(port, app).await;
        Self { port, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

/// The failure mode, if any, as the response to send instead.
async fn misbehave(state: &State) -> Option<Response> {
    let delay = *state.delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mode = state.mode.lock().expect("lock").unwrap_or(Mode::Normal);
    match mode {
        Mode::Normal => None,
        Mode::Status(s) => Some(
            Response::builder()
                .status(StatusCode::from_u16(s).expect("status"))
                .body("oops"),
        ),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Some(Response::builder().body("too late"))
        }
        Mode::Html => Some(
            Response::builder()
                .content_type("text/html")
                .body("<html><body>Sign in</body></html>"),
        ),
        Mode::Redirect => Some(
            Response::builder()
                .status(StatusCode::FOUND)
                .header("Location", "/login")
                .body(""),
        ),
    }
}

/// The password of a Basic pair (balena-style API keys arrive this way when forwarded as Basic).
fn basic_password(req: &Request) -> Option<String> {
    let b64 = req
        .headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let pair = String::from_utf8(data_encoding::BASE64.decode(b64.as_bytes()).ok()?).ok()?;
    pair.split_once(':').map(|(_, p)| p.to_string())
}

/// Jellyfish's endpoint takes Bearer tokens only; the balena-shaped one Basic only, so a test
/// fails if the issuer forwards the credential the wrong way.
fn whoami_body(state: &State, req: &Request, jellyfish: bool) -> Response {
    let users = state.users.lock().expect("lock");
    let token = if jellyfish {
        bearer(req)
    } else {
        basic_password(req)
    };
    let Some(user) = token.and_then(|t| users.get(&t)) else {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(r#"{"error":true,"data":"Invalid session"}"#);
    };
    let body = if jellyfish {
        serde_json::json!({"error": false, "data": {"slug": user.slug, "type": "user@1.0.0", "data": {"groups": user.groups}}})
    } else {
        serde_json::json!({"id": 7, "actorType": "user", "actorTypeId": 3, "username": user.slug, "email": "x@example.test"})
    };
    Response::builder()
        .content_type("application/json")
        .body(body.to_string())
}

#[handler]
async fn jellyfish_whoami(req: &Request, Data(state): Data<&Arc<State>>) -> Response {
    state.whoami_calls.fetch_add(1, Ordering::SeqCst);
    match misbehave(state).await {
        Some(r) => r,
        None => whoami_body(state, req, true),
    }
}

#[handler]
async fn balena_whoami(req: &Request, Data(state): Data<&Arc<State>>) -> Response {
    state.whoami_calls.fetch_add(1, Ordering::SeqCst);
    match misbehave(state).await {
        Some(r) => r,
        None => whoami_body(state, req, false),
    }
}

#[handler]
fn login() -> Response {
    Response::builder()
        .content_type("text/html")
        .body("<html>Sign in</html>")
}

#[handler]
async fn repository(req: &Request, Data(state): Data<&Arc<State>>) -> Response {
    state.repo_calls.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = misbehave(state).await {
        return r;
    }
    let raw = req
        .uri()
        .path()
        .trim_start_matches("/api/v2/slug/")
        .to_string();
    state.repo_paths.lock().expect("lock").push(raw.clone());
    let name = percent_encoding::percent_decode_str(&raw)
        .decode_utf8_lossy()
        .to_string();
    let users = state.users.lock().expect("lock");
    match bearer(req)
        .or_else(|| basic_password(req))
        .and_then(|t| users.get(&t))
    {
        Some(u) if u.readable.contains(&name) => Response::builder()
            .content_type("application/json")
            .body("{}"),
        Some(_) => Response::builder().status(StatusCode::NOT_FOUND).body("{}"),
        None => Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body("{}"),
    }
}
