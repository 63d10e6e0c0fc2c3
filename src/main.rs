use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod manage;
mod rotate;
use token_issuer::{app, app::App, config::Config, http, keys, registry, reload, server};

#[derive(Parser)]
#[command(
    name = "token-issuer",
    version,
    about = "A registry token service (ES256 JWTs for distribution and open-balena-registry)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write the next key and certificate for the configured issuer to
    /// OUT_DIR/<issuer>-<YYYYMMDD>.{crt,pem,kid,jwks.json}, and print the steps that follow.
    Rotate {
        /// The issuer's config (its token.issuer names the certificate); the environment works too.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the files are written.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Days the certificate is valid, 1–36500.
        #[arg(long, default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// The next key's type (it may differ from the current one's).
        #[arg(long = "type", value_enum, default_value_t)]
        key_type: keys::generate::KeyType,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Answer token requests at /v1/registry.
    Serve {
        /// TOML config file; the environment overrides it (see README).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides `listen`).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Create a signing key, a self-signed certificate, its kid and JWKS, and print the .env lines.
    GenTokenAuthCert {
        /// The issuer name: the certificate's CN and the tokens' `iss`.
        issuer: String,
        /// Where ISSUER.{crt,pem,kid,jwks.json} are written.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Days the certificate is valid, 1–36500.
        #[arg(long, default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// The key type, which decides the tokens' algorithm.
        #[arg(long = "type", value_enum, default_value_t)]
        key_type: keys::generate::KeyType,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// One command for development: the issuer plus a built-in registry, with a generated key,
    /// an `admin` user and its password, all kept in DATA_DIR and reused by later runs.
    Dev {
        /// Where the key, the admin password, the config and the registry's storage are kept.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The issuer's address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The registry's address.
        #[arg(long, default_value = "127.0.0.1:5000")]
        registry_listen: String,
    },
    /// Remove blobs no manifest references (and, with --delete-untagged, manifests no tag
    /// reaches). Run it while the registry is stopped.
    Gc {
        /// The `dev` data directory (its registry storage is DATA_DIR/registry).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Take the storage from this config's [registry] storage instead.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove manifests no tag reaches (and then the blobs only they referenced).
        #[arg(long)]
        delete_untagged: bool,
    },
    /// Probe the local /healthz (for container HEALTHCHECKs: no curl needed in the image).
    /// Exits 0 when the issuer answers 200.
    Healthcheck {
        /// Read `listen` from this config (the environment applies too, as for `serve`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Probe this URL instead.
        #[arg(long)]
        url: Option<String>,
    },
    /// Manage the store's users (see --config / --data-dir for which store).
    Users {
        #[command(flatten)]
        store: manage::StoreArgs,
        #[command(subcommand)]
        command: manage::Users,
    },
    /// Manage the store's groups and their members.
    Groups {
        #[command(flatten)]
        store: manage::StoreArgs,
        #[command(subcommand)]
        command: manage::Groups,
    },
    /// Manage the store's grants (what users and groups may do when no [[acl]] rule matches).
    Grants {
        #[command(flatten)]
        store: manage::StoreArgs,
        #[command(subcommand)]
        command: manage::Grants,
    },
    /// Key rotation: `keys rotate` writes the next signing key (see README, "Rotating the key").
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// List and revoke refresh tokens (what `docker login` stores instead of a password).
    Tokens {
        #[command(flatten)]
        store: manage::StoreArgs,
        #[command(subcommand)]
        command: manage::Tokens,
    },
    /// Print an htpasswd line (bcrypt) for USER, reading the password from standard input.
    Htpasswd {
        /// The user name (no ':').
        user: String,
        /// bcrypt cost, 4–31: each step doubles the time of every cold login.
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
    /// Write a small OCI image layout (one file, tag `latest`) into DIR, to push without a
    /// Docker engine: skopeo copy oci:DIR:latest docker://REGISTRY/NAME:TAG
    SampleImage {
        /// The layout's directory (created if missing).
        dir: PathBuf,
        /// The content of the image's one file, hello.txt.
        #[arg(long, default_value = "hello from token-issuer\n")]
        text: String,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOKEN_ISSUER_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("token-issuer: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, listen } => {
            let mut overrides = Vec::new();
            if let Some(l) = listen {
                overrides.push(("listen", l));
            }
            let cfg = Config::load(config.as_deref(), &overrides)?;
            let source = reload::Source {
                file: config,
                overrides,
            };
            serve(cfg, source, None).await
        }
        Command::Dev {
            data_dir,
            listen,
            registry_listen,
        } => {
            let config = dev_init(&data_dir).await?;
            let overrides = vec![("listen", listen), ("registry.listen", registry_listen)];
            let cfg = Config::load(Some(&config), &overrides)?;
            let source = reload::Source {
                file: Some(config),
                overrides,
            };
            serve(cfg, source, Some(&data_dir)).await
        }
        Command::Gc {
            data_dir,
            config,
            dry_run,
            delete_untagged,
        } => {
            let root = match config {
                Some(c) => Config::load(Some(&c), &[])?
                    .registry
                    .ok_or_else(|| anyhow::anyhow!("{}: no [registry] section", c.display()))?
                    .storage
                    .relative(),
                None => data_dir.join("registry"),
            };
            if !root.join("blobs").is_dir() {
                anyhow::bail!("{} holds no registry storage", root.display());
            }
            let storage = registry::storage::Storage::open(&root)?;
            let _lock = storage.lock().map_err(|e| anyhow::anyhow!("gc: {e}"))?;
            let report =
                registry::gc::collect(&storage, delete_untagged, dry_run, Duration::ZERO).await?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for (repo, d) in &report.manifests {
                println!("{verb} manifest {repo}@{d}");
            }
            for d in &report.blobs {
                println!("{verb} blob {d}");
            }
            println!(
                "{verb} {} manifest(s), {} blob(s)",
                report.manifests.len(),
                report.blobs.len()
            );
            Ok(())
        }
        Command::GenTokenAuthCert {
            issuer,
            out_dir,
            days,
            key_type,
            force,
        } => {
            let g = keys::generate::generate_typed(&issuer, days, key_type)?;
            let w = keys::generate::write_files(&out_dir, &issuer, &g, force)?;
            eprintln!(
                "wrote {}, {}, {} and {}",
                w.cert.display(),
                w.key.display(),
                w.kid.display(),
                w.jwks.display()
            );
            let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
            println!("REGISTRY_TOKEN_AUTH_CERT={}", b64(&g.cert_pem));
            println!("REGISTRY_TOKEN_AUTH_CERT_KEY={}", b64(&g.key_pem));
            println!("REGISTRY_TOKEN_AUTH_CERT_KID={}", b64(&g.kid));
            println!("REGISTRY_TOKEN_AUTH_CERT_ISSUER={issuer}");
            Ok(())
        }
        Command::Healthcheck { config, url } => {
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
                .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
            if !resp.status().is_success() {
                anyhow::bail!("{url} answered {}", resp.status());
            }
            Ok(())
        }
        Command::SampleImage { dir, text } => {
            let digest = token_issuer::sample::write_oci_layout(&dir, &format!("{text}\n"))?;
            println!(
                "wrote an OCI image layout to {} (tag latest, manifest {digest}); push it with\n  \
                 skopeo copy --dest-tls-verify=false --dest-creds USER:PASSWORD oci:{}:latest docker://REGISTRY/NAME:TAG",
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        Command::Users { store, command } => manage::users(&store, command).await,
        Command::Groups { store, command } => manage::groups(&store, command).await,
        Command::Grants { store, command } => manage::grants(&store, command).await,
        Command::Tokens { store, command } => manage::tokens(&store, command).await,
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    config,
                    out_dir,
                    days,
                    key_type,
                },
        } => rotate::rotate(config.as_deref(), &out_dir, days, key_type),
        Command::Htpasswd { user, cost } => {
            let password = read_password()?;
            println!("{}", htpasswd_line(&user, &password, cost)?);
            Ok(())
        }
    }
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
    let hash = bcrypt::hash(password, cost)?;
    Ok(format!("{user}:{}", hash.replacen("$2b$", "$2y$", 1)))
}

/// Runs the issuer, and the registry when the config has one, until Ctrl-C / SIGTERM; reloads
/// on SIGHUP and when watched files change (see `reload`).
async fn serve(cfg: Config, source: reload::Source, dev_dir: Option<&Path>) -> anyhow::Result<()> {
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
    let audit = app.audit.clone();
    let with_metrics = cfg.metrics.enabled && cfg.metrics.listen.is_none();
    let live = Arc::new(reload::Live::new(app, cfg.clone(), source));
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
    if let (Some(reg), Some(rc)) = (registry, cfg.registry.as_ref()) {
        let registry_listener = server::bind(rc.listen.parse()?, "registry").await?;
        let reg = Arc::new(reg);
        live.attach_registry(reg.clone());
        registry::spawn_upload_sweeper(reg.clone(), Duration::from_secs(rc.upload_ttl_seconds));
        if let Some(every) = rc.gc.every()? {
            registry::gc::spawn_schedule(reg.clone(), every, rc.gc.delete_untagged);
            tracing::info!(every = %rc.gc.interval, delete_untagged = rc.gc.delete_untagged, grace_seconds = rc.gc.grace_seconds, "garbage collection scheduled");
        }
        tracing::info!(listen = %rc.listen, storage = %reg.storage.root().display(), realm = %reg.auth.realm, "registry starting");
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
    result
}

const DEV_ISSUER: &str = "token-issuer-dev";

/// First run: a key as `gen-token-auth-cert` makes it, a SQLite store holding an `admin` user
/// (the admin flag: everything, and the admin API) with a random password (or
/// TOKEN_ISSUER_DEV_PASSWORD), and a config file naming them. Later runs find and reuse all of
/// it. Returns the config file.
async fn dev_init(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
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
        other => other?,
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `--help` describes every command and every flag in a line.
    #[test]
    fn every_command_and_flag_is_described() {
        let cli = super::Cli::command();
        for sub in cli.get_subcommands() {
            assert!(
                sub.get_about().is_some(),
                "{} has no description",
                sub.get_name()
            );
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{} {id} has no description",
                    sub.get_name()
                );
            }
        }
    }
}
