//! `/admin/v1/groups`, `/admin/v1/groups/{name}` and `/admin/v1/groups/{name}/members[/{user}]`.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, Body, Request};
use serde::Deserialize;
use serde_json::json;

use super::{admin, json_body, listing, no_content, page, ApiResult};
use crate::app::App;
use crate::http::json_response;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewGroup {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewMember {
    user: String,
}

#[handler]
pub(crate) async fn list(req: &Request, Data(app): Data<&Arc<App>>) -> ApiResult {
    let (_who, users) = admin(req, app).await?;
    let (after, limit) = page(req)?;
    let found = users.store.groups(&after, limit).await?;
    let last = found.last().map(|g| g.name.clone());
    let items = found.iter().map(|g| json!({"name": g.name})).collect();
    Ok(listing(req, "groups", items, last, limit))
}

#[handler]
pub(crate) async fn add(req: &Request, body: Body, Data(app): Data<&Arc<App>>) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    let g: NewGroup = json_body(req, body).await?;
    let name = users.store.add_group(&g.name).await?;
    tracing::info!(by = ?who.name, group = ?name, "admin API: group created");
    Ok(json_response(StatusCode::CREATED, &json!({ "name": name })))
}

#[handler]
pub(crate) async fn remove(
    req: &Request,
    Path(name): Path<String>,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    users.store.delete_group(&name).await?;
    // Its members lose its grants: every cached account may be affected.
    users.invalidate(None).await;
    tracing::info!(by = ?who.name, group = ?name, "admin API: group deleted");
    Ok(no_content())
}

#[handler]
pub(crate) async fn members(
    req: &Request,
    Path(name): Path<String>,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (_who, users) = admin(req, app).await?;
    let (after, limit) = page(req)?;
    let found = users.store.members(&name, &after, limit).await?;
    let last = found.last().cloned();
    let items = found.iter().map(|u| json!({"user": u})).collect();
    Ok(listing(req, "members", items, last, limit))
}

#[handler]
pub(crate) async fn add_member(
    req: &Request,
    Path(name): Path<String>,
    body: Body,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    let m: NewMember = json_body(req, body).await?;
    users.store.add_member(&name, &m.user).await?;
    users.invalidate(Some(&m.user)).await;
    tracing::info!(by = ?who.name, group = ?name, user = ?m.user, "admin API: member added");
    Ok(json_response(StatusCode::CREATED, &json!({"user": m.user})))
}

#[handler]
pub(crate) async fn remove_member(
    req: &Request,
    Path((name, user)): Path<(String, String)>,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    users.store.remove_member(&name, &user).await?;
    users.invalidate(Some(&user)).await;
    tracing::info!(by = ?who.name, group = ?name, user = ?user, "admin API: member removed");
    Ok(no_content())
}
