//! `/admin/v1/users` and `/admin/v1/users/{name}`.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, Body, Request};
use serde::{Deserialize, Deserializer};

use super::{admin, json_body, listing, no_content, page, ApiError, ApiResult};
use crate::app::App;
use crate::http::json_response;
use crate::store::{self, UserPatch};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    name: String,
    password: Option<String>,
    /// Instead of a password: make a secret (`tis_...`), stored under the pepper and
    /// returned once.
    #[serde(default)]
    generate: bool,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    disabled: bool,
    expires_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Patch {
    password: Option<String>,
    admin: Option<bool>,
    disabled: Option<bool>,
    /// Absent: unchanged; `null`: never expires; a time: expires then.
    #[serde(default, deserialize_with = "present")]
    pub(crate) expires_at: Option<Option<String>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`, the default).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The stored form of a new credential and, when generated, the secret to answer with once:
/// `{"password"}` (bcrypt) or `{"generate": true}` (a secret under the store's pepper).
async fn credential(
    users: &crate::identity::store::StoreUsers,
    password: Option<String>,
    generate: bool,
) -> Result<(String, Option<String>), ApiError> {
    match (password, generate) {
        (Some(pw), false) => Ok((hash(pw).await?, None)),
        (None, true) => {
            let (secret, stored) = users.store.new_secret()?;
            Ok((stored, Some(secret)))
        }
        _ => Err(ApiError::Invalid(
            "give either \"password\" or \"generate\": true".into(),
        )),
    }
}

/// bcrypt on a blocking thread: ~60 ms of CPU that must not stall the runtime.
async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || store::hash_password(&password))
        .await
        .map_err(|_| ApiError::Unavailable("password hashing failed".into()))?
        .map_err(ApiError::from)
}

#[handler]
pub(crate) async fn list(req: &Request, Data(app): Data<&Arc<App>>) -> ApiResult {
    let (_who, users) = admin(req, app).await?;
    let (after, limit) = page(req)?;
    let filter = user_filter(req)?;
    let found = users.store.users_where(&after, limit, filter).await?;
    let last = found.last().map(|u| u.name.clone());
    let items = found.iter().map(store::User::to_json).collect();
    Ok(listing(req, "users", items, last, limit))
}

#[handler]
pub(crate) async fn show(
    req: &Request,
    Path(name): Path<String>,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (_who, users) = admin(req, app).await?;
    let user = users
        .store
        .user(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {name} not found")))?;
    Ok(json_response(StatusCode::OK, &user.to_json()))
}

#[handler]
pub(crate) async fn add(req: &Request, body: Body, Data(app): Data<&Arc<App>>) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    let new: NewUser = json_body(req, body).await?;
    if app.auth.local_knows(&new.name) {
        return Err(ApiError::Conflict(format!(
                "user {} already exists in the htpasswd file (identity.htpasswd); a name lives in one source",
                new.name
            )));
    }
    let expires_at = new
        .expires_at
        .as_deref()
        .map(store::parse_time)
        .transpose()?;
    let (password_hash, secret) = credential(users, new.password, new.generate).await?;
    let name = users
        .store
        .add_user(
            &new.name,
            &password_hash,
            new.admin,
            new.disabled,
            expires_at,
        )
        .await?;
    users.invalidate(Some(&name)).await;
    tracing::info!(by = ?who.name, user = ?name, admin = new.admin, disabled = new.disabled, "admin API: user created");
    let user = users
        .store
        .user(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {name} not found")))?;
    let mut answer = user.to_json();
    if let Some(s) = secret {
        answer["secret"] = s.into();
    }
    Ok(json_response(StatusCode::CREATED, &answer))
}

#[handler]
pub(crate) async fn update(
    req: &Request,
    Path(name): Path<String>,
    body: Body,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    let p: Patch = json_body(req, body).await?;
    let patch = UserPatch {
        password_hash: match p.password {
            Some(pw) => Some(hash(pw).await?),
            None => None,
        },
        admin: p.admin,
        disabled: p.disabled,
        expires_at: match p.expires_at {
            Some(Some(t)) => Some(Some(store::parse_time(&t)?)),
            Some(None) => Some(None),
            None => None,
        },
    };
    users.store.update_user(&name, &patch).await?;
    users.invalidate(Some(&name)).await;
    tracing::info!(
        by = ?who.name,
        user = ?name,
        password_changed = patch.password_hash.is_some(),
        admin = ?patch.admin,
        disabled = ?patch.disabled,
        expires_at = ?patch.expires_at,
        "admin API: user updated"
    );
    let user = users
        .store
        .user(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {name} not found")))?;
    Ok(json_response(StatusCode::OK, &user.to_json()))
}

#[handler]
pub(crate) async fn remove(
    req: &Request,
    Path(name): Path<String>,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    if who.name == name {
        return Err(ApiError::Invalid(
            "an admin cannot delete themselves; ask another admin, or use the CLI".into(),
        ));
    }
    users.store.delete_user(&name).await?;
    users.invalidate(Some(&name)).await;
    tracing::info!(by = ?who.name, user = ?name, "admin API: user deleted");
    Ok(no_content())
}

/// `?expiring_within=7d`: only accounts that expire after now and within that time;
/// `?unused_for=90d`: only those not used for that long. One or the other.
fn user_filter(req: &Request) -> Result<store::UserFilter, ApiError> {
    let query = req.uri().query().unwrap_or("");
    let span = |key: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| {
                store::parse_within(&v).map_err(|e| ApiError::Invalid(format!("{key}: {e}")))
            })
            .transpose()
    };
    match (span("expiring_within")?, span("unused_for")?) {
        (None, None) => Ok(store::UserFilter::All),
        (Some(w), None) => Ok(store::UserFilter::Expiring(w)),
        (None, Some(u)) => Ok(store::UserFilter::Unused(u)),
        (Some(_), Some(_)) => Err(ApiError::Invalid(
            "give expiring_within or unused_for, not both".into(),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: Option<String>,
    #[serde(default)]
    generate: bool,
}

/// `POST /admin/v1/users/{name}/password`: `{"password": "..."}` or `{"generate": true}` (the
/// fresh one is in the answer, once). The expiry stays; the user's refresh tokens are revoked.
#[handler]
pub(crate) async fn set_password(
    req: &Request,
    Path(name): Path<String>,
    body: Body,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    let p: NewPassword = json_body(req, body).await?;
    let (stored, secret) = credential(users, p.password, p.generate).await?;
    let revoked = users.store.set_password(&name, stored).await?;
    users.invalidate(Some(&name)).await;
    let generated = secret.is_some();
    tracing::info!(by = ?who.name, user = ?name, generated, revoked, "admin API: password changed");
    let mut answer = serde_json::json!({"name": name, "refresh_tokens_revoked": revoked});
    if let Some(s) = secret {
        answer["secret"] = s.into();
    }
    Ok(json_response(StatusCode::OK, &answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Leaked {
    secret: String,
}

/// `POST /admin/v1/find-secret` with `{"secret"}`: whose generated secret it is (by its keyed
/// hash), `{"name"}`, or 404. The secret is in the body, never in a URL a proxy logs.
#[handler]
pub(crate) async fn find_secret(
    req: &Request,
    body: Body,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    let p: Leaked = json_body(req, body).await?;
    if !store::looks_generated(&p.secret) {
        return Err(ApiError::Invalid(
            "\"secret\" is not a generated secret (tis_ and 32 base32 characters); a \
             person's password cannot be looked up"
                .into(),
        ));
    }
    let name = users.store.find_secret(&p.secret).await?;
    tracing::info!(by = ?who.name, found = name.is_some(), "admin API: secret looked up");
    match name {
        Some(n) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"name": n}),
        )),
        None => Err(ApiError::NotFound(
            "no user has this secret under the configured peppers (store.pepper_files)".into(),
        )),
    }
}
