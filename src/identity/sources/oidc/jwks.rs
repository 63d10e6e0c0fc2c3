//! A provider's signing keys: its JWKS, found through discovery unless configured, fetched at
//! start-up and kept. A `kid` not in it fetches it again, at most once per `refetch` (the
//! provider rotated its keys); while the provider is away, the keys already fetched still
//! verify. No keys ever fetched is a 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde::Deserialize;

use crate::config::oidc::check_provider_url;
use crate::keys::jwk::Jwk;
use crate::keys::PublicKey;

/// Discovery documents and key sets are a few KiB.
const MAX_BODY: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);
/// A provider never reached is tried again at most this often (each token naming it would
/// otherwise be a fetch).
const RETRY_UNREACHED: Duration = Duration::from_secs(2);
/// More keys than any provider publishes; the rest are ignored.
const MAX_KEYS: usize = 64;

pub(super) enum KeyError {
    /// The key set has no such key, even fetched again (or fetched too recently to ask again).
    Unknown,
    /// No key set was ever fetched; why the last attempt failed.
    Unavailable(String),
}

pub(super) struct KeySet {
    issuer: String,
    jwks_url: Option<String>,
    http: reqwest::Client,
    keys: ArcSwapOption<Vec<(String, PublicKey)>>,
    /// When the last fetch ended, and why it failed if it did; held while one runs, so
    /// concurrent requests for an unknown kid share it.
    fetched: tokio::sync::Mutex<Option<Fetched>>,
    refetch: Duration,
}

struct Fetched {
    ended: Instant,
    failed: Option<String>,
}

/// Redirects are followed (providers move their key sets behind CDNs) only where the
/// configured URL could have pointed: https, or plain http on this machine, and never from
/// https down to http. Keys fetched over a hop an attacker can see could be theirs.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > 3 {
            return attempt.error("more than 3 redirects");
        }
        let downgrade = attempt
            .previous()
            .last()
            .is_some_and(|prev| prev.scheme() == "https" && attempt.url().scheme() != "https");
        if downgrade {
            let to = attempt.url().to_string();
            return attempt.error(format!("redirected from https to {to}"));
        }
        if check_provider_url(attempt.url().as_str(), "").is_err() {
            let to = attempt.url().to_string();
            return attempt.error(format!(
                "redirected to {to}, which is not https (plain http only on this machine)"
            ));
        }
        attempt.follow()
    })
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

/// A JWKS member as providers write it (`alg` and `use` are optional there).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    pub(super) fn new(
        issuer: &str,
        jwks_url: Option<&str>,
        ca_pem: Option<&[u8]>,
        refetch: Duration,
    ) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(redirect_policy());
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build()?;
        Ok(Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            jwks_url: jwks_url.map(str::to_string),
            http,
            keys: ArcSwapOption::empty(),
            fetched: tokio::sync::Mutex::new(None),
            refetch,
        })
    }

    /// The key named `kid`, fetching the set again if it may.
    pub(super) async fn key(&self, kid: &str) -> Result<PublicKey, KeyError> {
        if let Some(k) = self.find(kid) {
            return Ok(k);
        }
        let arrived = Instant::now();
        let mut fetched = self.fetched.lock().await;
        // Another request may have fetched it while this one waited.
        if let Some(k) = self.find(kid) {
            return Ok(k);
        }
        let have_keys = self.keys.load().is_some();
        if let Some(last) = fetched.as_ref() {
            // A fetch that ended after this request arrived is as fresh as one it would make:
            // take its answer instead of queueing a fetch each (a slow provider would
            // otherwise make the n-th waiter wait n fetches).
            let wait = if have_keys {
                self.refetch
            } else {
                RETRY_UNREACHED
            };
            if last.ended >= arrived || last.ended.elapsed() < wait {
                return Err(if have_keys {
                    KeyError::Unknown
                } else {
                    KeyError::Unavailable(
                        last.failed.clone().unwrap_or_else(|| {
                            "the provider's keys could not be fetched yet".into()
                        }),
                    )
                });
            }
        }
        let result = self.fetch().await;
        let failed = match result {
            Ok(keys) => {
                tracing::info!(issuer = %self.issuer, keys = keys.len(), "OIDC keys fetched");
                self.keys.store(Some(Arc::new(keys)));
                None
            }
            // The keys already held stay: a failed or redirected fetch never replaces them.
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, "fetching the OIDC keys failed: {e}");
                Some(e)
            }
        };
        // Stamped when the fetch ends, so the pause between fetches is counted from its end.
        *fetched = Some(Fetched {
            ended: Instant::now(),
            failed: failed.clone(),
        });
        if let (Some(e), false) = (failed, have_keys) {
            return Err(KeyError::Unavailable(e));
        }
        self.find(kid).ok_or(KeyError::Unknown)
    }

    /// At start-up: fetch the set now, so the first token does not wait for it.
    pub(super) async fn prefetch(&self) {
        let _ = self.key("").await;
    }

    fn find(&self, kid: &str) -> Option<PublicKey> {
        let keys = self.keys.load();
        let keys = keys.as_ref()?;
        keys.iter().find(|(k, _)| k == kid).map(|(_, p)| p.clone())
    }

    async fn fetch(&self) -> Result<Vec<(String, PublicKey)>, String> {
        let url = match &self.jwks_url {
            Some(u) => u.clone(),
            None => {
                let d: Discovery = self
                    .get_json(&format!("{}/.well-known/openid-configuration", self.issuer))
                    .await?;
                check_provider_url(&d.jwks_uri, "jwks_uri")
                    .map_err(|e| format!("discovery's {e}"))?;
                d.jwks_uri
            }
        };
        let set: RawJwks = self.get_json(&url).await?;
        let keys: Vec<_> = set
            .keys
            .into_iter()
            .take(MAX_KEYS)
            .filter_map(|v| serde_json::from_value::<RawJwk>(v).ok())
            .filter_map(usable)
            .collect();
        if keys.is_empty() {
            return Err(format!(
                "{url}: no RS256, ES256 or ES384 signing key with a kid"
            ));
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let mut resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", crate::upstream::describe(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("{url}: the answer is larger than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not the expected JSON: {e}"))
    }
}

/// A signing key we can verify with, under its kid; encryption keys and others are skipped.
fn usable(raw: RawJwk) -> Option<(String, PublicKey)> {
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let kid = raw.kid?;
    let jwk = Jwk {
        kty: raw.kty,
        crv: raw.crv,
        x: raw.x,
        y: raw.y,
        n: raw.n,
        e: raw.e,
        use_: "sig".into(),
        alg: String::new(),
        kid: kid.clone(),
        x5t: None,
    };
    let key = jwk.public_key()?;
    // A key published for another algorithm is not used for this one.
    if raw.alg.as_deref().is_some_and(|a| a != key.alg.name()) {
        return None;
    }
    Some((kid, key))
}
