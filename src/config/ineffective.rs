//! Settings that are given but change nothing, because what they tune is off or absent: each
//! is named at start-up (and on reload) with what to change, rather than silently ignored.
//! A setting counts as given when the file or the environment names it (defaults never warn).

use super::{Config, UpstreamProfile};

/// One warning per setting given to no effect.
pub(crate) fn warnings(cfg: &Config, given: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut unless = |on: bool, keys: &[&str], why: &str| {
        if on {
            return;
        }
        for key in keys.iter().filter(|k| given(k)) {
            out.push(format!("{key} is set but {why}"));
        }
    };
    unless(
        cfg.audit.enabled,
        &["audit.path", "audit.max_size_mb", "audit.keep"],
        "audit.enabled is false: no audit is written; set audit.enabled = true",
    );
    unless(
        cfg.metrics.enabled,
        &["metrics.listen"],
        "metrics.enabled is false: nothing is served there; set metrics.enabled = true or remove it",
    );
    unless(
        cfg.damping.enabled,
        &[
            "damping.failures_per_minute",
            "damping.ip_failures_per_minute",
            "damping.account_failures_per_minute",
            "damping.max_delay_seconds",
            "damping.max_waiting",
            "damping.table_capacity",
        ],
        "damping.enabled is false: failed logins are not damped",
    );
    unless(
        cfg.store.is_some(),
        &["token.refresh_ttl_days"],
        "there is no [store]: refresh tokens are kept in the store, so none is issued",
    );
    let repository_asked = cfg.acl.is_empty()
        || cfg
            .acl
            .iter()
            .any(|r| r.actions.iter().any(|a| a == crate::policy::acl::UPSTREAM));
    unless(
        repository_asked,
        &["upstream.repository.url", "upstream.repository.actions"],
        "no [[acl]] rule says \"upstream\" (and with rules there is no implicit one): the repository endpoint is never asked",
    );
    let generic = cfg
        .upstream
        .as_ref()
        .is_some_and(|u| u.profile == UpstreamProfile::Generic);
    unless(
        generic || cfg.upstream.is_none(),
        &["upstream.match_username"],
        "upstream.profile is not generic: the open-balena profile names callers by actor type",
    );
    // Groups are read by rules that name one and by the store's group grants; with neither,
    // the groups a provider or a directory is asked for decide nothing.
    let groups_read = cfg.store.is_some() || cfg.acl.iter().any(|r| r.group.is_some());
    let no_groups = "no [[acl]] rule names a group and there is no [store] with group grants: \
                     the groups are never read";
    unless(
        groups_read,
        &[
            "ldap.group_base",
            "ldap.group_filter",
            "ldap.group_name_attribute",
            "ldap.member_of_attribute",
            "ldap.max_groups",
        ],
        no_groups,
    );
    let local = cfg.identity.htpasswd.is_some() || cfg.store.is_some();
    unless(
        local,
        &["ldap.position"],
        "there is neither an htpasswd file nor a [store]: the directory has nothing to be placed before or after",
    );
    unless(
        local || cfg.ldap.is_some(),
        &["identity.cache_ttl_seconds"],
        "there is no htpasswd file, [store] or [ldap]: it caches their password checks (upstream.cache_ttl_seconds is the upstream API's)",
    );
    if !groups_read {
        for (i, o) in cfg.oidc.iter().enumerate() {
            if !o.groups.is_empty() {
                out.push(format!("oidc[{i}].groups is set but {no_groups}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Format;

    fn config(toml: &str) -> Config {
        figment::Figment::from(figment::providers::Toml::string(toml))
            .extract()
            .expect("config")
    }

    fn given(toml: &str) -> impl Fn(&str) -> bool + '_ {
        move |key: &str| {
            figment::Figment::from(figment::providers::Toml::string(toml))
                .find_value(key)
                .is_ok()
        }
    }

    /// A directory asked for groups that nothing reads, placed in a chain it is alone in.
    const LDAP_GROUPS: &str = "[ldap]\nurl = \"ldap://127.0.0.1:1\"\nbind_dn = \"cn=s\"\n\
        user_base = \"dc=t\"\nuser_filter = \"(uid={username})\"\ngroup_base = \"ou=g,dc=t\"\n\
        position = \"first\"\n[[acl]]\naccount = \"*\"\nname = \"**\"\nactions = [\"pull\"]";

    #[test]
    fn each_setting_given_to_no_effect_is_named() {
        let cases: &[(&str, &str)] = &[
            ("[audit]\npath = \"audit.log\"", "audit.path is set but audit.enabled is false"),
            ("[audit]\nkeep = 3", "audit.keep is set but audit.enabled is false"),
            ("[metrics]\nenabled = false\nlisten = \"127.0.0.1:9090\"", "metrics.listen is set"),
            ("[damping]\nenabled = false\nmax_delay_seconds = 5", "damping.max_delay_seconds is set"),
            ("[token]\nrefresh_ttl_days = 30", "token.refresh_ttl_days is set but there is no [store]"),
            (
                "[upstream]\nurl = \"http://127.0.0.1:1/w\"\nusername_pointer = \"/n\"\n\
                 [upstream.repository]\nurl = \"http://127.0.0.1:1/r/{name}\"\n\
                 [[acl]]\naccount = \"*\"\nname = \"**\"\nactions = [\"pull\"]",
                "upstream.repository.url is set but no [[acl]] rule says \"upstream\"",
            ),
            (
                "[upstream]\nprofile = \"open-balena\"\nurl = \"http://127.0.0.1:1\"\nmatch_username = false",
                "upstream.match_username is set but upstream.profile is not generic",
            ),
            (
                "[[oidc]]\nissuer = \"https://idp.test\"\naudiences = [\"r\"]\nusername = \"{sub}\"\n\
                 groups = [\"{org}\"]\n[[acl]]\naccount = \"*\"\nname = \"**\"\nactions = [\"pull\"]",
                "oidc[0].groups is set but no [[acl]] rule names a group",
            ),
            (
                LDAP_GROUPS,
                "ldap.group_base is set but no [[acl]] rule names a group",
            ),
            (LDAP_GROUPS, "ldap.position is set but there is neither"),
            (
                "[identity]\ncache_ttl_seconds = 30\n[upstream]\nurl = \"http://127.0.0.1:1/w\"\n\
                 username_pointer = \"/n\"",
                "identity.cache_ttl_seconds is set but there is no htpasswd file",
            ),
        ];
        for (toml, warning) in cases {
            let found = warnings(&config(toml), given(toml));
            assert!(
                found.iter().any(|w| w.starts_with(warning)),
                "{toml}: {found:?}"
            );
        }
    }

    #[test]
    fn settings_that_take_effect_are_not_named() {
        for toml in [
            "[audit]\nenabled = true\npath = \"audit.log\"",
            "[metrics]\nlisten = \"127.0.0.1:9090\"",
            "[damping]\nmax_delay_seconds = 5",
            "[token]\nrefresh_ttl_days = 30\n[store]\nurl = \"sqlite://s.db\"",
            "[upstream]\nurl = \"http://127.0.0.1:1/w\"\nusername_pointer = \"/n\"\n\
             [upstream.repository]\nurl = \"http://127.0.0.1:1/r/{name}\"",
            "[[oidc]]\nissuer = \"https://idp.test\"\naudiences = [\"r\"]\nusername = \"{sub}\"\n\
             groups = [\"{org}\"]\n[[acl]]\ngroup = \"ops\"\nname = \"**\"\nactions = [\"pull\"]",
            "[identity]\ncache_ttl_seconds = 30\nhtpasswd = \"users\"",
            "",
        ] {
            let found = warnings(&config(toml), given(toml));
            assert!(found.is_empty(), "{toml}: {found:?}");
        }
    }
}
