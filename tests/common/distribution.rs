//! CNCF distribution as a process: Debian's 2.8, or 3.0.0 / 3.1.1 from `DISTRIBUTION_V3_DIR`,
//! trusting the issuer's bundle or JWKS.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{on_free_port, Proc};

/// Which distribution registry: Debian's 2.8, or a 3.x binary from `DISTRIBUTION_V3_DIR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    V2_8,
    V3_0_0,
    V3_1_1,
}

impl Distribution {
    pub const ALL: [Distribution; 3] = [Self::V2_8, Self::V3_0_0, Self::V3_1_1];

    pub fn name(self) -> &'static str {
        match self {
            Self::V2_8 => "distribution 2.8",
            Self::V3_0_0 => "distribution 3.0.0",
            Self::V3_1_1 => "distribution 3.1.1",
        }
    }

    /// The program to run, or why it is not available. 3.x binaries come from
    /// `DISTRIBUTION_V3_DIR` (scripts/test points it at ../shared/distribution).
    pub fn program(self) -> Result<PathBuf, String> {
        let file = match self {
            Self::V2_8 => return Ok(PathBuf::from("docker-registry")),
            Self::V3_0_0 => "registry-v3.0.0",
            Self::V3_1_1 => "registry-v3.1.1",
        };
        let dir = std::env::var_os("DISTRIBUTION_V3_DIR")
            .ok_or_else(|| format!("{}: not run, DISTRIBUTION_V3_DIR is not set", self.name()))?;
        let path = PathBuf::from(dir).join(file);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{}: not run, {} is missing (DISTRIBUTION_V3_DIR)",
                self.name(),
                path.display()
            ))
        }
    }

    /// Whether every 3.x row must run: in CI, and whenever scripts/test found the folder.
    pub fn v3_required() -> bool {
        std::env::var_os("CI").is_some() || std::env::var_os("DISTRIBUTION_V3_DIR").is_some()
    }
}

/// How a registry trusts the issuer: `auth.token.rootcertbundle` and/or (3.x) `auth.token.jwks`.
pub struct Trust<'a> {
    pub bundle: Option<&'a Path>,
    pub jwks: Option<&'a Path>,
}

impl<'a> Trust<'a> {
    pub fn bundle(path: &'a Path) -> Self {
        Self {
            bundle: Some(path),
            jwks: None,
        }
    }
}

/// A distribution registry with token auth pointing at the issuer.
pub struct Registry {
    pub proc: Proc,
    pub port: u16,
}

impl Registry {
    /// Debian's distribution 2.8 trusting `certbundle`.
    pub async fn start(
        dir: &Path,
        realm: &str,
        service: &str,
        issuer: &str,
        certbundle: &Path,
    ) -> Self {
        Self::start_with(
            Distribution::V2_8,
            dir,
            realm,
            service,
            issuer,
            &Trust::bundle(certbundle),
        )
        .await
        .expect("docker-registry is installed (scripts/test installs it)")
    }

    /// `version` with `trust`; Err (naming why) when its program is not available.
    pub async fn start_with(
        version: Distribution,
        dir: &Path,
        realm: &str,
        service: &str,
        issuer: &str,
        trust: &Trust<'_>,
    ) -> Result<Self, String> {
        let program = version.program()?;
        Ok(on_free_port(version.name(), async |port| {
            let storage = dir.join(format!("registry-{port}"));
            let mut auth = format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n"
            );
            if let Some(b) = trust.bundle {
                auth.push_str(&format!("    rootcertbundle: {}\n", b.display()));
            }
            if let Some(j) = trust.jwks {
                auth.push_str(&format!("    jwks: {}\n", j.display()));
            }
            let config = format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n{auth}",
                storage.display(),
            );
            let cfg_path = dir.join(format!("registry-{port}.yml"));
            std::fs::write(&cfg_path, config).expect("registry config");
            let mut cmd = Command::new(&program);
            cmd.arg("serve").arg(&cfg_path);
            // 3.x reports traces to an OTLP collector unless told not to.
            cmd.env("OTEL_TRACES_EXPORTER", "none");
            let mut proc = Proc::spawn(
                version.name(),
                cmd,
                dir.join(format!("registry-{port}.log")),
            );
            // 2.8 and 3.x alike log this once their listener is bound.
            if !proc
                .wait_listening(
                    &format!("msg=\"listening on 127.0.0.1:{port}\""),
                    &[&format!("listen tcp 127.0.0.1:{port}: bind: address already in use")],
                )
                .await
            {
                return None;
            }
            proc.wait_http(&format!("http://127.0.0.1:{port}/v2/"), 401)
                .await;
            Some(Self { proc, port })
        })
        .await)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
