//! The identity side's shared types: who a caller is ([`Identity`], from which [`Source`]),
//! why not ([`AuthError`]), and what caches are keyed by. Every source and the authenticator
//! use these; nothing here uses them back.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `""` for the anonymous caller.
    pub name: String,
    pub groups: Vec<String>,
    pub source: Source,
    /// A store user with the `admin` flag: may do everything (see `policy`).
    pub admin: bool,
    /// A store user's grants and their groups' (empty for other sources).
    pub rights: Vec<crate::store::Rights>,
    /// When the proof of this identity ends (an OIDC token's `exp`, unix seconds): tokens
    /// issued to it end then too.
    pub expires_at: Option<u64>,
    /// The token's `sub` when it is not `name`: open-balena-api leaves it empty for
    /// application keys and the builder (`upstream.profile = "open-balena"`).
    pub subject: Option<String>,
}

/// Where an identity came from: only upstream identities can be asked about repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Anonymous,
    Local,
    Store,
    Upstream,
    /// An OIDC ID token's claims, through a provider's templates.
    Oidc,
    /// A directory entry, its password checked by a bind.
    Ldap,
}

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            name: String::new(),
            groups: Vec::new(),
            source: Source::Anonymous,
            admin: false,
            rights: Vec::new(),
            expires_at: None,
            subject: None,
        }
    }

    /// An identity the upstream API vouches for, with no groups.
    pub fn upstream(name: &str) -> Self {
        Self {
            source: Source::Upstream,
            ..Self::local(name)
        }
    }

    /// What the token's `sub` says.
    pub fn subject(&self) -> &str {
        self.subject.as_deref().unwrap_or(&self.name)
    }

    pub fn local(name: &str) -> Self {
        Self {
            name: name.into(),
            groups: Vec::new(),
            source: Source::Local,
            admin: false,
            rights: Vec::new(),
            expires_at: None,
            subject: None,
        }
    }
}

pub use crate::credentials::Credentials;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("invalid username or password")]
    BadCredentials,
    /// The password was right but the account may not log in (disabled, expired).
    #[error("{0}")]
    Refused(String),
    #[error("identity service unavailable: {0}")]
    Unavailable(String),
    #[error("too many failed logins from this address; wait {retry_after} s")]
    TooManyAttempts { retry_after: u64 },
}

/// A salted SHA-256 of the credentials: what caches are keyed by, never the credentials.
pub type CacheKey = [u8; 32];
