//! `[ldap]`: a directory (OpenLDAP, FreeIPA, Active Directory) whose users log in with their
//! directory password. The source itself is `identity::sources::ldap`.

use anyhow::bail;
use figment::value::magic::RelativePathBuf;
use serde::Deserialize;

use super::setting;

/// The service account's password, read as it is by `identity::sources::ldap`.
pub const BIND_PASSWORD_ENV: &str = "TOKEN_ISSUER_LDAP__BIND_PASSWORD";

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldaps://HOST:PORT`, or `ldap://HOST:PORT` with `start_tls` (plain on loopback only).
    pub url: String,
    #[serde(default)]
    pub start_tls: bool,
    /// A PEM file of CA certificates trusted beside the system's roots.
    pub ca_file: Option<RelativePathBuf>,
    /// The service account that searches for users and their groups.
    pub bind_dn: String,
    /// Or the password in [`BIND_PASSWORD_ENV`], which is not a setting: the config layers
    /// would parse it (`12345678` becomes a number) and print it in their errors.
    pub bind_password_file: Option<RelativePathBuf>,
    pub user_base: String,
    /// Must hold `{username}`, replaced by the login name escaped for a filter.
    pub user_filter: String,
    /// The attribute whose value is the account's name in rules and tokens.
    #[serde(default = "default_username_attribute")]
    pub username_attribute: String,
    pub group_base: Option<String>,
    /// Must hold `{dn}` or `{username}`.
    pub group_filter: Option<String>,
    #[serde(default = "default_group_name_attribute")]
    pub group_name_attribute: String,
    /// Read groups from this attribute of the user's entry (`memberOf`) instead of a search.
    pub member_of_attribute: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// More groups than this are cut (with a warning): bounds what one login carries.
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
    #[serde(default)]
    pub position: LdapPosition,
}

// By hand: the bind password must never reach a log line through `{:?}`.
impl std::fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapConfig")
            .field("url", &self.url)
            .field("bind_dn", &self.bind_dn)
            .field("user_base", &self.user_base)
            .field("user_filter", &self.user_filter)
            .finish_non_exhaustive()
    }
}

/// Where the directory sits in the chain of sources. The upstream API, when there is one, is
/// always last: it decides every name it is given, so nothing after it would ever be asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LdapPosition {
    /// Before the htpasswd file and the store.
    First,
    /// After the htpasswd file, before the store.
    AfterHtpasswd,
    /// After the htpasswd file and the store: local accounts (break-glass, CI robots) keep
    /// working when the directory is down.
    #[default]
    AfterStore,
}

fn default_username_attribute() -> String {
    "uid".into()
}

fn default_group_name_attribute() -> String {
    "cn".into()
}

fn default_timeout() -> u64 {
    5
}

fn default_pool_size() -> usize {
    8
}

fn default_max_groups() -> usize {
    256
}

impl LdapConfig {
    /// Every setting, with the password and the password and CA files' contents hashed: what a
    /// reload compares to know whether the directory source must be built again (a new service
    /// password in its file takes effect at the next reload). Never logged.
    pub fn fingerprint(&self) -> String {
        let hash = |bytes: &[u8]| {
            data_encoding::HEXLOWER
                .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
        };
        let file = |f: &Option<RelativePathBuf>| {
            f.as_ref().map(|f| match std::fs::read(f.relative()) {
                Ok(bytes) => hash(&bytes),
                Err(e) => format!("unreadable: {e}"),
            })
        };
        format!(
            "{:?}",
            (
                (
                    &self.url,
                    self.start_tls,
                    file(&self.ca_file),
                    &self.bind_dn
                ),
                (
                    file(&self.bind_password_file),
                    std::env::var(BIND_PASSWORD_ENV)
                        .map(|p| hash(p.as_bytes()))
                        .ok(),
                ),
                (&self.user_base, &self.user_filter, &self.username_attribute),
                (
                    &self.group_base,
                    &self.group_filter,
                    &self.group_name_attribute
                ),
                (
                    &self.member_of_attribute,
                    self.timeout_seconds,
                    self.pool_size
                ),
                (self.max_groups, self.position),
            )
        )
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        let tls = match self.url.split_once("://") {
            Some(("ldaps", rest)) => {
                if self.start_tls {
                    bail!(
                        "{}: ldaps:// is TLS already; remove start_tls",
                        setting("ldap.start_tls")
                    );
                }
                check_host(rest)?;
                true
            }
            Some(("ldap", rest)) => {
                let host = check_host(rest)?;
                if !self.start_tls && !is_loopback(host) {
                    bail!(
                        "{}: plain ldap:// to {host} would send every password in clear; use \
                         ldaps:// or set {} (plain ldap:// is for loopback only)",
                        setting("ldap.url"),
                        setting("ldap.start_tls")
                    );
                }
                self.start_tls
            }
            _ => bail!(
                "{}: {:?} is not an ldap:// or ldaps:// URL",
                setting("ldap.url"),
                self.url
            ),
        };
        if !tls && self.ca_file.is_some() {
            tracing::warn!(
                "{} has no effect: {} is plain ldap:// without start_tls",
                setting("ldap.ca_file"),
                self.url
            );
        }
        for (key, value) in [
            ("ldap.bind_dn", &self.bind_dn),
            ("ldap.user_base", &self.user_base),
            ("ldap.username_attribute", &self.username_attribute),
            ("ldap.group_name_attribute", &self.group_name_attribute),
        ] {
            if value.trim().is_empty() {
                bail!("{}: empty", setting(key));
            }
        }
        match (std::env::var_os(BIND_PASSWORD_ENV), &self.bind_password_file) {
            (Some(_), Some(_)) => bail!(
                "{BIND_PASSWORD_ENV} and {} are both set; keep one",
                setting("ldap.bind_password_file")
            ),
            (None, None) => bail!(
                "{}: the service account's password is missing; give a file, or set {BIND_PASSWORD_ENV}",
                setting("ldap.bind_password_file")
            ),
            _ => {}
        }
        for (key, value) in [
            ("ldap.username_attribute", Some(&self.username_attribute)),
            (
                "ldap.group_name_attribute",
                Some(&self.group_name_attribute),
            ),
            (
                "ldap.member_of_attribute",
                self.member_of_attribute.as_ref(),
            ),
        ] {
            let Some(v) = value else { continue };
            // An attribute name (RFC 4512: letters, digits, hyphens; or an OID), since
            // ldap.username_attribute is put into a filter as it is.
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                bail!("{}: {v:?} is not an attribute name", setting(key));
            }
        }
        check_filter("ldap.user_filter", &self.user_filter, &["{username}"])?;
        match (
            &self.group_filter,
            &self.group_base,
            &self.member_of_attribute,
        ) {
            (Some(_), _, Some(_)) => bail!(
                "{} and {} are both set; groups come from one of them",
                setting("ldap.group_filter"),
                setting("ldap.member_of_attribute")
            ),
            (Some(f), Some(base), None) => {
                check_filter("ldap.group_filter", f, &["{dn}", "{username}"])?;
                if base.trim().is_empty() {
                    bail!("{}: empty", setting("ldap.group_base"));
                }
            }
            (Some(_), None, None) => bail!(
                "{}: required with ldap.group_filter (where the groups are searched)",
                setting("ldap.group_base")
            ),
            (None, Some(_), None) => tracing::warn!(
                "{} has no effect without ldap.group_filter or ldap.member_of_attribute",
                setting("ldap.group_base")
            ),
            (None, Some(_), Some(_)) => {}
            (None, None, _) => {}
        }
        if !(1..=60).contains(&self.timeout_seconds) {
            bail!("{}: between 1 and 60", setting("ldap.timeout_seconds"));
        }
        if !(1..=256).contains(&self.pool_size) {
            bail!("{}: between 1 and 256", setting("ldap.pool_size"));
        }
        if !(1..=10_000).contains(&self.max_groups) {
            bail!("{}: between 1 and 10000", setting("ldap.max_groups"));
        }
        Ok(())
    }
}

/// The `host:port` of an LDAP URL's rest, which must be nothing more.
fn check_host(rest: &str) -> anyhow::Result<&str> {
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains(['/', '?', '@']) {
        bail!(
            "{}: give only the scheme, host and port (ldaps://ldap.example.test:636); the \
             search bases are ldap.user_base and ldap.group_base",
            setting("ldap.url")
        );
    }
    Ok(host)
}

fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A filter must hold one of `holes` and parse once they are filled.
fn check_filter(key: &str, filter: &str, holes: &[&str]) -> anyhow::Result<()> {
    if !holes.iter().any(|h| filter.contains(h)) {
        bail!(
            "{}: {filter:?} has no {}; without it every login would match the same entries",
            setting(key),
            holes.join(" or ")
        );
    }
    let sample = holes
        .iter()
        .fold(filter.to_string(), |f, h| f.replace(h, "x"));
    if ldap3::parse_filter(&sample).is_err() {
        bail!(
            "{}: {filter:?} is not an LDAP filter (RFC 4515: parenthesised, like (uid={{username}}))",
            setting(key)
        );
    }
    Ok(())
}

#[cfg(test)]
// figment::Jail's closures return figment's (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use super::super::Config;

    const GOOD: &str = r#"[ldap]
url = "ldap://127.0.0.1:389"
bind_dn = "cn=svc,dc=x"
bind_password_file = "pw"
user_base = "ou=people,dc=x"
user_filter = "(uid={username})"
group_base = "ou=groups,dc=x"
group_filter = "(member={dn})"
"#;

    /// The start-up error for GOOD with `from` replaced by `to` (env `vars` set), or "ok".
    fn load(from: &str, to: &str, vars: &[(&str, &str)]) -> String {
        let mut out = String::new();
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", &GOOD.replace(from, to))?;
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            out = match Config::load(Some(Path::new("c.toml")), &[]) {
                Ok(_) => "ok".into(),
                Err(e) => e.to_string(),
            };
            Ok(())
        });
        out
    }

    #[test]
    fn a_good_section_loads() {
        assert_eq!(load("", "", &[]), "ok");
    }

    #[test]
    fn filters_must_have_their_hole_and_parse() {
        let e = load("(uid={username})", "(uid=alice)", &[]);
        assert!(
            e.contains("ldap.user_filter") && e.contains("{username}"),
            "{e}"
        );
        let e = load("(uid={username})", "(&(uid={username})", &[]);
        assert!(
            e.contains("ldap.user_filter") && e.contains("not an LDAP filter"),
            "{e}"
        );
        let e = load("(member={dn})", "(member=x)", &[]);
        assert!(
            e.contains("ldap.group_filter") && e.contains("{dn} or {username}"),
            "{e}"
        );
        let e = load("group_base = \"ou=groups,dc=x\"\n", "", &[]);
        assert!(e.contains("ldap.group_base"), "{e}");
    }

    #[test]
    fn the_bind_password_comes_from_a_file_or_the_environment_only() {
        let e = load("bind_password_file = \"pw\"\n", "", &[]);
        assert!(
            e.contains("ldap.bind_password_file") && e.contains("missing"),
            "{e}"
        );
        for inline in ["\"s3cret-inline\"", "12345678"] {
            let e = load(
                "bind_password_file = \"pw\"\n",
                &format!("bind_password = {inline}\n"),
                &[],
            );
            assert!(e.contains("TOKEN_ISSUER_LDAP__BIND_PASSWORD"), "{e}");
            assert!(!e.contains("s3cret") && !e.contains("12345678"), "{e}");
        }
        // Read as it is, whatever it looks like to a parser.
        for p in ["12345678", "true", " spaced "] {
            let e = load(
                "bind_password_file = \"pw\"\n",
                "",
                &[("TOKEN_ISSUER_LDAP__BIND_PASSWORD", p)],
            );
            assert_eq!(e, "ok");
        }
        let e = load("", "", &[("TOKEN_ISSUER_LDAP__BIND_PASSWORD", "x")]);
        assert!(e.contains("both set"), "{e}");
    }

    #[test]
    fn plain_ldap_is_for_loopback_only() {
        for host in ["ldap.example.test:389", "10.0.0.5:389"] {
            let e = load("ldap://127.0.0.1:389", &format!("ldap://{host}"), &[]);
            assert!(
                e.contains("ldap.url") && e.contains("in clear"),
                "{host}: {e}"
            );
        }
        for host in ["localhost:389", "[::1]:389", "127.0.0.2"] {
            assert_eq!(
                load("ldap://127.0.0.1:389", &format!("ldap://{host}"), &[]),
                "ok"
            );
        }
        let tls = "ldap://ldap.example.test:389\"\nstart_tls = true\n#";
        assert_eq!(load("ldap://127.0.0.1:389\"", tls, &[]), "ok");
    }

    #[test]
    fn attribute_names_are_names() {
        let e = load(
            "user_filter",
            "username_attribute = \"uid)(x=*\"\nuser_filter",
            &[],
        );
        assert!(e.contains("ldap.username_attribute"), "{e}");
    }

    #[test]
    fn urls_are_ldap_or_ldaps_with_a_host_only() {
        let e = load("ldap://127.0.0.1:389", "http://127.0.0.1:389", &[]);
        assert!(e.contains("ldap.url"), "{e}");
        let e = load("ldap://127.0.0.1:389", "ldap://127.0.0.1:389/dc=x", &[]);
        assert!(e.contains("ldap.url") && e.contains("user_base"), "{e}");
        let e = load(
            "ldap://127.0.0.1:389\"",
            "ldaps://127.0.0.1:636\"\nstart_tls = true",
            &[],
        );
        assert!(e.contains("ldap.start_tls"), "{e}");
    }
}
