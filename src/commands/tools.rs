//! Small commands: `healthcheck`, `sample-image`, `htpasswd`, and reading a password.

use std::path::{Path, PathBuf};
use std::time::Duration;

use token_issuer::config::Config;

/// `healthcheck`: exit 0 when the issuer answers `/healthz`.
pub(crate) async fn healthcheck(
    config: Option<PathBuf>,
    url: Option<String>,
) -> anyhow::Result<()> {
    let url = match url {
        Some(u) => u,
        None => {
            let cfg = Config::load(config.as_deref(), &[])?;
            format!(
                "http://{}/healthz",
                token_issuer::config::reachable(&cfg.listen)
            )
        }
    };
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(&url)
        .send()
        .await
        .map_err(|e| {
            // reqwest's own words ("error sending request for url") say nothing a person can
            // act on: say what happened, at which address.
            let how = if e.is_timeout() {
                "no answer within 3 s".to_string()
            } else if e.is_connect() {
                let cause = std::iter::successors(std::error::Error::source(&e), |c| c.source())
                    .last()
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                format!("cannot connect ({cause}); is the issuer running and listening there?")
            } else {
                e.to_string()
            };
            anyhow::anyhow!("{url}: {how}")
        })?;
    if !resp.status().is_success() {
        anyhow::bail!("{url} answered {}", resp.status());
    }
    Ok(())
}

/// `sample-image`: a one-file OCI image layout to push without Docker.
pub(crate) fn sample_image(dir: &Path, text: &str) -> anyhow::Result<()> {
    let digest = token_issuer::sample::write_oci_layout(dir, &format!("{text}\n"))?;
    println!(
                "wrote an OCI image layout to {} (tag latest, manifest {digest}); push it with\n  \
                 skopeo copy --dest-tls-verify=false --dest-creds USER:PASSWORD oci:{}:latest docker://REGISTRY/NAME:TAG",
                dir.display(),
                dir.display()
            );
    Ok(())
}

/// `htpasswd`: a bcrypt line for the password on standard input.
pub(crate) fn htpasswd(user: &str, cost: u32) -> anyhow::Result<()> {
    let password = read_password()?;
    println!("{}", htpasswd_line(user, &password, cost)?);
    Ok(())
}

pub(crate) fn read_password() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    Ok(password)
}

fn htpasswd_line(user: &str, password: &str, cost: u32) -> anyhow::Result<String> {
    if user.contains(':') || user.is_empty() {
        anyhow::bail!("user {user:?}: must be non-empty and hold no ':'");
    }
    if token_issuer::store::looks_generated(password) {
        anyhow::bail!(
            "this password has the shape of a generated secret (tis_...), which is checked only \
             against the store's keyed hashes: choose another, or make a store user with --generate"
        );
    }
    let hash = bcrypt::hash(password, cost)?;
    Ok(format!("{user}:{}", hash.replacen("$2b$", "$2y$", 1)))
}
