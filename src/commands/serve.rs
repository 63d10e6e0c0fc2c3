//! `serve` and `dev`: the issuer, and the registry when the config has one, until Ctrl-C or
//! SIGTERM; reloads on SIGHUP and when watched files change (see `reload`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use token_issuer::config::Config;
use token_issuer::{app, app::App, http, keys, registry, reload, server};

/// Runs the issuer, and the registry when the config has one, until Ctrl-C / SIGTERM; reloads
/// on SIGHUP and when watched files change (see `reload`).
pub(crate) async fn serve(
    cfg: Config,
    source: reload::Source,
    dev_dir: Option<&Path>,
) -> anyhow::Result<()> {
    token_issuer::metrics::set_enabled(cfg.metrics.enabled);
    let app = App::build(&cfg).await?;
    let limits = cfg.http.limits()?;
    server::raise_fd_limit();
    tracing::info!(
        issuer = %app.signer.issuer,
        service = %app.signer.service,
        kid = %app.keys.kid,
        listen = %cfg.listen,
        ttl_seconds = app.signer.ttl.as_secs(),
        "token-issuer starting"
    );
    let issuer_listener = server::bind(cfg.listen.parse()?, "token issuer").await?;
    let metrics_listener = match (&cfg.metrics.listen, cfg.metrics.enabled) {
        (Some(l), true) => Some(server::bind(l.parse()?, "metrics").await?),
        _ => None,
    };
    let registry = app::build_registry(&cfg, &app)?;
    // Every listener is bound before any serves: a client that finds the issuer answering finds
    // the registry listening too, and a registry port in use stops start-up before anything
    // is served.
    let registry_listener = match (&registry, cfg.registry.as_ref()) {
        (Some(_), Some(rc)) => Some(server::bind(rc.listen.parse()?, "registry").await?),
        _ => None,
    };
    let audit = app.audit.clone();
    let with_metrics = cfg.metrics.enabled && cfg.metrics.listen.is_none();
    // Once before serving, so the gauge and the warnings are there from the first scrape.
    let mut warned = token_issuer::expiry::Warned::default();
    token_issuer::expiry::report(&app, &mut warned).await;
    let live = Arc::new(reload::Live::new(app, cfg.clone(), source));
    token_issuer::expiry::spawn(live.clone(), warned);
    // Before serving: from here on SIGHUP reloads instead of ending the process.
    reload::spawn(live.clone(), cfg.reload.watch);
    let mut serving = Vec::new();
    serving.push(tokio::spawn(server::serve(
        issuer_listener,
        http::routes(live.clone(), with_metrics),
        limits.clone(),
    )));
    if let Some(l) = metrics_listener {
        serving.push(tokio::spawn(server::serve(
            l,
            http::metrics_routes(live.clone()),
            limits.clone(),
        )));
    }
    if let (Some(reg), Some(rc), Some(registry_listener)) =
        (registry, cfg.registry.as_ref(), registry_listener)
    {
        live.attach_registry(reg.clone());
        if let Some(dir) = dev_dir {
            // Both ports are bound: the hints below can be tried at once.
            print_dev_hints(dir, &rc.listen);
        }
        serving.push(tokio::spawn(server::serve(
            registry_listener,
            registry::routes(reg),
            limits.clone(),
        )));
    }
    let mut result = Ok(());
    for s in serving {
        match s.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(anyhow::anyhow!("a listener failed: {e}")),
        }
    }
    if let Some(a) = audit {
        a.flush().await;
    }
    // The store in force (a reload may have added one): what was noted since the last write.
    if let Some(users) = live.current().auth.store() {
        if let Err(e) = users.store.flush_last_used().await {
            tracing::warn!("last use times noted since the last minute not written: {e}");
        }
    }
    result
}

const DEV_ISSUER: &str = "token-issuer-dev";
/// The pepper `dev` makes for generated secrets, in its data directory.
pub(crate) const DEV_PEPPER: &str = "pepper";

/// First run: a key as `gen-token-auth-cert` makes it, a SQLite store holding an `admin` user
/// (the admin flag: everything, and the admin API) with a random password (or
/// TOKEN_ISSUER_DEV_PASSWORD), and a config file naming them. Later runs find and reuse all of
/// it. Returns the config file.
pub(crate) async fn dev_init(dir: &Path) -> anyhow::Result<PathBuf> {
    // The directory holds the signing key, the admin password and the store: this user's alone,
    // whatever the umask.
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    }
    let config = dir.join("token-issuer.toml");
    let password_file = dir.join("admin-password");
    if config.exists() {
        if let (Ok(wanted), Ok(kept)) = (
            std::env::var("TOKEN_ISSUER_DEV_PASSWORD"),
            std::fs::read_to_string(&password_file),
        ) {
            if wanted != kept.trim_end() {
                tracing::warn!(
                    "TOKEN_ISSUER_DEV_PASSWORD is ignored: {} already exists (delete {} to start over)",
                    password_file.display(),
                    dir.display()
                );
            }
        }
        return Ok(config);
    }
    if !dir.join(format!("{DEV_ISSUER}.crt")).exists() {
        let g = keys::generate::generate(DEV_ISSUER, 730)?;
        keys::generate::write_files(dir, DEV_ISSUER, &g, true)?;
    }
    let password = match std::env::var("TOKEN_ISSUER_DEV_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => uuid::Uuid::new_v4().simple().to_string(),
    };
    keys::generate::write_file(&password_file, password.as_bytes(), 0o600)?;
    let pepper = dir.join(DEV_PEPPER);
    if !pepper.exists() {
        let mut bytes = [0u8; 48];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no system randomness"))?;
        let text = data_encoding::BASE64.encode(&bytes);
        keys::generate::write_file(&pepper, text.as_bytes(), 0o600)?;
    }
    let store = token_issuer::store::Store::open("sqlite://token-issuer.db", dir).await?;
    let hash = token_issuer::store::hash_password(&password)?;
    match store.add_user("admin", &hash, true, false, None).await {
        // Left by a first run that stopped before writing the config: take this password.
        Err(token_issuer::store::StoreError::Conflict(_)) => {
            let patch = token_issuer::store::UserPatch {
                password_hash: Some(hash),
                admin: Some(true),
                ..Default::default()
            };
            store.update_user("admin", &patch).await?;
        }
        other => {
            other?;
        }
    }
    let toml = format!(
        r#"# Written by `token-issuer dev` on its first run and reused by later ones. Users, groups and
# grants live in token-issuer.db: `token-issuer users add NAME --data-dir DIR` (password on
# stdin), `token-issuer grants add --user NAME 'NAME/**' pull,push --data-dir DIR`, or the
# admin API at /admin/v1 as admin. [[acl]] rules added below are tried before the grants.
[token]
issuer = "{DEV_ISSUER}"
service = "{DEV_ISSUER}"
[keys]
cert_file = "{DEV_ISSUER}.crt"
key_file = "{DEV_ISSUER}.pem"
kid_file = "{DEV_ISSUER}.kid"
[store]
url = "sqlite://token-issuer.db"
pepper_files = ["{DEV_PEPPER}"]
[registry]
storage = "registry"
"#
    );
    // Written last: its presence means the first run completed.
    std::fs::write(&config, toml)?;
    Ok(config)
}

/// Lines that work as pasted, from the directory `dev` was started in: no image needs to exist
/// (`sample-image` writes one; `docker import` makes one from a file).
fn print_dev_hints(dir: &Path, registry: &str) {
    let pw = dir.join("admin-password");
    let host = token_issuer::config::reachable(registry);
    // The program as it was started (target/release/token-issuer under `cargo run`).
    let exe = std::env::args()
        .next()
        .unwrap_or_else(|| "token-issuer".into());
    let exe = if exe.contains('/') || exe == "token-issuer" {
        exe
    } else {
        "token-issuer".into()
    };
    println!(
        "\ntoken-issuer dev: registry at {host}, user admin, password in {pw}\n\n\
         Try, with skopeo (no Docker needed):\n  \
         {exe} sample-image sample-image\n  \
         skopeo copy --dest-tls-verify=false --dest-creds admin:$(cat {pw}) oci:sample-image:latest docker://{host}/library/hello:latest\n  \
         skopeo list-tags --tls-verify=false --creds admin:$(cat {pw}) docker://{host}/library/hello\n\
         or with docker:\n  \
         docker login {host} -u admin --password-stdin < {pw}\n  \
         echo hello > hello.txt && tar -c hello.txt | docker import - {host}/library/hello:docker\n  \
         docker push {host}/library/hello:docker\n",
        pw = pw.display()
    );
}
