//! `/admin/v1/grants` and `/admin/v1/grants/{id}`.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, Body, Request};
use serde::Deserialize;

use super::{admin, json_body, listing, no_content, page, ApiResult};
use crate::app::App;
use crate::http::json_response;
use crate::store::NewGrant;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantIn {
    user: Option<String>,
    group: Option<String>,
    /// A glob over the services the grant applies to (`token.services`); none: every one.
    service: Option<String>,
    #[serde(rename = "type", default = "repository")]
    resource_type: String,
    name: String,
    actions: Vec<String>,
}

fn repository() -> String {
    "repository".into()
}

#[handler]
pub(crate) async fn list(req: &Request, Data(app): Data<&Arc<App>>) -> ApiResult {
    let (_who, users) = admin(req, app).await?;
    let (after, limit) = page(req)?;
    let found = users.store.grants(&after, limit).await?;
    let last = found.last().map(|g| g.id.clone());
    let items = found.iter().map(|g| g.to_json()).collect();
    Ok(listing(req, "grants", items, last, limit))
}

#[handler]
pub(crate) async fn add(req: &Request, body: Body, Data(app): Data<&Arc<App>>) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    let g: GrantIn = json_body(req, body).await?;
    let grant = users
        .store
        .add_grant(&NewGrant {
            user: g.user,
            group: g.group,
            service: g.service,
            resource_type: g.resource_type,
            name: g.name,
            actions: g.actions,
        })
        .await?;
    users.invalidate(grant.user.as_deref()).await;
    tracing::info!(
        by = ?who.name,
        id = %grant.id,
        user = ?grant.user,
        group = ?grant.group,
        service = ?grant.service,
        name = ?grant.name,
        actions = ?grant.actions,
        "admin API: grant added"
    );
    Ok(json_response(StatusCode::CREATED, &grant.to_json()))
}

#[handler]
pub(crate) async fn remove(
    req: &Request,
    Path(id): Path<String>,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (who, users) = admin(req, app).await?;
    users.store.delete_grant(&id).await?;
    users.invalidate(None).await;
    tracing::info!(by = ?who.name, id = ?id, "admin API: grant deleted");
    Ok(no_content())
}
