use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use token_issuer::{app::App, config::Config, http, keys, server};

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
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        #[arg(long, default_value_t = 730)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Print an htpasswd line (bcrypt) for USER, reading the password from standard input.
    Htpasswd {
        user: String,
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOKEN_ISSUER_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
            let app = Arc::new(App::build(&cfg)?);
            tracing::info!(
                issuer = %app.signer.issuer,
                service = %app.signer.service,
                kid = %app.keys.kid,
                listen = %cfg.listen,
                ttl_seconds = app.signer.ttl.as_secs(),
                "token-issuer starting"
            );
            let addr = cfg.listen.parse()?;
            server::serve(addr, http::routes(app), "token issuer").await
        }
        Command::GenTokenAuthCert {
            issuer,
            out_dir,
            days,
            force,
        } => {
            let g = keys::generate::generate(&issuer, days)?;
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
        Command::Htpasswd { user, cost } => {
            if user.contains(':') || user.is_empty() {
                anyhow::bail!("user {user:?}: must be non-empty and hold no ':'");
            }
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                anyhow::bail!("no password on standard input");
            }
            let hash = bcrypt::hash(password, cost)?;
            println!("{user}:{}", hash.replacen("$2b$", "$2y$", 1));
            Ok(())
        }
    }
}
