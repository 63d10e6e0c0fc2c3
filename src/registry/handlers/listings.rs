//! `GET /v2/_catalog` and `GET /v2/<name>/tags/list`, paginated with `n`, `last` and `Link`.

use poem::http::header;
use poem::Response;
use serde_json::{json, Value};

use super::{base, param};
use crate::registry::errors::RegError;
use crate::registry::Registry;

/// `n`/`last` pagination with a `Link` header to the next page.
pub(crate) fn paginate(
    all: Vec<String>,
    q: &[(String, String)],
    path: &str,
) -> Result<(Vec<String>, Option<String>), RegError> {
    let last = param(q, "last");
    let mut items: Vec<String> = all
        .into_iter()
        .filter(|x| last.is_none_or(|l| x.as_str() > l))
        .collect();
    let Some(n) = param(q, "n") else {
        return Ok((items, None));
    };
    let n: usize = n
        .parse()
        .map_err(|_| RegError::pagination_invalid("n must be a number"))?;
    if items.len() <= n {
        return Ok((items, None));
    }
    items.truncate(n);
    let link = items.last().map(|l| {
        let last: String = form_urlencoded::byte_serialize(l.as_bytes()).collect();
        format!("<{path}?last={last}&n={n}>; rel=\"next\"")
    });
    Ok((items, link))
}

fn json_page(body: Value, link: Option<String>) -> Response {
    let mut b = base().content_type("application/json");
    if let Some(l) = link {
        b = b.header(header::LINK, l);
    }
    b.body(body.to_string())
}

pub(super) async fn catalog(reg: &Registry, q: &[(String, String)]) -> Result<Response, RegError> {
    let (repos, link) = paginate(reg.storage.repositories().await, q, "/v2/_catalog")?;
    Ok(json_page(json!({"repositories": repos}), link))
}

pub(super) async fn tags(
    reg: &Registry,
    name: &str,
    q: &[(String, String)],
) -> Result<Response, RegError> {
    let all = reg
        .storage
        .tags(name)
        .await
        .ok_or_else(|| RegError::name_unknown(name))?;
    let (tags, link) = paginate(all, q, &format!("/v2/{name}/tags/list"))?;
    Ok(json_page(json!({"name": name, "tags": tags}), link))
}
