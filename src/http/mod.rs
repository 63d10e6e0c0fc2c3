//! The HTTP surface: the realm, the published keys, health and metrics. Each request runs on
//! the [`App`] in force when it arrived (see `crate::reload`).

pub mod admin;
pub(crate) mod client;
mod error;
pub mod realm;
pub(crate) mod request;
mod trail;

use std::sync::Arc;

use poem::http::{Method, StatusCode};
use poem::web::Data;
use poem::{get, handler, Endpoint, EndpointExt, Request, Response, Route};

use crate::app::App;
use crate::reload::Live;

/// The issuer's routes; `/metrics` too when `with_metrics` (else it has its own listener, or
/// is off).
pub fn routes(live: Arc<Live>, with_metrics: bool) -> impl poem::Endpoint {
    let mut route = Route::new()
        .at(
            "/v1/registry",
            get(realm::get_token).post(realm::post_token),
        )
        // open-balena-registry's realm is open-balena-api's `/auth/v1/token`: the same
        // endpoint under that name, always, so a deployment can point its registry here
        // without touching the registry's settings. No other route can be there.
        .at(
            "/auth/v1/token",
            get(realm::get_token).post(realm::post_token),
        )
        .at("/v1/registry/certs", get(certs))
        .at("/v1/registry/public.pem", get(public_pem))
        .at("/.well-known/jwks.json", get(jwks))
        .at("/healthz", get(health))
        .at("/readyz", get(health))
        .nest("/admin/v1", admin::routes());
    if with_metrics {
        route = route.at("/metrics", get(metrics));
    }
    Issuer { live, route }
}

/// The realm is what nearly every request asks for, so it is served before the router: a
/// `GET` or `POST` on its exact path goes straight to `realm::token`. Through the router each
/// token request paid for the tree's lookup, its path pattern (stored in the request and the
/// response), the method's route, two boxed endpoints and the `around` that put the `App` in
/// the request, each moving the request and its future once more. Any other path or method
/// takes the router, where the realm's paths are also declared, so a `HEAD` or a `PUT` is
/// answered as before.
struct Issuer {
    live: Arc<Live>,
    route: Route,
}

/// The realm's paths: `/v1/registry`, and open-balena-api's `/auth/v1/token`.
fn is_realm(path: &str) -> bool {
    path == "/v1/registry" || path == "/auth/v1/token"
}

impl Endpoint for Issuer {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let app = self.live.current();
        let method = req.method();
        if is_realm(req.uri().path()) && (method == Method::GET || method == Method::POST) {
            return Ok(realm::token(req, &app).await);
        }
        req.extensions_mut().insert(app);
        self.route.call(req).await
    }
}

/// `/metrics` alone, for `metrics.listen`.
pub fn metrics_routes(live: Arc<Live>) -> impl poem::Endpoint {
    on_current_app(Route::new().at("/metrics", get(metrics)), live)
}

/// The state is looked up once per request and handed to the handler as `Data<&Arc<App>>`:
/// a reload during the request does not change what it runs on.
fn on_current_app(route: Route, live: Arc<Live>) -> impl poem::Endpoint {
    route.around(move |ep, mut req| {
        let live = live.clone();
        async move {
            req.extensions_mut().insert(live.current());
            ep.call(req).await
        }
    })
}

/// The Prometheus text exposition. Gauges of live state are read now.
#[handler]
fn metrics(Data(app): Data<&Arc<App>>) -> Response {
    let m = crate::metrics::get();
    m.damping_entries.set(app.auth.damping_entries() as i64);
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.render())
}

/// The PEM bundle for a distribution registry's `auth.token.rootcertbundle`: the signing chain,
/// then the published keys' certificates.
#[handler]
fn certs(Data(app): Data<&Arc<App>>) -> Response {
    Response::builder()
        .content_type("application/x-pem-file")
        .body(app.bundle_pem.clone())
}

/// The signing key's public half alone (SPKI PEM), for registries configured with one public
/// key. Only the key that signs: such a registry holds one key, so during a rotation it is
/// given the new one when the issuer starts signing with it (docs/operating.md, step 4).
#[handler]
fn public_pem(Data(app): Data<&Arc<App>>) -> Response {
    Response::builder()
        .content_type("application/x-pem-file")
        .body(app.keys.public_pem.clone())
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

/// The `{"errors":[{"code","message"}]}` answer the realm and the admin API give (the
/// registry spec's shape, which clients print).
pub(crate) fn errors_response(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &serde_json::json!({"errors": [{"code": code, "message": message}]}),
    )
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .header("Cache-Control", "no-store")
        .body(body.to_string())
}
