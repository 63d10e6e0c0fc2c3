//! Issuing a token, with no HTTP in it: a [`TokenRequest`] (however it arrived) is checked,
//! its caller authenticated (a password, a refresh token, or the anonymous caller), the scopes
//! authorized, the token signed, and a refresh token minted when one was asked for. The realm
//! (`http/realm.rs`) parses the request, calls [`issue`], and renders what comes back; the
//! [`Attempt`] carries what the audit line and the metrics need, however far it got.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::app::App;
use crate::credentials::Credentials;
use crate::identity::{AuthError, Caller, Identity};
use crate::policy::{DecidedBy, PolicyError};
use crate::scope::Scope;
use crate::token::Claims;

/// Client ids are short names (`docker`, `containerd-client`); a refresh token stores one.
const MAX_CLIENT_ID_BYTES: usize = 200;

/// What a token request asks for, whichever form it came in.
#[derive(Debug)]
pub(crate) struct TokenRequest {
    /// For the log: how the request came (`GET` or `POST`).
    pub(crate) method: &'static str,
    /// The client's address: the socket's peer, or what a trusted proxy says it forwarded.
    pub(crate) client: IpAddr,
    pub(crate) service: Option<String>,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) account: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) credentials: Option<Credentials>,
    /// `grant_type=refresh_token`'s token, or a GET's Basic password with an empty user.
    pub(crate) refresh_token: Option<String>,
    /// Asked for a refresh token: GET `offline_token=true`, POST `access_type=offline`.
    pub(crate) offline: bool,
}

impl TokenRequest {
    pub(crate) fn new() -> Self {
        Self {
            method: "GET",
            client: IpAddr::from([0, 0, 0, 0]),
            service: None,
            scopes: Vec::new(),
            account: None,
            client_id: None,
            credentials: None,
            refresh_token: None,
            offline: false,
        }
    }

    /// How the caller asked to be known: `refresh_token`, `password` or `anonymous`.
    pub(crate) fn grant(&self) -> &'static str {
        if self.refresh_token.is_some() {
            "refresh_token"
        } else if self.credentials.is_some() {
            "password"
        } else {
            "anonymous"
        }
    }
}

/// Why no token was issued.
#[derive(Debug)]
pub(crate) enum IssueError {
    /// The request is wrong in a way its sender can fix (`code` is the realm's error code).
    Invalid { code: &'static str, message: String },
    /// More than a limit allows.
    TooLarge { code: &'static str, message: String },
    /// No credentials, and anonymous callers are not allowed.
    NoCredentials,
    /// The caller is not who they say, may not log in, or the identity side is away.
    Auth(AuthError),
    /// Authorization could not be decided (too many checks, the upstream API away).
    Policy(PolicyError),
    /// Signing failed.
    Sign,
}

/// A token signed, with what goes into the answer.
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) claims: Claims,
    pub(crate) issued_at: SystemTime,
    pub(crate) refresh_token: Option<String>,
    /// The granted scopes, space-separated: OAuth2 answers of the refresh-token flows only, so
    /// every other answer stays what clients have always been given.
    pub(crate) scope: Option<String>,
}

/// What a request came to, and how far it got (for the audit line and the metrics).
pub(crate) struct Attempt {
    pub(crate) identity: Option<Arc<Identity>>,
    pub(crate) decided_by: Vec<DecidedBy>,
    pub(crate) result: Result<Issued, IssueError>,
}

/// Checks, authenticates, authorizes and signs; each stage hands the next what it found.
pub(crate) async fn issue(app: &App, tr: &TokenRequest) -> Attempt {
    let failed = |identity, e| Attempt {
        identity,
        decided_by: Vec::new(),
        result: Err(e),
    };
    let service = match check(app, tr) {
        Ok(s) => s,
        Err(e) => return failed(None, e),
    };
    let caller = match authenticate(app, tr).await {
        Ok(c) => c,
        Err(e) => return failed(None, e),
    };
    let identity = caller.identity().clone();
    let authorized = app
        .policy
        .authorize(&caller, service, tr.client, &tr.scopes);
    let decision = match authorized.await {
        Ok(d) => d,
        Err(e) => return failed(Some(identity), IssueError::Policy(e)),
    };
    let result = sign(app, tr, &caller, service, decision.granted).await;
    Attempt {
        identity: Some(identity),
        decided_by: decision.decided_by,
        result,
    }
}

/// Who the caller is: a refresh token, a password, or the anonymous caller.
async fn authenticate(app: &App, tr: &TokenRequest) -> Result<Caller, IssueError> {
    let Some(rt) = tr.refresh_token.as_deref() else {
        return login(app, tr).await;
    };
    // Boxed, as the identity module's slow paths are: see `Authenticator::identify`.
    Box::pin(app.auth.refresh(rt, tr.client_id.as_deref(), tr.client))
        .await
        .map_err(|e| {
            tracing::info!(
                method = tr.method,
                client_id = ?tr.client_id.as_deref().unwrap_or(""),
                peer = %tr.client,
                "refresh refused: {e}"
            );
            IssueError::Auth(e)
        })
}

/// The token for what was granted, and a refresh token for a password login that asked.
async fn sign(
    app: &App,
    tr: &TokenRequest,
    caller: &Caller,
    service: &str,
    access: Vec<Scope>,
) -> Result<Issued, IssueError> {
    let identity = caller.identity();
    let client_id = tr.client_id.as_deref().unwrap_or("");
    tracing::debug!(
        user = ?identity.name,
        client_id = ?client_id,
        refresh = tr.refresh_token.is_some(),
        requested = ?tr.scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        granted = ?access.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "token issued"
    );
    let oauth_refresh_flow = tr.refresh_token.is_some() || tr.offline;
    let scope = (tr.method == "POST" && oauth_refresh_flow).then(|| {
        access
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    });
    let now = SystemTime::now();
    let signed = app
        .signer
        .issue_until(
            identity.subject(),
            service,
            access,
            now,
            identity.expires_at,
        )
        .map_err(|_| IssueError::Sign)?;
    // If the store cannot take a refresh token, the login still succeeds without one: the
    // client keeps the password instead.
    let password_login = tr.credentials.is_some() && tr.refresh_token.is_none();
    let refresh_token = match password_login && tr.offline {
        true => Box::pin(app.auth.mint_refresh(caller, client_id))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(user = ?identity.name, "no refresh token issued: {e}");
                None
            }),
        false => None,
    };
    Ok(Issued {
        token: signed.token,
        claims: signed.claims,
        issued_at: now,
        refresh_token,
        scope,
    })
}

/// What is wrong with the request itself, before anyone is authenticated; else the service
/// the token is for (the one asked for, or the default).
fn check<'a>(app: &'a App, tr: &TokenRequest) -> Result<&'a str, IssueError> {
    if tr
        .client_id
        .as_ref()
        .is_some_and(|c| c.len() > MAX_CLIENT_ID_BYTES)
    {
        return Err(IssueError::TooLarge {
            code: "INVALID_REQUEST",
            message: format!("client_id: at most {MAX_CLIENT_ID_BYTES} bytes"),
        });
    }
    let Some(service) = app.signer.service_for(tr.service.as_deref()) else {
        let asked = tr.service.as_deref().unwrap_or_default();
        let served = &app.signer.services;
        return Err(IssueError::Invalid {
            code: "INVALID_SERVICE",
            message: match served.as_slice() {
                [one] => format!("service {asked:?} is not served here; expected {one:?}"),
                _ => format!("service {asked:?} is not served here; expected one of {served:?}"),
            },
        });
    };
    if let (Some(account), Some(c)) = (tr.account.as_deref(), tr.credentials.as_ref()) {
        if account != c.username {
            return Err(IssueError::Invalid {
                code: "INVALID_REQUEST",
                message: format!(
                    "account {account:?} differs from the user of the credentials, {:?}",
                    c.username
                ),
            });
        }
    }
    Ok(service)
}

/// A password login (or the anonymous caller, when allowed).
async fn login(app: &App, tr: &TokenRequest) -> Result<Caller, IssueError> {
    match &tr.credentials {
        Some(c) => app.auth.authenticate(c, tr.client).await.map_err(|e| {
            // At info: an operator must see why a client fails without turning on debug.
            // User-controlled strings are logged quoted and escaped (`?`): a name holding a
            // newline or a terminal escape cannot forge or hide a log line.
            tracing::info!(
                user = ?c.username,
                method = tr.method,
                client_id = ?tr.client_id.as_deref().unwrap_or(""),
                peer = %tr.client,
                "login refused: {e}"
            );
            IssueError::Auth(e)
        }),
        None if app.anonymous => Ok(Caller::anonymous()),
        None => {
            tracing::info!(
                method = tr.method,
                client_id = ?tr.client_id.as_deref().unwrap_or(""),
                peer = %tr.client,
                "anonymous request refused: no credentials given and identity.anonymous is off"
            );
            Err(IssueError::NoCredentials)
        }
    }
}
