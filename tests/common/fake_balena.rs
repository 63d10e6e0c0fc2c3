//! A real HTTP open-balena-api for tests, answering in the shapes of its source
//! (balena-io/open-balena-api at 61a847ac): `GET /actor/v1/whoami` per actor type
//! (`features/auth/whoami.ts`), and the OData resources the registry endpoint reads
//! (`features/registry/registry.ts`): `image` by location (as root) and by release, the
//! `application` that owns a release with an image, and `image(<id>)/canAccess`. API keys are
//! Bearer tokens; a key the API does not know is a 401. It records the filters it was asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{get, handler, post, EndpointExt, Request, Response, Route};
use serde_json::{json, Value};

#[derive(Clone)]
pub enum Actor {
    User(&'static str),
    Application(&'static str),
    Device(&'static str),
}

pub struct Image {
    pub id: u64,
    /// `registry.test/v2/<hash>`.
    pub location: String,
    /// The application (`org/app`) whose releases hold it.
    pub app: &'static str,
    pub commit: &'static str,
    /// Whether its release is the one that should be running.
    pub running: bool,
    /// API keys that can see the application.
    pub readers: Vec<&'static str>,
    /// API keys `canAccess` allows to push.
    pub pushers: Vec<&'static str>,
}

#[derive(Default)]
pub struct State {
    pub keys: Mutex<HashMap<&'static str, Actor>>,
    pub root: Mutex<Option<&'static str>>,
    pub images: Mutex<Vec<Image>>,
    /// Every `$filter` (or canAccess path) asked, with the key that asked.
    pub asked: Mutex<Vec<(String, String)>>,
}

impl State {
    fn key(req: &Request) -> String {
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string()
    }

    fn known(&self, key: &str) -> bool {
        self.keys.lock().expect("lock").contains_key(key)
            || self.root.lock().expect("lock").as_deref() == Some(key)
    }

    /// A resource query's key and `$filter`, recorded; `None` when the key is unknown.
    fn query(&self, req: &Request) -> Option<(String, String)> {
        let key = Self::key(req);
        if !self.known(&key) {
            return None;
        }
        let f = filter(req);
        self.asked
            .lock()
            .expect("lock")
            .push((f.clone(), key.clone()));
        Some((key, f))
    }

    pub fn asked(&self) -> Vec<(String, String)> {
        self.asked.lock().expect("lock").clone()
    }
}

fn json_response(v: Value) -> Response {
    Response::builder()
        .content_type("application/json")
        .body(v.to_string())
}

fn unauthorized() -> Response {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .body("Unauthorized")
}

/// The `$filter` query parameter.
fn filter(req: &Request) -> String {
    let q = req.uri().query().unwrap_or("");
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "$filter")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The text between `start` and the next `'` after it.
fn quoted<'a>(s: &'a str, start: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    rest.split('\'').next()
}

#[handler]
fn whoami(req: &Request, Data(state): Data<&Arc<State>>) -> Response {
    let key = State::key(req);
    let actor = state.keys.lock().expect("lock").get(key.as_str()).cloned();
    match actor {
        Some(Actor::User(username)) => json_response(json!({
            "id": 11, "actorType": "user", "actorTypeId": 1, "username": username,
            "email": format!("{username}@example.test"),
        })),
        Some(Actor::Application(slug)) => json_response(json!({
            "id": 12, "actorType": "application", "actorTypeId": 2, "slug": slug,
        })),
        Some(Actor::Device(uuid)) => json_response(json!({
            "id": 13, "actorType": "device", "actorTypeId": 3, "uuid": uuid,
        })),
        None => unauthorized(),
    }
}

#[handler]
fn images(req: &Request, Data(state): Data<&Arc<State>>) -> Response {
    let Some((key, f)) = state.query(req) else {
        return unauthorized();
    };
    let root = state.root.lock().expect("lock").as_deref() == Some(key.as_str());
    let all = state.images.lock().expect("lock");
    // The image by its location (registry.ts resolveImageId, with rootRead).
    if let Some(name) = quoted(&f, "endswith(is_stored_at__image_location,'") {
        let found: Vec<Value> = all
            .iter()
            .filter(|i| root && i.location.ends_with(name))
            .map(|i| json!({"id": i.id}))
            .collect();
        return json_response(json!({ "d": found }));
    }
    // A release's image (resolveImageLocation, with the caller's rights).
    if let Some(slug) = quoted(&f, "r/belongs_to__application/any(a:a/slug eq '") {
        let commit = quoted(&f, "r/commit eq '");
        let found: Vec<Value> = all
            .iter()
            .filter(|i| i.app == slug && i.readers.contains(&key.as_str()))
            .filter(|i| match commit {
                Some(c) => i.commit == c,
                None => i.running && f.contains("should_be_running_on__application"),
            })
            .map(|i| json!({"is_stored_at__image_location": i.location}))
            .take(1)
            .collect();
        return json_response(json!({ "d": found }));
    }
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .body(format!("unexpected filter {f}"))
}

#[handler]
fn applications(req: &Request, Data(state): Data<&Arc<State>>) -> Response {
    let Some((key, f)) = state.query(req) else {
        return unauthorized();
    };
    // registry.ts resolveReadAccess: an application owning a release with the image.
    let Some(id) = f
        .strip_prefix("owns__release/any(r:r/release_image/any(ri:ri/image eq ")
        .and_then(|r| r.strip_suffix("))"))
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(format!("unexpected filter {f}"));
    };
    let found: Vec<Value> = state
        .images
        .lock()
        .expect("lock")
        .iter()
        .filter(|i| i.id == id && i.readers.contains(&key.as_str()))
        .map(|_| json!({"id": 100}))
        .collect();
    json_response(json!({ "d": found }))
}

/// `POST /v7/image(<id>)/canAccess` with `{"action":"push"}`.
#[handler]
fn can_access(
    req: &Request,
    Path(target): Path<String>,
    body: poem::web::Json<Value>,
    Data(state): Data<&Arc<State>>,
) -> Response {
    let key = State::key(req);
    if !state.known(&key) {
        return unauthorized();
    }
    state
        .asked
        .lock()
        .expect("lock")
        .push((format!("{target}/canAccess {}", body.0), key.clone()));
    let id = target
        .strip_prefix("image(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|n| n.parse::<u64>().ok());
    let allowed = body.0 == json!({"action": "push"})
        && state
            .images
            .lock()
            .expect("lock")
            .iter()
            .any(|i| Some(i.id) == id && i.pushers.contains(&key.as_str()));
    json_response(match (allowed, id) {
        (true, Some(id)) => json!({"d": [{"id": id}]}),
        _ => json!({"d": []}),
    })
}

/// Serves the fake on a loopback port: (port, the task).
pub async fn start(state: Arc<State>) -> (u16, tokio::task::JoinHandle<()>) {
    let routes = Route::new()
        .at("/actor/v1/whoami", get(whoami))
        .at("/v7/image", get(images))
        .at("/v7/application", get(applications))
        .at("/v7/:target/canAccess", post(can_access))
        .data(state);
    super::serve_loopback(0, routes).await
}
