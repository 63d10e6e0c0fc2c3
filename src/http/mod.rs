//! The HTTP surface: the realm, the published keys, and health.

pub mod admin;
mod client;
pub mod realm;

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{get, handler, EndpointExt, Response, Route};

use crate::app::App;

pub fn routes(app: Arc<App>) -> impl poem::Endpoint {
    Route::new()
        .at(
            "/v1/registry",
            get(realm::get_token).post(realm::post_token),
        )
        .at("/v1/registry/certs", get(certs))
        .at("/.well-known/jwks.json", get(jwks))
        .at("/healthz", get(health))
        .at("/readyz", get(health))
        .nest("/admin/v1", admin::routes(app.clone()))
        .data(app)
}

/// The PEM bundle for a distribution registry's `auth.token.rootcertbundle`: the signing chain,
/// then the published keys' certificates.
#[handler]
fn certs(Data(app): Data<&Arc<App>>) -> Response {
    Response::builder()
        .content_type("application/x-pem-file")
        .body(app.bundle_pem.clone())
}

/// The JWKS for distribution 3.x's `auth.token.jwks` (libtrust kid, so every version agrees):
/// the signing key first, then the published ones.
#[handler]
fn jwks(Data(app): Data<&Arc<App>>) -> Response {
    Response::builder()
        .content_type("application/json")
        .body(app.jwks_json.clone())
}

/// Key material is loaded and checked before the listener opens, so serving means ready.
#[handler]
fn health() -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .content_type("text/plain")
        .body("ok\n")
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .header("Cache-Control", "no-store")
        .body(body.to_string())
}
