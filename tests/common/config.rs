//! The issuer's config file, built the way most tests need it: keys from
//! `gen-token-auth-cert ISSUER` in the config's directory, users in `users.htpasswd`, ordered
//! ACL rules, and whatever other sections a test adds.

use std::fmt::Write;

pub struct ConfigBuilder {
    /// `None`: the issuer and the key come from the environment (the seed's variables).
    issuer: Option<String>,
    /// The certificate and key files, when not `{issuer}.crt` and `{issuer}.pem`.
    key_files: Option<(String, String)>,
    service: String,
    /// `token.services` instead of `token.service`.
    services: Vec<String>,
    token: Vec<String>,
    keys: Vec<String>,
    sections: Vec<String>,
    acl: Vec<String>,
}

impl ConfigBuilder {
    /// `[token]` with `issuer` and `service`, `[keys]` naming `{issuer}.crt` and `{issuer}.pem`,
    /// `[identity] htpasswd = "users.htpasswd"`.
    pub fn new(issuer: &str, service: &str) -> Self {
        Self {
            issuer: Some(issuer.into()),
            key_files: None,
            service: service.into(),
            services: Vec::new(),
            token: Vec::new(),
            keys: Vec::new(),
            sections: Vec::new(),
            acl: Vec::new(),
        }
    }

    /// As [`Self::new`] with no issuer and no `[keys]`: the seed's environment variables
    /// (`REGISTRY_TOKEN_AUTH_CERT`, ...) give them.
    pub fn keys_from_env(service: &str) -> Self {
        Self {
            issuer: None,
            ..Self::new("", service)
        }
    }

    /// The certificate and key files, instead of `{issuer}.crt` and `{issuer}.pem`.
    pub fn key_files(mut self, cert: &std::path::Path, key: &std::path::Path) -> Self {
        self.key_files = Some((cert.display().to_string(), key.display().to_string()));
        self
    }

    /// Several services (`token.services`, the first the default) instead of one.
    pub fn services(mut self, services: &[&str]) -> Self {
        self.services = services.iter().map(|s| s.to_string()).collect();
        self
    }

    /// One more `key = value` line in `[token]`.
    pub fn token(mut self, line: &str) -> Self {
        self.token.push(line.into());
        self
    }

    /// One more `key = value` line in `[keys]`.
    pub fn keys(mut self, line: &str) -> Self {
        self.keys.push(line.into());
        self
    }

    /// A `[[acl]]` rule for repositories.
    pub fn allow(self, account: &str, name: &str, actions: &[&str]) -> Self {
        self.rule(account, None, name, actions)
    }

    /// A `[[acl]]` rule with its `type` (e.g. `registry` for the catalog).
    pub fn rule(mut self, account: &str, kind: Option<&str>, name: &str, actions: &[&str]) -> Self {
        let mut r = format!("[[acl]]\naccount = {account:?}\n");
        if let Some(kind) = kind {
            let _ = writeln!(r, "type = {kind:?}");
        }
        let _ = writeln!(r, "name = {name:?}\nactions = {actions:?}");
        self.acl.push(r);
        self
    }

    /// `[registry]` listening on `port`, storing under `storage` (relative to the config).
    pub fn registry(self, port: u16, storage: &str) -> Self {
        self.section(&format!(
            "[registry]\nlisten = \"127.0.0.1:{port}\"\nstorage = {storage:?}"
        ))
    }

    /// Any other TOML, written as given before the ACL.
    pub fn section(mut self, toml: &str) -> Self {
        self.sections.push(toml.trim().to_string());
        self
    }

    pub fn build(&self) -> String {
        let mut out = String::from("[token]\n");
        if let Some(i) = &self.issuer {
            let _ = writeln!(out, "issuer = {i:?}");
        }
        if self.services.is_empty() {
            let _ = writeln!(out, "service = {:?}", self.service);
        } else {
            let _ = writeln!(out, "services = {:?}", self.services);
        }
        for line in &self.token {
            let _ = writeln!(out, "{line}");
        }
        if let Some(i) = &self.issuer {
            let (cert, key) = self
                .key_files
                .clone()
                .unwrap_or_else(|| (format!("{i}.crt"), format!("{i}.pem")));
            let _ = writeln!(out, "[keys]\ncert_file = {cert:?}\nkey_file = {key:?}");
            for line in &self.keys {
                let _ = writeln!(out, "{line}");
            }
        }
        out.push_str("[identity]\nhtpasswd = \"users.htpasswd\"\n");
        for s in &self.sections {
            let _ = writeln!(out, "{s}");
        }
        for r in &self.acl {
            out.push_str(r);
        }
        out
    }
}
