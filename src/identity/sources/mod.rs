//! The identity sources, one file each, behind one trait. The [`super::Authenticator`] asks
//! them in the configured order; the first that decides the credentials answers. What they
//! share (caches keyed by the salted credentials, damping, bcrypt slots, the failure memory)
//! is [`super::checks`], which each source calls as its kind of check needs.
//!
//! Adding a source is a new file here that implements [`IdentitySource`], and one line where
//! `app::build_auth` builds the chain.

pub mod htpasswd;
pub mod ldap;
pub mod oidc;
pub mod open_balena;
pub mod refresh;
pub mod store;
pub mod upstream;

use std::sync::Arc;

use futures::future::BoxFuture;

use super::checks::Attempt;
use super::types::{AuthError, Identity};

/// A source's answer for one credential.
pub(crate) enum Answer {
    /// The source verified the credential: this is who it proves.
    Known(Arc<Identity>),
    /// The credential is not one this source decides (a name it does not hold, a password
    /// that is not its kind of token): the next source is asked.
    NotMine,
    /// The source decides this credential and refuses it: a wrong password, an account that
    /// may not log in, or the source unreachable (a 503, never a guess).
    Refused(AuthError),
}

impl From<Result<Arc<Identity>, AuthError>> for Answer {
    fn from(r: Result<Arc<Identity>, AuthError>) -> Self {
        match r {
            Ok(id) => Self::Known(id),
            Err(e) => Self::Refused(e),
        }
    }
}

/// One identity source. Futures are boxed so that the chain can hold sources of any kind;
/// one allocation per request is nothing beside a token's signature.
pub(crate) trait IdentitySource: Send + Sync {
    /// For logs.
    fn name(&self) -> &'static str;

    /// Decides `at.creds` or passes them on.
    fn answer<'a>(&'a self, at: &'a Attempt<'a>) -> BoxFuture<'a, Answer>;

    /// Whether `name` is one of this source's accounts. A source whose names are built
    /// ([`Self::builds_names`]) may not hand out another source's account name: that would
    /// give its caller that account's rules.
    fn holds<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async { Ok(false) })
    }

    /// Whether the identity's name is built by the source (from claims, an API's answer, a
    /// directory entry) rather than being the login name the sources before it did not hold.
    fn builds_names(&self) -> bool {
        false
    }

    /// The refusal when a built name is another source's account.
    fn taken(&self, _name: &str) -> AuthError {
        AuthError::BadCredentials
    }

    /// Whether the identity's groups take the store's group grants (identities whose groups
    /// come from outside: OIDC claims, a directory).
    fn takes_group_grants(&self) -> bool {
        false
    }

    /// The identity this source would prove for `name`, found without a password (`explain
    /// --resolve`); `None` when the name is not this source's, or it cannot tell without the
    /// caller's own credential (OIDC, the upstream API).
    fn lookup<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async { Ok(None) })
    }
}
