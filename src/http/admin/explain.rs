//! `POST /admin/v1/explain`: `token-issuer explain` for an admin, answered as JSON.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Body, Request};

use super::{admin, json_body, ApiError, ApiResult};
use crate::app::App;
use crate::explaining::{explain, ExplainError, ExplainRequest};
use crate::http::json_response;

#[handler]
pub(crate) async fn explain_route(
    req: &Request,
    body: Body,
    Data(app): Data<&Arc<App>>,
) -> ApiResult {
    let (_who, _users) = admin(req, app).await?;
    let q: ExplainRequest = json_body(req, body).await?;
    let answer = explain(app, &q).await.map_err(|e| match e {
        ExplainError::Invalid(m) => ApiError::Invalid(m),
        ExplainError::Unknown(m) => ApiError::NotFound(m),
        ExplainError::Unavailable(m) => ApiError::Unavailable(m),
    })?;
    Ok(json_response(StatusCode::OK, &answer.json(app)))
}
