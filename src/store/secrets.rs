//! Generated secrets: the credentials the service makes for machines (CI robots, devices),
//! stored as a keyed hash rather than bcrypt.
//!
//! A generated secret is `tis_` and 160 random bits in base32 (`tis_[a-z2-7]{32}`). Nothing a
//! guesser can search, so it needs no slow hash: HMAC-SHA-256 under a server-side pepper costs
//! a microsecond where bcrypt costs 60 ms of a core, which is what a fleet's roll-out of
//! thousands of new credentials pays. The pepper lives outside the database
//! (`store.pepper_files`), so a copy of the database alone checks no guess. The stored form
//! names its pepper, `$tis1$<pepper id>$<HMAC in base64url>`; every configured pepper verifies
//! (rotation) and the first makes new ones. A password a person chose stays bcrypt (`$2b$...`):
//! the stored form says which is which.

use std::path::Path;

use aws_lc_rs::{digest, hmac};
use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD, HEXLOWER};

use super::{Result, StoreError};

/// What every generated secret starts with, for secret scanners (`tis_[a-z2-7]{32}`).
const SECRET_PREFIX: &str = "tis_";
/// Base32 characters after the prefix (160 bits).
const SECRET_CHARS: usize = 32;
/// What a stored keyed hash starts with.
const TAG: &str = "$tis1$";
/// A pepper shorter than this is refused: it must be as unguessable as a key.
const MIN_PEPPER_BYTES: usize = 32;

/// One pepper: the key and the id a stored hash names it by.
struct Pepper {
    id: String,
    key: hmac::Key,
}

/// The peppers in force, the first making new hashes. Empty: generated secrets are refused.
#[derive(Default)]
pub struct Peppers(Vec<Pepper>);

/// How a keyed hash compared with a secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Keyed {
    Match,
    Mismatch,
    /// Made under a pepper no longer configured: it can match nothing now.
    UnknownPepper(String),
}

impl Peppers {
    /// Each file holds one pepper (its text, surrounding whitespace left out, at least
    /// [`MIN_PEPPER_BYTES`]); `what` names the setting in errors.
    pub fn load(files: &[impl AsRef<Path>], what: &str) -> anyhow::Result<Self> {
        let mut out = Vec::new();
        for file in files {
            let file = file.as_ref();
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("{what}: cannot read {}: {e}", file.display()))?;
            let pepper = Self::pepper(text.trim().as_bytes()).ok_or_else(|| {
                anyhow::anyhow!(
                    "{what}: {} holds fewer than {MIN_PEPPER_BYTES} bytes; make one with \
                     `openssl rand -base64 48 > {}`",
                    file.display(),
                    file.display()
                )
            })?;
            if out.iter().any(|p: &Pepper| p.id == pepper.id) {
                anyhow::bail!("{what}: {} repeats another pepper", file.display());
            }
            out.push(pepper);
        }
        Ok(Self(out))
    }

    fn pepper(bytes: &[u8]) -> Option<Pepper> {
        if bytes.len() < MIN_PEPPER_BYTES {
            return None;
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"token-issuer pepper id\0");
        ctx.update(bytes);
        let id = HEXLOWER.encode(&ctx.finish().as_ref()[..6]);
        Some(Pepper {
            id,
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }

    fn stored(pepper: &Pepper, secret: &str) -> String {
        let mac = hmac::sign(&pepper.key, secret.as_bytes());
        format!(
            "{TAG}{}${}",
            pepper.id,
            BASE64URL_NOPAD.encode(mac.as_ref())
        )
    }

    /// The stored form of a generated secret, under the first pepper.
    pub fn hash(&self, secret: &str) -> Result<String> {
        let first = self.0.first().ok_or_else(|| {
            StoreError::Invalid(
                "generated secrets are stored as a keyed hash: set store.pepper_files \
                 (a file made with `openssl rand -base64 48`)"
                    .into(),
            )
        })?;
        Ok(Self::stored(first, secret))
    }

    /// Compares `secret` with a stored keyed hash, in constant time.
    pub fn verify(&self, stored: &str, secret: &str) -> Keyed {
        let Some((id, mac)) = stored.strip_prefix(TAG).and_then(|r| r.split_once('$')) else {
            return Keyed::Mismatch;
        };
        let Some(pepper) = self.0.iter().find(|p| p.id == id) else {
            return Keyed::UnknownPepper(id.to_string());
        };
        let Ok(mac) = BASE64URL_NOPAD.decode(mac.as_bytes()) else {
            return Keyed::Mismatch;
        };
        match hmac::verify(&pepper.key, secret.as_bytes(), &mac) {
            Ok(()) => Keyed::Match,
            Err(_) => Keyed::Mismatch,
        }
    }

    /// The stored forms `secret` would have under each pepper: what `find-secret` looks for.
    pub fn candidates(&self, secret: &str) -> Vec<String> {
        self.0.iter().map(|p| Self::stored(p, secret)).collect()
    }
}

/// One HMAC of `secret` under a key of no use: what a generated-shaped password costs where no
/// keyed hash could match it (an unknown name, a bcrypt account, an htpasswd user: every
/// `Checks::bcrypt`), as much as a keyed check, so the time of a refusal does not tell which
/// of those it met.
pub fn refuse_generated(secret: &str) {
    static KEY: std::sync::LazyLock<hmac::Key> = std::sync::LazyLock::new(|| {
        hmac::Key::new(hmac::HMAC_SHA256, b"token-issuer: nothing matches")
    });
    let tag = hmac::sign(&KEY, secret.as_bytes());
    std::hint::black_box(tag);
}

/// Whether a stored hash is a keyed one (else bcrypt).
pub fn is_keyed(stored: &str) -> bool {
    stored.starts_with(TAG)
}

/// Whether `s` has a generated secret's shape.
pub fn looks_generated(s: &str) -> bool {
    s.strip_prefix(SECRET_PREFIX).is_some_and(|rest| {
        rest.len() == SECRET_CHARS
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

/// A fresh secret: `tis_` and 160 random bits, shown once.
pub(super) fn generate_secret() -> Result<String> {
    let mut bytes = [0u8; 20];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| StoreError::Unavailable("the random number generator failed".into()))?;
    Ok(format!(
        "{SECRET_PREFIX}{}",
        BASE32_NOPAD.encode(&bytes).to_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peppers(texts: &[&str]) -> Peppers {
        Peppers(
            texts
                .iter()
                .map(|t| Peppers::pepper(t.as_bytes()).expect("long enough"))
                .collect(),
        )
    }

    const OLD: &str = "old-pepper-0123456789-0123456789-0123456789";
    const NEW: &str = "new-pepper-0123456789-0123456789-0123456789";

    #[test]
    fn a_secret_verifies_under_its_pepper_while_it_is_configured() {
        let secret = generate_secret().expect("secret");
        assert!(looks_generated(&secret), "{secret}");
        let old = peppers(&[OLD]);
        let stored = old.hash(&secret).expect("hash");
        assert!(
            is_keyed(&stored) && !stored.contains(&secret[4..]),
            "{stored}"
        );
        assert_eq!(old.verify(&stored, &secret), Keyed::Match);
        assert_eq!(old.verify(&stored, "tis_wrong"), Keyed::Mismatch);
        // Rotation: the new pepper first, the old one still verifying.
        let both = peppers(&[NEW, OLD]);
        assert_eq!(both.verify(&stored, &secret), Keyed::Match);
        assert_ne!(
            both.hash(&secret).expect("hash"),
            stored,
            "made under the new one"
        );
        assert_eq!(both.candidates(&secret).len(), 2);
        assert!(both.candidates(&secret).contains(&stored));
        // The old pepper removed: nothing matches.
        let new = peppers(&[NEW]);
        assert!(matches!(
            new.verify(&stored, &secret),
            Keyed::UnknownPepper(_)
        ));
    }

    #[test]
    fn short_peppers_garbled_hashes_and_no_pepper_are_refused() {
        assert!(Peppers::pepper(b"short").is_none());
        let p = peppers(&[OLD]);
        let id = p.0[0].id.clone();
        for garbled in ["$tis1$", "$tis1$x", &format!("$tis1${id}$!!"), "$2b$10$x"] {
            assert_eq!(p.verify(garbled, "tis_x"), Keyed::Mismatch, "{garbled}");
        }
        let e = Peppers::default().hash("tis_x").expect_err("no pepper");
        assert!(e.to_string().contains("store.pepper_files"), "{e}");
        assert!(!looks_generated("tis_short"));
        assert!(!looks_generated(&format!("tis_{}", "A".repeat(32))));
    }
}
