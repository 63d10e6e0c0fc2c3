//! Loading, layering and the errors that name settings.

use super::*;

#[test]
fn settings_name_their_env_var() {
    assert_eq!(setting("token.service"), "REGISTRY_HOST (token.service)");
    assert_eq!(
        setting("token.ttl_seconds"),
        "token.ttl_seconds (TOKEN_ISSUER_TOKEN__TTL_SECONDS)"
    );
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "listen = \"127.0.0.1:1\"\n[token]\nttl_secnds = 5\n",
        )?;
        let err = Config::load(Some(Path::new("c.toml")), &[]).expect_err("unknown key");
        assert!(err.to_string().contains("ttl_secnds"), "{err}");
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        jail.set_env("TOKEN_ISSUER_LISTN", "x");
        let err = Config::load(None, &[]).expect_err("unknown env key");
        assert!(err.to_string().contains("listn"), "{err}");
        Ok(())
    });
}

#[test]
fn file_env_and_flags_layer() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            r#"
            listen = "127.0.0.1:1"
            [token]
            issuer = "from-file"
            ttl_seconds = 600
            [identity]
            htpasswd = "users.htpasswd"
            [[acl]]
            account = "reader"
            name = "org/*"
            actions = ["pull"]
            "#,
        )?;
        jail.set_env("REGISTRY_TOKEN_AUTH_CERT_ISSUER", "from-env");
        jail.set_env("REGISTRY_HOST", "registry.test");
        jail.set_env("TOKEN_ISSUER_TOKEN__TTL_SECONDS", "900");
        let cfg = Config::load(
            Some(Path::new("c.toml")),
            &[("listen", "127.0.0.1:2".into())],
        )
        .expect("load");
        assert_eq!(cfg.listen, "127.0.0.1:2");
        assert_eq!(cfg.issuer().expect("issuer"), "from-env");
        assert_eq!(cfg.service().expect("service"), "registry.test");
        assert_eq!(cfg.token.ttl_seconds, 900);
        assert_eq!(cfg.acl.len(), 1);
        assert_eq!(cfg.acl[0].resource_type, "repository");
        // Relative paths are relative to the config file.
        let p = cfg.identity.htpasswd.as_ref().expect("htpasswd").relative();
        assert!(
            p.is_absolute() && p.ends_with("users.htpasswd"),
            "{}",
            p.display()
        );
        Ok(())
    });
}

#[test]
fn acl_cannot_come_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env(
            "TOKEN_ISSUER_ACL",
            r#"[{account="alice",name="**",actions=["*"]}]"#,
        );
        let err = Config::load(None, &[])
            .expect_err("acl from env")
            .to_string();
        assert!(err.contains("TOKEN_ISSUER_ACL"), "{err}");
        Ok(())
    });
}

#[test]
fn bad_values_name_the_setting() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("REGISTRY_TOKEN_AUTH_JWT_ALGO", "HS256");
        let err = Config::load(None, &[]).expect_err("algo").to_string();
        assert!(
            err.contains("REGISTRY_TOKEN_AUTH_JWT_ALGO") && err.contains("HS256"),
            "{err}"
        );
        Ok(())
    });
    figment::Jail::expect_with(|_| {
        let cfg = Config::load(None, &[]).expect("defaults");
        let err = cfg.service().expect_err("no service").to_string();
        assert!(err.contains("REGISTRY_HOST"), "{err}");
        let err = cfg.key_sources().err().expect("no cert").to_string();
        assert!(err.contains("REGISTRY_TOKEN_AUTH_CERT"), "{err}");
        Ok(())
    });
}

#[test]
fn several_services_the_first_the_default() {
    figment::Jail::expect_with(|jail| {
        jail.set_env(
            "TOKEN_ISSUER_TOKEN__SERVICES",
            r#"["prod.test", "staging.test"]"#,
        );
        let cfg = Config::load(None, &[]).expect("load");
        assert_eq!(cfg.service().expect("service"), "prod.test");
        assert_eq!(
            cfg.services().expect("services"),
            ["prod.test", "staging.test"]
        );
        jail.set_env("REGISTRY_HOST", "prod.test");
        let cfg = Config::load(None, &[]).expect("load");
        let err = cfg.services().expect_err("both").to_string();
        assert!(
            err.contains("REGISTRY_HOST (token.service)") && err.contains("both set"),
            "{err}"
        );
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        jail.set_env("TOKEN_ISSUER_TOKEN__SERVICES", r#"["a.test", "a.test"]"#);
        let cfg = Config::load(None, &[]).expect("load");
        let err = cfg.services().expect_err("twice").to_string();
        assert!(err.contains("appears twice"), "{err}");
        Ok(())
    });
}

/// `Given` (the merged layers copied once) answers as `Figment::find_value` would, key by key,
/// values and the metadata naming their layer alike: the start-up's questions read it instead.
#[test]
fn the_layers_copied_once_answer_as_the_figment_does() {
    let fig = Figment::from(Toml::string(
        "listen = \"127.0.0.1:1\"\n[token]\nttl_seconds = 5\n[audit]\npath = \"a.log\"\n\
         [[acl]]\naccount = \"*\"\nname = \"**\"\nactions = [\"pull\"]\n",
    ))
    .merge(Serialized::default("token.ttl_seconds", 7));
    let given = layers::Given::of(&fig);
    for key in [
        "listen",
        "token",
        "token.ttl_seconds",
        "audit.path",
        "acl",
        "audit.keep",
        "nothing.here",
    ] {
        let figment = fig.find_value(key).ok();
        assert_eq!(given.find(key), figment.as_ref(), "{key}");
        assert_eq!(
            given.find(key).and_then(|v| fig.get_metadata(v.tag())),
            fig.find_metadata(key),
            "{key}"
        );
    }
    assert!(given.has("token.ttl_seconds") && !given.has("audit.keep"));
}
