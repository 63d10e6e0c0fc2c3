//! Claims and signing. The headers and the key are fixed per process, so both encoded headers
//! (with and without `x5c`) are computed once; each token costs one JSON encode and one ES256
//! signature (aws-lc-rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};

use crate::config::X5cMode;
use crate::jwt;
use crate::keys::{Alg, KeyMaterial, PublicKey, SigningKey};
use crate::scope::Scope;

/// `nbf` and `iat` are backdated so registries with a slightly slow clock accept a fresh
/// token: zot refuses an `iat` after its own clock with no leeway (golang-jwt's
/// `WithIssuedAt`), distribution 3.x allows 60 s, 2.8 ignores `iat`. open-balena-api backdates
/// `nbf` by the same 10 s. `exp` counts from the true time of issue.
pub const NBF_BACKDATE: u64 = 10;

/// Registries accept a token this long past its `exp` (distribution's leeway); the `x5c` chain
/// must still be valid then, since the registry checks it on every request.
pub const REGISTRY_LEEWAY: u64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    /// A string, never an array: distribution 2.8 cannot parse an array here.
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub access: Vec<Scope>,
}

#[derive(Serialize)]
struct Header<'a> {
    /// Decided by the key's type: ES256, ES384 or RS256.
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
    /// Standard base64 DER, leaf first (RFC 7515 §4.1.6).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    x5c: Vec<String>,
}

/// The `x5c` header and the window in which the chain it carries is valid (Unix seconds).
struct X5cHeader {
    header_b64: String,
    not_before: i64,
    not_after: i64,
    /// `auto` falls back to the kid-only header outside the window; `always` never does.
    always: bool,
    /// Set once the fallback has been logged, so the warning is given once per process.
    warned: AtomicBool,
}

pub struct Signer {
    kid_header_b64: String,
    x5c: Option<X5cHeader>,
    key: Arc<SigningKey>,
    rng: SystemRandom,
    pub issuer: String,
    /// The default service: the `aud` of a token asked for without one.
    pub service: String,
    /// Every service served (`token.services`), the default first.
    pub services: Vec<String>,
    /// `token.audience`: any service named is accepted, and the token's `aud` is `service`.
    any_service: bool,
    pub ttl: Duration,
}

pub struct Issued {
    pub token: String,
    pub claims: Claims,
}

fn encode_header(alg: Alg, kid: &str, x5c: Vec<String>) -> String {
    let header = Header {
        alg: alg.name(),
        typ: "JWT",
        kid,
        x5c,
    };
    BASE64URL_NOPAD.encode(&serde_json::to_vec(&header).unwrap_or_default())
}

impl Signer {
    pub fn new(
        keys: &KeyMaterial,
        issuer: &str,
        service: &str,
        ttl: Duration,
        x5c: X5cMode,
    ) -> Self {
        let x5c = (x5c != X5cMode::Never).then(|| X5cHeader {
            header_b64: encode_header(
                keys.alg(),
                &keys.kid,
                keys.chain_der
                    .iter()
                    .map(|d| data_encoding::BASE64.encode(d))
                    .collect(),
            ),
            not_before: keys.not_before,
            not_after: keys.not_after,
            always: x5c == X5cMode::Always,
            warned: AtomicBool::new(false),
        });
        Self {
            kid_header_b64: encode_header(keys.alg(), &keys.kid, Vec::new()),
            x5c,
            key: keys.signing_key.clone(),
            rng: SystemRandom::new(),
            issuer: issuer.into(),
            service: service.into(),
            services: vec![service.into()],
            any_service: false,
            ttl,
        }
    }

    /// Serving several services (`token.services`, the default first).
    pub fn with_services(mut self, services: Vec<String>) -> Self {
        if let Some(first) = services.first() {
            self.service = first.clone();
            self.services = services;
        }
        self
    }

    /// One audience for every token, whatever service a request names (`token.audience`).
    pub fn with_audience(mut self, audience: Option<&str>) -> Self {
        self.any_service = audience.is_some();
        self
    }

    /// The service a request names, if served here; the default when it names none (or
    /// always, with `token.audience`).
    pub fn service_for<'a>(&'a self, asked: Option<&str>) -> Option<&'a str> {
        if self.any_service {
            return Some(&self.service);
        }
        match asked {
            None => Some(&self.service),
            Some(a) => self.services.iter().find(|s| *s == a).map(String::as_str),
        }
    }

    /// Whether a token issued at `iat` carries `x5c`: in `auto` mode, only while the chain is
    /// valid from issue until the registry's last acceptance of the token, since a registry
    /// refuses a token whose `x5c` it cannot verify and never falls back to `kid`.
    pub fn uses_x5c(&self, iat: u64) -> bool {
        let Some(x) = &self.x5c else {
            return false;
        };
        let from = i64::try_from(iat).unwrap_or(i64::MAX);
        let until = from.saturating_add((self.ttl.as_secs() + REGISTRY_LEEWAY) as i64);
        if x.always || (x.not_before <= from && until <= x.not_after) {
            return true;
        }
        if !x.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the signing certificate is not valid for a whole token lifetime (valid until {}): \
                 tokens no longer carry x5c, only kid; registries that trust the bundle alone \
                 (distribution 3.x, or 2.x trusting only a CA) will refuse them: rotate the key",
                humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_secs(x.not_after.max(0) as u64)
                )
            );
        }
        false
    }

    pub fn issue(
        &self,
        subject: &str,
        access: Vec<Scope>,
        now: SystemTime,
    ) -> Result<Issued, SignError> {
        self.issue_until(subject, &self.service, access, now, None)
    }

    /// As [`Signer::issue`], ending at `not_after` (unix seconds) if that comes before the
    /// token's lifetime does: a token never outlives the proof it was issued on.
    pub fn issue_until(
        &self,
        subject: &str,
        audience: &str,
        access: Vec<Scope>,
        now: SystemTime,
        not_after: Option<u64>,
    ) -> Result<Issued, SignError> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| SignError)?
            .as_secs();
        let header_b64 = match &self.x5c {
            Some(x) if self.uses_x5c(iat) => &x.header_b64,
            _ => &self.kid_header_b64,
        };
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.into(),
            aud: audience.into(),
            exp: not_after.map_or(iat + self.ttl.as_secs(), |n| {
                n.min(iat + self.ttl.as_secs())
            }),
            nbf: iat.saturating_sub(NBF_BACKDATE),
            iat: iat.saturating_sub(NBF_BACKDATE),
            jti: self.jti()?,
            access,
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| SignError)?;
        let mut token = String::with_capacity(header_b64.len() + payload.len() * 4 / 3 + 100);
        token.push_str(header_b64);
        token.push('.');
        BASE64URL_NOPAD.encode_append(&payload, &mut token);
        let sig = self
            .key
            .sign(&self.rng, token.as_bytes())
            .ok_or(SignError)?;
        token.push('.');
        BASE64URL_NOPAD.encode_append(sig.as_ref(), &mut token);
        Ok(Issued { token, claims })
    }

    /// A random (v4) UUID from aws-lc's per-thread generator, which the signature's nonce comes
    /// from too: `Uuid::new_v4` asks the kernel (`getrandom`) for every token.
    fn jti(&self) -> Result<String, SignError> {
        use aws_lc_rs::rand::SecureRandom;
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes).map_err(|_| SignError)?;
        Ok(uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported algorithm {0:?}")]
    Algorithm(String),
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    #[error("invalid signature")]
    Signature,
    #[error("token issued by {0:?}, expected another issuer")]
    Issuer(String),
    #[error("token is for service {0:?}, not this one")]
    Audience(String),
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
}

/// The keys a verifier trusts, by libtrust kid.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, PublicKey)>,
}

impl TrustedKeys {
    pub fn add(&mut self, kid: &str, key: PublicKey) {
        self.keys.push((kid.to_string(), key));
    }

    /// Verifies the signature, `iss`, `aud`, `exp` and `nbf` (with `leeway`), as distribution
    /// does, through the one verifier (`jwt`).
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        leeway: Duration,
        now: SystemTime,
    ) -> Result<Claims, VerifyError> {
        let parsed = jwt::parse(token)?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(k, _)| *k == parsed.kid)
            .ok_or_else(|| VerifyError::UnknownKey(parsed.kid.clone()))?;
        let value = serde_json::Value::Object(parsed.verify(key)?);
        let claims = Claims::deserialize(&value).map_err(|_| VerifyError::Malformed)?;
        let map = value.as_object().ok_or(VerifyError::Malformed)?;
        if claims.iss != issuer {
            return Err(VerifyError::Issuer(claims.iss));
        }
        jwt::check_audience(map, &[audience])
            .map_err(|_| VerifyError::Audience(claims.aud.clone()))?;
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| VerifyError::Expired)?
            .as_secs();
        let leeway = leeway.as_secs();
        jwt::check_times(map, now, leeway as i64, leeway)?;
        Ok(claims)
    }
}

impl From<jwt::JwtError> for VerifyError {
    fn from(e: jwt::JwtError) -> Self {
        use jwt::JwtError as J;
        match e {
            J::Algorithm(a) => Self::Algorithm(a),
            J::KeyAlgorithm => Self::Algorithm("another than the key's".into()),
            J::Signature | J::SignatureEncoding => Self::Signature,
            J::Audience => Self::Audience(String::new()),
            J::Expired => Self::Expired,
            J::NotYetValid => Self::NotYetValid,
            J::Malformed | J::Header | J::Payload | J::NoExp | J::NotNumericDate(_) => {
                Self::Malformed
            }
        }
    }
}

#[cfg(test)]
mod tests;
