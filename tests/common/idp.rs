//! A real OIDC provider for tests: discovery and a JWKS over HTTP on a loopback port, keys the
//! test generates (RS256 and ES256), and ID tokens signed with them. Keys can be added
//! unpublished and published later (a rotation); the JWKS fetches are counted. It can serve
//! https with its own CA ([`Idp::start_tls`]), answer slowly, or redirect its key set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// The JWKS answers after this many milliseconds (a slow provider).
    pub jwks_delay_ms: AtomicU64,
    /// The JWKS answers with a redirect here instead (a provider behind a CDN, or worse).
    pub jwks_redirect: Mutex<Option<String>>,
}

pub struct Idp {
    pub port: u16,
    pub state: Arc<IdpState>,
    /// The CA that signed its https certificate ([`Idp::start_tls`]).
    pub ca_pem: Option<String>,
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
        let (port, task) = super::serve_loopback(0, routes(&state)).await;
        *state.issuer.lock().expect("lock") = format!("http://127.0.0.1:{port}");
        let idp = Self {
            port,
            state,
            ca_pem: None,
            task,
        };
        idp.add_key("rsa-1", KeyType::Rsa, true);
        idp.add_key("ec-1", KeyType::P256, true);
        idp
    }

    /// The same over https, with a certificate for 127.0.0.1 from a CA of its own
    /// ([`Idp::ca_pem`], for the issuer's `ca_file`).
    pub async fn start_tls() -> Self {
        use poem::listener::{Listener, RustlsCertificate, RustlsConfig};
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("leaf")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf cert");
        let tls = RustlsConfig::new().fallback(
            RustlsCertificate::new()
                .key(leaf_key.serialize_pem())
                .cert(leaf.pem()),
        );
        let state = Arc::new(IdpState::default());
        let listener = poem::listener::TcpListener::bind("127.0.0.1:0").rustls(tls);
        let (port, task) = super::serve_on(listener, routes(&state)).await;
        *state.issuer.lock().expect("lock") = format!("https://127.0.0.1:{port}");
        let idp = Self {
            port,
            state,
            ca_pem: Some(ca.pem()),
            task,
        };
        idp.add_key("rsa-1", KeyType::Rsa, true);
        idp.add_key("ec-1", KeyType::P256, true);
        idp
    }

    pub fn issuer(&self) -> String {
        self.state.issuer.lock().expect("lock").clone()
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
        sign_with(&self.key(kid), kid, claims)
    }

    pub fn fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

/// `head.claims.signature(head.claims)` in base64url, for tokens a real provider would never
/// sign (alg none, HMAC).
/// An ID token signed with `key` (published as `kid`): what [`Idp::sign`] does, for a caller
/// holding the key alone (a task that outlives a borrow of the provider).
pub fn sign_with(key: &KeyMaterial, kid: &str, claims: &serde_json::Value) -> String {
    let head = serde_json::json!({"alg": key.alg().name(), "typ": "JWT", "kid": kid});
    sign_raw(&head, claims, |m| {
        key.signing_key
            .sign(&SystemRandom::new(), m)
            .expect("sign")
            .to_vec()
    })
}

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

fn routes(state: &Arc<IdpState>) -> impl poem::Endpoint + 'static {
    Route::new()
        .at("/.well-known/openid-configuration", get(discovery))
        .at("/keys", get(jwks))
        .data(state.clone())
}

#[handler]
fn discovery(Data(state): Data<&Arc<IdpState>>) -> Response {
    let issuer = state.issuer.lock().expect("lock").clone();
    Response::builder().content_type("application/json").body(
        serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")}).to_string(),
    )
}

#[handler]
async fn jwks(Data(state): Data<&Arc<IdpState>>) -> Response {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let delay = state.jwks_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if let Some(to) = state.jwks_redirect.lock().expect("lock").clone() {
        return Response::builder()
            .status(poem::http::StatusCode::FOUND)
            .header("location", to)
            .finish();
    }
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
