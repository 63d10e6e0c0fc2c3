//! A request whose handler panics is answered 500 with the cause in the log, and nothing else
//! is touched: the connection, its neighbours and the process go on. (Without this, hyper's
//! connection task would end with the panic and the client would see a reset with no word.)

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Request, Response};

/// The 500 for a panic, in the realm's error shape; the cause goes to the log only (it may
/// name internals), with the panic's message.
fn answer(cause: Box<dyn Any + Send + 'static>) -> Response {
    let message = cause
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| cause.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    tracing::error!(cause = %message, "a request handler panicked; answered 500");
    let body = serde_json::json!({"errors": [{
        "code": "UNKNOWN",
        "message": "internal error: the cause is in the token issuer's log",
    }]});
    (StatusCode::INTERNAL_SERVER_ERROR, poem::web::Json(body)).into_response()
}

/// Answers `req` with `ep`; a panic while routing or in a handler is the 500 above (one while
/// hyper streams a response body comes after this returns, and ends the connection). Done
/// here, in the connection's service, rather than with poem's `CatchPanic` and the layers that
/// go with it (`map_to_response`, a boxed endpoint): each of those moves the request and its
/// future once more on every token request, for nothing this function does not do.
pub(super) async fn respond<E: Endpoint>(ep: &E, req: Request, test_route: bool) -> Response {
    let call = async move {
        if test_route && req.uri().path() == "/__test/panic" {
            panic!("the test route panicked, as asked");
        }
        ep.get_response(req).await
    };
    AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or_else(answer)
}

/// In a debug build with `TOKEN_ISSUER_TEST_PANIC=1`, any request to `/__test/panic` panics:
/// what the tests prove the 500 with. A release build has no such route.
pub(super) fn test_route() -> bool {
    cfg!(debug_assertions) && std::env::var("TOKEN_ISSUER_TEST_PANIC").is_ok_and(|v| v == "1")
}
