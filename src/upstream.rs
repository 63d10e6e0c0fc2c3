//! The upstream API's HTTP client, shared by identity (who is this credential?) and policy (may
//! it use this repository?), with the bounds that keep one caller from turning the service into
//! a load generator, and its own error: every failure is "unavailable", which callers turn into
//! a 503, never a token on a guess.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::Semaphore;

use crate::config::{CredentialForwarding, UpstreamConfig};
use crate::credentials::Credentials;

/// Why a call gave no answer to act on (the text says how, for the client; the log has the URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Unavailable(String),
}

/// What an upstream endpoint answered, reduced to what the caller acts on.
pub(crate) enum Answer {
    Granted(serde_json::Value),
    Refused(StatusCode),
}

/// The HTTP client, shared by identity and repository calls, with the bounds that keep one caller from turning the service into a load generator: at most
/// `upstream.max_concurrent` calls in flight in all (a call waits at most the timeout for its
/// turn), and answers read only up to `upstream.max_response_bytes`.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    slots: Arc<Semaphore>,
    timeout: Duration,
    max_body: usize,
}

impl Client {
    pub fn new(cfg: &UpstreamConfig) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        Ok(Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .connect_timeout(timeout)
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(cfg.max_concurrent)
                .user_agent(concat!("token-issuer/", env!("CARGO_PKG_VERSION")))
                .build()?,
            slots: Arc::new(Semaphore::new(cfg.max_concurrent)),
            timeout,
            max_body: cfg.max_response_bytes,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// 2xx must carry JSON; 401/403 refuse; a 404 means a wrong URL, so it is a failure.
    Identity,
    /// The 2xx body is not read; 401/403/404 refuse (no such record, or not readable).
    Repository,
    /// A query about repositories whose 2xx JSON is the answer (open-balena-api's OData
    /// resources); 401/403 refuse; a 404 is a wrong URL, so a failure.
    Lookup,
}

/// Whose credential a call carries.
pub(crate) enum Auth<'a> {
    /// The caller's, forwarded as configured (`upstream.credentials`).
    Caller(CredentialForwarding, &'a Credentials),
    /// This service's own API key, as a Bearer token.
    Service(&'a str),
}

/// One call: a GET, or a POST when it has a JSON body.
pub(crate) struct Call<'a> {
    pub(crate) url: &'a str,
    pub(crate) auth: Auth<'a>,
    pub(crate) body: Option<&'a serde_json::Value>,
    pub(crate) endpoint: Endpoint,
}

/// One GET as the caller. Redirects are never followed: a 3xx (a login page, a moved API) is a
/// failure, so a proxy's 200 page can never pass for a grant.
pub(crate) async fn call(
    client: &Client,
    url: &str,
    forwarding: CredentialForwarding,
    creds: &Credentials,
    endpoint: Endpoint,
) -> Result<Answer, UpstreamError> {
    send(
        client,
        &Call {
            url,
            auth: Auth::Caller(forwarding, creds),
            body: None,
            endpoint,
        },
    )
    .await
}

/// One call, timed and counted in the metrics.
pub(crate) async fn send(client: &Client, c: &Call<'_>) -> Result<Answer, UpstreamError> {
    let started = std::time::Instant::now();
    let result = call_once(client, c).await;
    let outcome = match &result {
        Ok(Answer::Granted(_)) => "granted",
        Ok(Answer::Refused(_)) => "refused",
        Err(_) => "error",
    };
    let endpoint = match c.endpoint {
        Endpoint::Identity => "identity",
        Endpoint::Repository | Endpoint::Lookup => "repository",
    };
    crate::metrics::get().upstream_call(endpoint, outcome, started.elapsed());
    result
}

async fn call_once(client: &Client, c: &Call<'_>) -> Result<Answer, UpstreamError> {
    let url = c.url;
    let _slot = tokio::time::timeout(client.timeout, client.slots.acquire())
        .await
        .map_err(|_| unavailable(url, "too many calls to it are already in progress"))?
        .map_err(|_| unavailable(url, "shutting down"))?;
    let req = match c.body {
        Some(body) => client.http.post(url).json(body),
        None => client.http.get(url),
    }
    .header(reqwest::header::ACCEPT, "application/json");
    let req = match c.auth {
        Auth::Caller(CredentialForwarding::Bearer, creds) => req.bearer_auth(&creds.password),
        Auth::Caller(CredentialForwarding::Basic, creds) => {
            req.basic_auth(&creds.username, Some(&creds.password))
        }
        Auth::Service(key) => req.bearer_auth(key),
    };
    let mut resp = req
        .send()
        .await
        .map_err(|e| unavailable(url, &describe(&e)))?;
    let status = resp.status();
    if status.is_success() {
        if c.endpoint == Endpoint::Repository {
            return Ok(Answer::Granted(serde_json::Value::Null));
        }
        let bytes = read_limited(&mut resp, client.max_body, url).await?;
        return serde_json::from_slice(&bytes)
            .map(Answer::Granted)
            .map_err(|_| unavailable(url, "its 2xx answer is not JSON"));
    }
    match (status, c.endpoint) {
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => Ok(Answer::Refused(status)),
        (StatusCode::NOT_FOUND, Endpoint::Repository) => Ok(Answer::Refused(status)),
        _ => Err(unavailable(url, &format!("it answered {status}"))),
    }
}

/// Logs which upstream failed and how (the URL without its query or any user:password), and
/// tells the client only how: the URL is the operator's business.
/// The body, or an error as soon as it passes `max` bytes (the rest is never read: the
/// connection is dropped with the response).
async fn read_limited(
    resp: &mut reqwest::Response,
    max: usize,
    url: &str,
) -> Result<Vec<u8>, UpstreamError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(unavailable(url, &too_much(max)));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| unavailable(url, &describe(&e)))?
    {
        if body.len() + chunk.len() > max {
            return Err(unavailable(url, &too_much(max)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_much(max: usize) -> String {
    format!("it answered too much (more than {max} bytes; upstream.max_response_bytes)")
}

pub(crate) fn unavailable(url: &str, how: &str) -> UpstreamError {
    let shown = match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    };
    tracing::warn!(upstream = %shown, "upstream identity API failed: {how}");
    UpstreamError::Unavailable(how.to_string())
}

pub(crate) fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer within the timeout".into()
    } else if e.is_connect() {
        "connection failed (refused or unreachable)".into()
    } else if e.is_redirect() {
        // The redirect policy's own words (which hop was refused and why); never credentials,
        // which travel in headers, not in the URLs it names.
        match std::error::Error::source(e) {
            Some(why) => format!("a redirect was not followed: {why}"),
            None => "a redirect was not followed".into(),
        }
    } else {
        "the request failed".into()
    }
}
