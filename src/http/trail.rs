//! What a token request leaves behind: the audit line (see `crate::audit`). The realm builds a
//! [`Trail`] as the request gets further (who, what decided, what was signed) and hands it here
//! with the outcome, whatever it was.

use std::net::IpAddr;

use crate::audit::{Audit, Record};
use crate::identity::{Identity, Source};
use crate::metrics::Outcome;
use crate::policy::DecidedBy;
use crate::scope::Scope;
use crate::token::Claims;

/// How far a request got.
pub(super) struct Trail<'a> {
    pub identity: Option<&'a Identity>,
    pub decided_by: &'a [DecidedBy],
    pub claims: Option<&'a Claims>,
    pub refresh_issued: bool,
}

/// What was asked, and by whom (as far as it could be parsed).
pub(super) struct Asked<'a> {
    pub method: &'a str,
    pub client: IpAddr,
    pub client_id: &'a str,
    pub scopes: &'a [Scope],
    /// `password`, `refresh_token`, `anonymous`, or `""` when the request did not parse.
    pub grant: &'static str,
    /// The service the request named (`""`: none, or it did not parse).
    pub service: &'a str,
}

fn source(s: Source) -> &'static str {
    match s {
        Source::Anonymous => "anonymous",
        Source::Local => "htpasswd",
        Source::Store => "store",
        Source::Upstream => "upstream",
        Source::Oidc => "oidc",
        Source::Ldap => "ldap",
    }
}

/// Client-controlled text (a `client_id`, an echoed value in a refusal) is cut to this many
/// bytes in the audit line: a line stays small whatever a request carries.
const MAX_TEXT: usize = 256;

/// `s` cut to at most `max` bytes, at a character boundary.
fn capped(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes the audit line; returns its request id (also sent as `X-Request-Id`).
pub(super) async fn write(
    audit: &Audit,
    asked: &Asked<'_>,
    trail: &Trail<'_>,
    outcome: Outcome,
    reason: &str,
) -> String {
    let request_id = crate::audit::request_id();
    let id = trail.identity;
    let record = Record {
        time: std::time::SystemTime::now(),
        request_id: &request_id,
        client_ip: asked.client,
        method: asked.method,
        client_id: capped(asked.client_id, MAX_TEXT),
        user: id.map_or("", |i| i.name.as_str()),
        source: id.map_or("", |i| source(i.source)),
        grant: asked.grant,
        service: trail
            .claims
            .map_or(capped(asked.service, MAX_TEXT), |c| c.aud.as_str()),
        requested: asked.scopes,
        granted: trail.claims.as_ref().map_or(&[], |c| c.access.as_slice()),
        decided_by: trail.decided_by,
        outcome: outcome.as_str(),
        reason: capped(reason, 2 * MAX_TEXT),
        jti: trail.claims.as_ref().map_or("", |c| c.jti.as_str()),
        exp: trail.claims.as_ref().map(|c| c.exp),
        refresh_token_issued: trail.refresh_issued,
    };
    audit.record(&record).await;
    request_id
}

#[cfg(test)]
mod tests {
    use super::capped;

    #[test]
    fn capped_at_a_character_boundary() {
        assert_eq!(capped("short", 10), "short");
        assert_eq!(capped("abcdef", 3), "abc");
        // "é" is two bytes: a cut inside it backs off to before it.
        assert_eq!(capped("aé", 2), "a");
    }
}
