//! What identity hands on: the proven [`Caller`].

use std::sync::Arc;

use super::types::{CacheKey, Credentials, Identity, Source};

/// A request's proven caller: who it is and, for an identity the upstream API vouched for, the
/// credential that API is asked with again (per repository, and sealed into a refresh token).
/// Only this module builds one, so an upstream caller without its credential cannot exist, and
/// no other caller carries a secret.
pub enum Caller {
    /// htpasswd and store users, and the anonymous caller.
    Known(Arc<Identity>),
    Upstream {
        identity: Arc<Identity>,
        credential: UpstreamCredential,
    },
}

/// The credential an upstream identity logged in with, and its cache key (per-repository
/// answers are cached under it, so one caller's answer is never another's).
pub struct UpstreamCredential {
    credentials: Credentials,
    key: CacheKey,
}

impl UpstreamCredential {
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn key(&self) -> CacheKey {
        self.key
    }
}

impl Caller {
    pub fn anonymous() -> Self {
        Self::Known(Arc::new(Identity::anonymous()))
    }

    pub fn identity(&self) -> &Arc<Identity> {
        match self {
            Self::Known(identity) | Self::Upstream { identity, .. } => identity,
        }
    }

    /// `identity` as proven by `creds` (whose cache key is `key`).
    pub(super) fn proven(identity: Arc<Identity>, creds: &Credentials, key: CacheKey) -> Self {
        if identity.source == Source::Upstream {
            Self::Upstream {
                identity,
                credential: UpstreamCredential {
                    credentials: creds.clone(),
                    key,
                },
            }
        } else {
            Self::Known(identity)
        }
    }
}
