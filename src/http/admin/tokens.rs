//! `/admin/v1/tokens?user=NAME` and `/admin/v1/tokens/{id}`: refresh tokens, listed and revoked.
//! The user may be of any source (htpasswd, store, upstream): tokens are kept by name.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, Request};
use serde_json::json;

use super::{admin, no_content, ApiError, ApiResult};
use crate::app::App;
use crate::http::json_response;

fn user_param(req: &Request) -> Result<String, ApiError> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.into_owned())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::Invalid("name the user: ?user=NAME".into()))
}

#[handler]
pub(crate) async fn list(req: &Request, Data(app): Data<&Arc<App>>) -> ApiResult {
    let (_who, users) = admin(req, app).await?;
    let user = user_param(req)?;
    let found = users.store.refresh_tokens_of(&user).await?;
    let items: Vec<_> = found.iter().map(|t| t.to_json()).collect();
    Ok(json_response(StatusCode::OK, &json!({ "tokens": items })))
}

/// `DELETE /admin/v1/tokens?user=NAME`: every refresh token of the user.
#[handler]
pub(crate) async fn revoke_all(req: &Request, Data(app): Data<&Arc<App>>) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    let user = user_param(req)?;
    let n = users.store.revoke_refresh_tokens_of(&user).await?;
    users.refresh.invalidate_all();
    tracing::info!(by = ?who.name, user = ?user, count = n, "admin API: refresh tokens revoked");
    Ok(json_response(StatusCode::OK, &json!({ "revoked": n })))
}

#[handler]
pub(crate) async fn revoke(
    req: &Request,
    Path(id): Path<String>,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    users.store.revoke_refresh_token(&id).await?;
    users.refresh.invalidate_all();
    tracing::info!(by = ?who.name, id = ?id, "admin API: refresh token revoked");
    Ok(no_content())
}
