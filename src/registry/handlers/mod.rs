//! The OCI distribution API over [`Storage`](crate::registry::storage::Storage), behind
//! [`TokenAuth`](crate::registry::auth::TokenAuth), one file per resource. Repository names
//! contain slashes, so one handler takes `/v2/*`, splits the path from the right as distribution
//! does ([`route`]), computes the access the request needs ([`needed_access`]), checks the token,
//! and hands the request to the resource's handler.

pub(crate) mod blobs;
pub(crate) mod listings;
mod manifests;
mod referrers;
pub(crate) mod uploads;

use std::sync::Arc;

use poem::http::Method;
use poem::web::Data;
use poem::{handler, Body, Request, Response};

use super::errors::RegError;
use super::Registry;
use crate::scope::Scope;

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Upload(&'a str, Option<&'a str>),
    Referrers(&'a str, &'a str),
}

/// The `route` label of the registry's metrics: bounded, never a repository name.
pub(crate) fn route_label(path: &str) -> &'static str {
    match route(path) {
        Some(Route::Base) => "base",
        Some(Route::Catalog) => "catalog",
        Some(Route::Tags(_)) => "tags",
        Some(Route::Manifest(..)) => "manifests",
        Some(Route::Blob(..)) => "blobs",
        Some(Route::Upload(..)) => "uploads",
        Some(Route::Referrers(..)) => "referrers",
        None => "other",
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    // Uploads only at the end of the path: a name may itself hold "blobs/uploads".
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads")
        .or_else(|| rest.strip_suffix("/blobs/uploads/"))
    {
        return Some(Route::Upload(name, None));
    }
    if let Some((before, id)) = rest.rsplit_once('/') {
        if let Some(name) = before.strip_suffix("/blobs/uploads") {
            return Some(Route::Upload(name, Some(id)));
        }
    }
    let (name, kind, last) = ["/manifests/", "/blobs/", "/referrers/"]
        .iter()
        .filter_map(|k| rest.rfind(k).map(|i| (i, *k)))
        .max()
        .map(|(i, k)| (&rest[..i], k, &rest[i + k.len()..]))?;
    if last.is_empty() || last.contains('/') {
        return None;
    }
    Some(match kind {
        "/manifests/" => Route::Manifest(name, last),
        "/blobs/" => Route::Blob(name, last),
        _ => Route::Referrers(name, last),
    })
}

fn repo_scope(name: &str, actions: &[&str]) -> Scope {
    Scope::new("repository", name, actions)
}

fn query(req: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A repository name as the registry stores it: the scope grammar without a `host:port` prefix.
fn valid_name(name: &str) -> bool {
    crate::scope::is_repository_name(name) && !name.contains(':')
}

fn base() -> poem::ResponseBuilder {
    Response::builder().header("Docker-Distribution-API-Version", "registry/2.0")
}

/// The access a request needs, as distribution's `appendAccessRecords`: GET/HEAD pull,
/// POST/PUT/PATCH pull and push, DELETE delete; a cross-repository mount also pull on its
/// source; the catalog `registry:catalog:*`; the base endpoint nothing.
fn needed_access(r: &Route<'_>, method: &Method, q: &[(String, String)]) -> Vec<Scope> {
    let name = match r {
        Route::Base => return vec![],
        Route::Catalog => return vec![Scope::new("registry", "catalog", &["*"])],
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => *n,
    };
    let mut needed = vec![match *method {
        Method::GET | Method::HEAD => repo_scope(name, &["pull"]),
        Method::DELETE => repo_scope(name, &["delete"]),
        _ => repo_scope(name, &["pull", "push"]),
    }];
    if let (Route::Upload(_, None), true, Some(from)) =
        (r, *method == Method::POST, param(q, "from"))
    {
        if param(q, "mount").is_some() && valid_name(from) && from != name {
            needed.push(repo_scope(from, &["pull"]));
        }
    }
    needed
}

#[handler]
pub(crate) async fn dispatch(
    req: &Request,
    body: Body,
    Data(reg): Data<&Arc<Registry>>,
) -> Response {
    let path = req.uri().path().to_string();
    let Some(r) = route(&path) else {
        return RegError::endpoint_unknown().into_response();
    };
    let name = match &r {
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => Some(*n),
        _ => None,
    };
    if let Some(n) = name {
        if !valid_name(n) {
            return RegError::name_invalid(n).into_response();
        }
    }
    let method = req.method().clone();
    let q = query(req);
    let needed = needed_access(&r, &method, &q);
    if let Err(challenge) = reg.auth.check(req, &needed) {
        return reg.auth.challenge(&challenge, &needed);
    }
    let result = match (r, method) {
        (Route::Base, _) => Ok(base().content_type("application/json").body("{}")),
        (Route::Catalog, Method::GET) => listings::catalog(reg, &q).await,
        (Route::Tags(n), Method::GET) => listings::tags(reg, n, &q).await,
        (Route::Manifest(n, reference), m @ (Method::GET | Method::HEAD)) => {
            manifests::get_manifest(reg, req, n, reference, m == Method::HEAD).await
        }
        (Route::Manifest(n, reference), Method::PUT) => {
            manifests::put_manifest(reg, req, n, reference, body).await
        }
        (Route::Manifest(n, reference), Method::DELETE) => {
            manifests::delete_manifest(reg, n, reference).await
        }
        (Route::Blob(n, d), m @ (Method::GET | Method::HEAD)) => {
            blobs::get_blob(reg, req, n, d, m == Method::HEAD).await
        }
        (Route::Blob(n, d), Method::DELETE) => blobs::delete_blob(reg, n, d).await,
        (Route::Upload(n, None), Method::POST) => uploads::start_upload(reg, n, &q, body).await,
        (Route::Upload(n, Some(id)), Method::PATCH) => {
            uploads::patch_upload(reg, req, n, id, body).await
        }
        (Route::Upload(n, Some(id)), Method::PUT) => {
            uploads::put_upload(reg, n, id, &q, body).await
        }
        (Route::Upload(n, Some(id)), Method::GET) => uploads::upload_status(reg, n, id).await,
        (Route::Upload(n, Some(id)), Method::DELETE) => uploads::cancel_upload(reg, n, id).await,
        (Route::Referrers(n, d), Method::GET) => referrers::referrers(reg, n, d, &q).await,
        _ => Err(RegError::unsupported("the operation is unsupported")),
    };
    result.unwrap_or_else(RegError::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_from_the_right() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(route("/v2/a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(
            route("/v2/a/blobs/b/manifests/latest"),
            Some(Route::Manifest("a/blobs/b", "latest"))
        );
        assert_eq!(
            route("/v2/org/app/blobs/sha256:00"),
            Some(Route::Blob("org/app", "sha256:00"))
        );
        assert_eq!(
            route("/v2/org/app/blobs/uploads/"),
            Some(Route::Upload("org/app", None))
        );
        assert_eq!(
            route("/v2/org/app/blobs/uploads/abc"),
            Some(Route::Upload("org/app", Some("abc")))
        );
        assert_eq!(
            route("/v2/org/app/referrers/sha256:00"),
            Some(Route::Referrers("org/app", "sha256:00"))
        );
        assert_eq!(route("/v2/org/app/manifests/"), None);
        assert_eq!(route("/v3/x"), None);
        // A name may hold "blobs/uploads": only the end of the path decides.
        assert_eq!(
            route("/v2/a/blobs/uploads/manifests/latest"),
            Some(Route::Manifest("a/blobs/uploads", "latest"))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/blobs/uploads/"),
            Some(Route::Upload("a/blobs/uploads", None))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/tags/list"),
            Some(Route::Tags("a/blobs/uploads"))
        );
    }

    #[test]
    fn names() {
        assert!(valid_name("org/app") && valid_name("a"));
        for bad in ["Org/app", "../x", "localhost:5000/x", "", "a//b", "a/"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
