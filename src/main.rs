//! The command line: parses it and dispatches to `commands`, one file per command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod commands;

/// mimalloc rather than glibc's malloc: a token request makes a few dozen small allocations
/// (the request's strings, the claims, the token, the response), and glibc's malloc and free
/// took about 6% of the issuer's CPU under load (`perf`, warm token path). Measured against
/// glibc in adjacent pairs: CPU per token 0.96–0.98. Built without transparent huge pages
/// (`no_thp`): with them it saved a little more CPU but held freed memory in 2 MiB pages, and
/// the peak RSS during 16 concurrent 256 MiB uploads went from 44 to 79 MiB (51 without).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use commands::{manage, rotate};
use token_issuer::{config::Config, keys, reload};

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
    /// OUT_DIR/<issuer>-<YYYYMMDD>.{crt,pem,kid,jwks.json,pub}, and print the steps that follow.
    Rotate {
        /// The issuer's config (its token.issuer names the certificate); the environment works too.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the files are written (relative to the current directory); the printed steps
        /// give their paths relative to the config file's directory, as the config needs them.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Days the certificate is valid, 1–36500.
        #[arg(long, default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// The next key's type (it may differ from the current one's).
        #[arg(long = "type", value_enum, default_value_t)]
        key_type: keys::generate::KeyType,
        /// Replace files of a rotation made earlier today (only while nothing signs with them).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Answer token requests at /v1/registry.
    Serve {
        /// TOML config file; the environment overrides it (docs/configuration.md).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides `listen`).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Why a caller would be granted what, scope by scope: the deciding rule or store grant
    /// and why each earlier rule did not apply. No password needed.
    Explain {
        /// TOML config file; the environment overrides it (docs/configuration.md).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        question: token_issuer::explaining::ExplainRequest,
        /// Name the rules an earlier rule shadows; exit 1 when there are any.
        #[arg(long)]
        lint: bool,
        /// Print JSON, as POST /admin/v1/explain answers.
        #[arg(long)]
        json: bool,
    },
    /// Create a signing key, a self-signed certificate, its kid and JWKS, and print the .env lines.
    GenTokenAuthCert {
        /// The issuer name: the certificate's CN and the tokens' `iss`.
        issuer: String,
        /// Where ISSUER.{crt,pem,kid,jwks.json,pub} are written.
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
        command: commands::users::Users,
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
    /// Key rotation: `keys rotate` writes the next signing key (docs/operating.md, "Rotating the signing key").
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
            commands::serve::serve(cfg, source, None).await
        }
        Command::Explain {
            config,
            question,
            lint,
            json,
        } => {
            let cfg = Config::load(config.as_deref(), &[])?;
            if !token_issuer::explaining::command(&cfg, &question, lint, json).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Dev {
            data_dir,
            listen,
            registry_listen,
        } => {
            let config = commands::serve::dev_init(&data_dir).await?;
            let overrides = vec![("listen", listen), ("registry.listen", registry_listen)];
            let cfg = Config::load(Some(&config), &overrides)?;
            let source = reload::Source {
                file: Some(config),
                overrides,
            };
            commands::serve::serve(cfg, source, Some(&data_dir)).await
        }
        Command::Gc {
            data_dir,
            config,
            dry_run,
            delete_untagged,
        } => commands::gc::run(&data_dir, config, dry_run, delete_untagged).await,
        Command::GenTokenAuthCert {
            issuer,
            out_dir,
            days,
            key_type,
            force,
        } => commands::keys::generate(&issuer, &out_dir, days, key_type, force),
        Command::Healthcheck { config, url } => commands::tools::healthcheck(config, url).await,
        Command::SampleImage { dir, text } => commands::tools::sample_image(&dir, &text),
        Command::Users { store, command } => {
            commands::store_audit::audited(&store, commands::users::users(&store, command).await)
                .await
        }
        Command::Groups { store, command } => {
            commands::store_audit::audited(&store, manage::groups(&store, command).await).await
        }
        Command::Grants { store, command } => {
            commands::store_audit::audited(&store, manage::grants(&store, command).await).await
        }
        Command::Tokens { store, command } => {
            commands::store_audit::audited(&store, manage::tokens(&store, command).await).await
        }
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    config,
                    out_dir,
                    days,
                    key_type,
                    force,
                },
        } => rotate::rotate(rotate::Args {
            config: config.as_deref(),
            out_dir: &out_dir,
            days,
            key_type,
            force,
        }),
        Command::Htpasswd { user, cost } => commands::tools::htpasswd(&user, cost),
    }
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
