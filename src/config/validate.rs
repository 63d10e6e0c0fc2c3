//! The checks `Config::load` runs after parsing: each error names the setting (its TOML key and
//! the variable that sets it) and says what is wrong.

use anyhow::bail;

use super::{oidc, setting, Config};

impl Config {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            bail!(
                "{}: {:?} is not an address like 127.0.0.1:8080",
                setting("listen"),
                self.listen
            );
        }
        if let Some(a) = &self.token.algorithm {
            if crate::keys::Alg::from_name(a).is_none() {
                bail!(
                    "{}: {a:?} is not supported; use ES256 (EC P-256 key), ES384 (P-384) or RS256 (RSA), or leave it out: the key's type decides",
                    setting("token.algorithm"),
                );
            }
        }
        if let Some(realm) = &self.token.realm {
            check_http_url(realm, "token.realm")?;
        }
        self.http.validate()?;
        self.damping.validate()?;
        self.metrics.validate()?;
        oidc::validate_all(&self.oidc)?;
        self.audit.validate()?;
        if let Some(s) = &self.store {
            s.validate()?;
        }
        if let Some(l) = &self.ldap {
            l.validate()?;
        }
        if !(60..=86_400).contains(&self.token.ttl_seconds) {
            bail!(
                "{}: {} is out of range; clients treat anything under 60 s as 60, and 86400 is the most allowed",
                setting("token.ttl_seconds"),
                self.token.ttl_seconds
            );
        }
        if !(1..=3650).contains(&self.token.refresh_ttl_days) {
            bail!(
                "{}: {} is out of range; give 1 to 3650 days",
                setting("token.refresh_ttl_days"),
                self.token.refresh_ttl_days
            );
        }
        if self.identity.cache_ttl_seconds > 3600 {
            bail!("{}: at most 3600", setting("identity.cache_ttl_seconds"));
        }
        if let Some(r) = &self.registry {
            if r.listen.parse::<std::net::SocketAddr>().is_err() {
                bail!(
                    "{}: {:?} is not an address like 127.0.0.1:5000",
                    setting("registry.listen"),
                    r.listen
                );
            }
            r.gc.every()?;
            if r.gc.grace_seconds == 0 {
                bail!(
                    "{}: at least 1 (a push's blobs wait this long for their manifest)",
                    setting("registry.gc.grace_seconds")
                );
            }
            if r.upload_ttl_seconds < 60 {
                bail!("{}: at least 60", setting("registry.upload_ttl_seconds"));
            }
            if !(1..=1_000_000).contains(&r.max_uploads) {
                bail!("{}: between 1 and 1000000", setting("registry.max_uploads"));
            }
            if !(1..=r.max_uploads).contains(&r.max_uploads_per_repository) {
                bail!(
                    "{}: between 1 and registry.max_uploads ({})",
                    setting("registry.max_uploads_per_repository"),
                    r.max_uploads
                );
            }
        }
        if let Some(u) = &self.upstream {
            check_http_url(&u.url, "upstream.url")?;
            u.check_profile()?;
            for (key, pointer) in [
                ("upstream.username_pointer", u.username_pointer.as_ref()),
                ("upstream.groups_pointer", u.groups_pointer.as_ref()),
            ] {
                if let Some(p) = pointer {
                    if !p.starts_with('/') {
                        bail!(
                            "{}: {p:?} is not a JSON pointer (like \"/slug\" or \"/data/slug\")",
                            setting(key)
                        );
                    }
                }
            }
            if !(1..=60_000).contains(&u.timeout_ms) {
                bail!("{}: between 1 and 60000", setting("upstream.timeout_ms"));
            }
            for (key, value, max) in [
                ("upstream.max_concurrent", u.max_concurrent, 10_000),
                (
                    "upstream.max_repository_checks",
                    u.max_repository_checks,
                    10_000,
                ),
                (
                    "upstream.max_response_bytes",
                    u.max_response_bytes,
                    64 << 20,
                ),
            ] {
                if !(1..=max).contains(&value) {
                    bail!("{}: between 1 and {max}", setting(key));
                }
            }
            if u.cache_ttl_seconds > 3600 {
                bail!("{}: at most 3600", setting("upstream.cache_ttl_seconds"));
            }
            if let Some(r) = &u.repository {
                check_http_url(&r.url, "upstream.repository.url")?;
                if !r.url.contains("{name}") {
                    bail!(
                        "{}: must contain {{name}}, the repository",
                        setting("upstream.repository.url")
                    );
                }
                if r.actions.is_empty()
                    || r.actions
                        .iter()
                        .any(|a| !["pull", "push", "delete", "*"].contains(&a.as_str()))
                {
                    bail!(
                        "{}: {:?}: use pull, push, delete or *",
                        setting("upstream.repository.actions"),
                        r.actions
                    );
                }
            }
        }
        Ok(())
    }
}

fn check_http_url(url: &str, key: &str) -> anyhow::Result<()> {
    // `{name}` is not valid in a URL until it is filled in; check the rest.
    let probe = url.replace("{name}", "x");
    match reqwest::Url::parse(&probe) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => bail!(
            "{}: {url:?} is not an absolute http(s) URL (like https://host/path)",
            setting(key)
        ),
    }
}
