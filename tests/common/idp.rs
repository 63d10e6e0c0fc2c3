//! A real OIDC provider for tests: discovery and a JWKS over HTTP on a loopback port, keys the
//! test generates (RS256 and ES256), and ID tokens signed with them. Keys can be added
//! unpublished and published later (a rotation); the JWKS fetches are counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use data_encoding::BASE64URL_NOPAD;
use poem::web::Data;
use poem::{get, handler, EndpointExt, Response, Route};
use token_issuer::keys::generate::{generate_typed, KeyType};
use token_issuer::keys::jwk::{Jwk, Jwks};
use token_issuer::keys::KeyMaterial;

#[derive(Default)]
pub struct IdpState {
    keys: Mutex<HashMap<String, Arc<KeyMaterial>>>,
    published: Mutex<Vec<String>>,
    pub jwks_fetches: AtomicUsize,
    issuer: Mutex<String>,
}

pub struct Idp {
    pub port: u16,
    pub state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    /// With two published keys: `rsa-1` (RS256) and `ec-1` (ES256).
    pub async fn start() -> Self {
        let state = Arc::new(IdpState::default());
        let app = Route::new()
            .at("/.well-known/openid-configuration", get(discovery))
            .at("/keys", get(jwks))
            .data(state.clone());
        let (port, task) = super::serve_loopback(0, app).await;
        *state.issuer.lock().expect("lock") = format!("http://127.0.0.1:{port}");
        let idp = Self { port, state, task };
        idp.add_key("rsa-1", KeyType::Rsa, true);
        idp.add_key("ec-1", KeyType::P256, true);
        idp
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new key; in the JWKS only when `publish` (else see [`Idp::publish`]).
    pub fn add_key(&self, kid: &str, kind: KeyType, publish: bool) {
        let g = generate_typed("idp.test", 1, kind).expect("generate");
        let km =
            KeyMaterial::load(g.cert_pem.as_bytes(), g.key_pem.as_bytes(), None).expect("load key");
        self.state
            .keys
            .lock()
            .expect("lock")
            .insert(kid.into(), Arc::new(km));
        if publish {
            self.publish(kid);
        }
    }

    pub fn publish(&self, kid: &str) {
        self.state.published.lock().expect("lock").push(kid.into());
    }

    pub fn key(&self, kid: &str) -> Arc<KeyMaterial> {
        self.state.keys.lock().expect("lock")[kid].clone()
    }

    /// `claims` signed by `kid` with that key's algorithm.
    pub fn sign(&self, kid: &str, claims: &serde_json::Value) -> String {
        let key = self.key(kid);
        let head = serde_json::json!({"alg": key.alg().name(), "typ": "JWT", "kid": kid});
        sign_raw(&head, claims, |m| {
            key.signing_key
                .sign(&SystemRandom::new(), m)
                .expect("sign")
                .to_vec()
        })
    }

    pub fn fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

/// `head.claims.signature(head.claims)` in base64url, for tokens a real provider would never
/// sign (alg none, HMAC).
pub fn sign_raw(
    head: &serde_json::Value,
    claims: &serde_json::Value,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> String {
    let b64 = |b: &[u8]| BASE64URL_NOPAD.encode(b);
    let signed = format!(
        "{}.{}",
        b64(head.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(signed.as_bytes());
    format!("{signed}.{}", b64(&sig))
}

#[handler]
fn discovery(Data(state): Data<&Arc<IdpState>>) -> Response {
    let issuer = state.issuer.lock().expect("lock").clone();
    Response::builder().content_type("application/json").body(
        serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")}).to_string(),
    )
}

#[handler]
fn jwks(Data(state): Data<&Arc<IdpState>>) -> Response {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = state.keys.lock().expect("lock");
    let set = Jwks {
        keys: state
            .published
            .lock()
            .expect("lock")
            .iter()
            .map(|kid| Jwk::new(&keys[kid].public, kid, None))
            .collect(),
    };
    Response::builder()
        .content_type("application/json")
        .body(set.to_json())
}
