//! `explain` with no HTTP in it: who the caller is (as given, or looked up in the sources with
//! `resolve`), which service and client, and the policy's decision for each scope. The CLI
//! (`token-issuer explain`) and the admin API (`POST /admin/v1/explain`) both call [`explain`].

use std::net::IpAddr;
use std::sync::Arc;

use crate::app::App;
use crate::identity::{Identity, Source};
use crate::policy::explain::Explained;
use crate::scope::Scope;

/// At most this many groups given: each may cost the store a query.
const MAX_GROUPS: usize = 100;

/// The question: `POST /admin/v1/explain`'s body, and `token-issuer explain`'s options.
#[derive(Debug, Default, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The account; leave out for the anonymous caller.
    #[serde(default)]
    #[arg(long, default_value = "")]
    pub user: String,
    /// A group the caller is in (repeat for several); ignored with `resolve`, where the
    /// sources say.
    #[serde(default)]
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// The service asked for (one of token.services); the default when left out.
    #[arg(long)]
    pub service: Option<String>,
    /// The client's address, for rules with `ip`; none: 0.0.0.0, outside every network
    /// rules name but 0.0.0.0/0.
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// A scope, as clients send it: repository:org/app:pull,push (repeat for several).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Ask the configured sources (htpasswd, the store, LDAP) who the user is and their
    /// groups, without a password.
    #[serde(default)]
    #[arg(long)]
    pub resolve: bool,
}

/// The answer: the caller as decided on, and each scope's decision.
pub(crate) struct Explanation {
    pub(crate) identity: Arc<Identity>,
    /// Which source the identity came from (`given` when not looked up).
    pub(crate) source: &'static str,
    pub(crate) service: String,
    pub(crate) client: IpAddr,
    pub(crate) decisions: Vec<Explained>,
}

/// Why no explanation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExplainError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unknown(String),
    #[error("{0}")]
    Unavailable(String),
}

pub(crate) async fn explain(app: &App, q: &ExplainRequest) -> Result<Explanation, ExplainError> {
    let scopes = Scope::parse_all(q.scopes.iter().map(String::as_str), app.max_scopes)
        .map_err(|e| ExplainError::Invalid(format!("scope: {e}")))?;
    if scopes.is_empty() {
        return Err(ExplainError::Invalid(
            "name at least one scope (repository:NAME:ACTIONS)".into(),
        ));
    }
    if q.groups.len() > MAX_GROUPS {
        return Err(ExplainError::Invalid(format!(
            "groups: at most {MAX_GROUPS}"
        )));
    }
    let Some(service) = app.signer.service_for(q.service.as_deref()) else {
        return Err(ExplainError::Invalid(format!(
            "service {:?} is not served here; expected one of {:?}",
            q.service.as_deref().unwrap_or_default(),
            app.signer.services
        )));
    };
    let unavailable = |e: crate::identity::AuthError| ExplainError::Unavailable(e.to_string());
    let (identity, source) = if q.user.is_empty() {
        if !app.anonymous {
            // As the realm answers: no decision is made for a caller it refuses.
            return Err(ExplainError::Invalid(
                "the anonymous caller gets no token here (identity.anonymous is off): name a user"
                    .into(),
            ));
        }
        (Arc::new(Identity::anonymous()), "anonymous")
    } else if q.resolve {
        app.auth
            .lookup(&q.user)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                ExplainError::Unknown(format!(
                    "no configured source knows {:?} without their credentials (htpasswd, the \
                     store and LDAP are asked; OIDC and upstream identities cannot be looked \
                     up: give their groups instead)",
                    q.user
                ))
            })?
    } else {
        // As the realm treats an identity whose groups come from outside (OIDC, LDAP): the
        // rules, then the store's grants of those groups.
        let rights = app
            .auth
            .group_rights(&q.groups)
            .await
            .map_err(unavailable)?;
        let identity = Identity {
            name: q.user.clone(),
            groups: q.groups.clone(),
            source: Source::Oidc,
            admin: false,
            rights,
            expires_at: None,
            subject: None,
        };
        (Arc::new(identity), "given")
    };
    let client = q.ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let decisions = app.policy.explain(&identity, service, client, &scopes);
    Ok(Explanation {
        identity,
        source,
        service: service.to_string(),
        client,
        decisions,
    })
}

impl Explanation {
    /// For a terminal.
    pub(crate) fn text(&self, app: &App) -> String {
        let who = &self.identity;
        let name = match who.name.is_empty() {
            true => "(anonymous)".to_string(),
            false => format!("{:?}", who.name),
        };
        let mut out = format!(
            "user {name} ({}), groups [{}], service {:?}, client {}\n",
            self.source,
            who.groups.join(", "),
            self.service,
            self.client
        );
        out.push_str(&app.policy.explain_text(&self.decisions));
        out
    }

    pub(crate) fn json(&self, app: &App) -> serde_json::Value {
        let mut v = app.policy.explain_json(&self.decisions);
        v["user"] = self.identity.name.as_str().into();
        v["groups"] = self.identity.groups.clone().into();
        v["source"] = self.source.into();
        v["service"] = self.service.as_str().into();
        v["ip"] = self.client.to_string().into();
        v
    }
}

/// `token-issuer explain`: the decisions as text (or JSON), and with `lint` the rules that
/// never apply. `Ok(false)` when the lint found something, so scripts can fail on it.
pub async fn command(
    cfg: &crate::config::Config,
    q: &ExplainRequest,
    lint: bool,
    json: bool,
) -> anyhow::Result<bool> {
    let app = App::build_offline(cfg).await?;
    let mut clean = true;
    if lint {
        let warnings = app.policy.acl.shadow_warnings();
        for w in &warnings {
            println!("warning: {w}");
        }
        if warnings.is_empty() {
            println!("no rule is shadowed by an earlier one");
        }
        clean = warnings.is_empty();
        if q.scopes.is_empty() {
            return Ok(clean);
        }
    }
    let answer = explain(&app, q).await?;
    match json {
        true => println!("{:#}", answer.json(&app)),
        false => print!("{}", answer.text(&app)),
    }
    Ok(clean)
}
