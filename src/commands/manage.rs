//! `users`, `groups`, `grants` and `tokens`: the admin API's operations from the command line,
//! against the configured store directly (no server needed).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use token_issuer::config::Config;
use token_issuer::identity::htpasswd::Htpasswd;
use token_issuer::store::{self, NewGrant, Store};

/// Which store: a config file's `[store]`, or a `dev` data directory's.
#[derive(Args)]
pub struct StoreArgs {
    /// The store of this config file's [store] url (its htpasswd file, if any, is checked too).
    #[arg(long, global = true)]
    pub(crate) config: Option<PathBuf>,
    /// The store `dev` keeps in DATA_DIR/token-issuer.db.
    #[arg(long, global = true, default_value = "data")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
pub enum Groups {
    /// Add a group.
    Add {
        /// The group name.
        name: String,
    },
    /// List groups.
    List,
    /// Delete a group, its memberships and grants.
    Delete {
        /// The group name.
        name: String,
    },
    /// Show a group's members, after adding and removing the ones given.
    Members {
        /// The group name.
        group: String,
        /// Add this user (repeatable).
        #[arg(long)]
        add: Vec<String>,
        /// Remove this user (repeatable).
        #[arg(long)]
        remove: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum Grants {
    /// Grant actions on the resources a name glob matches (`*`, `**`, `${account}`).
    Add {
        /// To this user.
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        user: Option<String>,
        /// To this group's members.
        #[arg(long)]
        group: Option<String>,
        /// Only at the services (registries) this glob matches (`token.services`); by
        /// default at every one.
        #[arg(long)]
        service: Option<String>,
        /// `repository`, or `registry` (name `catalog`).
        #[arg(long = "type", default_value = "repository")]
        resource_type: String,
        /// The name glob, e.g. `ci/**` or `${account}/*`.
        name: String,
        /// Comma-separated: pull, push, delete or *.
        actions: String,
    },
    /// List grants with their ids.
    List,
    /// Delete a grant by id.
    Delete {
        /// The grant's id (from `grants list`).
        id: String,
    },
}

#[derive(Subcommand)]
pub enum Tokens {
    /// List a user's refresh tokens: id, client, issued, expires (never the token).
    List {
        /// The user name (of any identity source).
        user: String,
    },
    /// Revoke one refresh token by id, or every one of a user.
    Revoke {
        /// The token's id (from `tokens list`).
        #[arg(conflicts_with = "user", required_unless_present = "user")]
        id: Option<String>,
        /// Every refresh token of this user.
        #[arg(long)]
        user: Option<String>,
    },
}

/// The store, and the htpasswd file's users when the config has one.
pub(crate) async fn open(args: &StoreArgs) -> anyhow::Result<(Store, Option<Htpasswd>)> {
    match &args.config {
        Some(c) => {
            let cfg = Config::load(Some(c), &[])?;
            let sc = cfg.store.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no [store] section (url = \"sqlite://FILE\")",
                    c.display()
                )
            })?;
            let htpasswd = cfg
                .identity
                .htpasswd
                .as_ref()
                .map(|p| Htpasswd::load(&p.relative()))
                .transpose()?;
            let store = Store::open(&sc.url, &sc.base).await?;
            token_issuer::app::configure_store(&store, sc)?;
            Ok((store, htpasswd))
        }
        None => {
            let file = args.data_dir.join("token-issuer.db");
            if !file.is_file() {
                anyhow::bail!(
                    "{} does not exist: run `token-issuer dev --data-dir {}` first, or name a config with --config",
                    file.display(),
                    args.data_dir.display()
                );
            }
            let url = format!("sqlite://{}", file.display());
            let store = Store::open(&url, Path::new("")).await?;
            // `dev` keeps its pepper beside the store.
            let pepper = args.data_dir.join(super::serve::DEV_PEPPER);
            if pepper.is_file() {
                let peppers = store::Peppers::load(&[pepper], "the dev pepper")?;
                store.set_peppers(std::sync::Arc::new(peppers));
            }
            Ok((store, None))
        }
    }
}

pub async fn groups(args: &StoreArgs, cmd: Groups) -> anyhow::Result<()> {
    let (store, _) = open(args).await?;
    match cmd {
        Groups::Add { name } => {
            let name = store.add_group(&name).await?;
            eprintln!("added group {}", store::shown(&name));
        }
        Groups::List => {
            let mut after = String::new();
            loop {
                let page = store.groups(&after, store::MAX_PAGE).await?;
                for g in &page {
                    println!("{}", store::shown(&g.name));
                }
                match page.last() {
                    Some(g) if page.len() as i64 == store::MAX_PAGE => after = g.name.clone(),
                    _ => break,
                }
            }
        }
        Groups::Delete { name } => {
            store.delete_group(&name).await?;
            eprintln!("deleted group {name}");
        }
        Groups::Members { group, add, remove } => {
            for u in &add {
                store.add_member(&group, u).await?;
            }
            for u in &remove {
                store.remove_member(&group, u).await?;
            }
            let mut after = String::new();
            loop {
                let page = store.members(&group, &after, store::MAX_PAGE).await?;
                for u in &page {
                    println!("{}", store::shown(u));
                }
                match page.last() {
                    Some(u) if page.len() as i64 == store::MAX_PAGE => after = u.clone(),
                    _ => break,
                }
            }
        }
    }
    Ok(())
}

pub async fn grants(args: &StoreArgs, cmd: Grants) -> anyhow::Result<()> {
    let (store, _) = open(args).await?;
    match cmd {
        Grants::Add {
            user,
            group,
            service,
            resource_type,
            name,
            actions,
        } => {
            let g = store
                .add_grant(&NewGrant {
                    user,
                    group,
                    service,
                    resource_type,
                    name,
                    actions: actions.split(',').map(|a| a.trim().to_string()).collect(),
                })
                .await?;
            println!("{}", g.id);
        }
        Grants::List => {
            let mut after = String::new();
            loop {
                let page = store.grants(&after, store::MAX_PAGE).await?;
                for g in &page {
                    let who = match (&g.user, &g.group) {
                        (Some(u), _) => format!("user {}", store::shown(u)),
                        (_, Some(gr)) => format!("group {}", store::shown(gr)),
                        _ => String::new(),
                    };
                    // The service last, and only when set: scripts reading the first four
                    // columns keep working.
                    let at = g
                        .service
                        .as_deref()
                        .map(|s| format!("\tservice {}", store::shown(s)))
                        .unwrap_or_default();
                    println!(
                        "{}\t{who}\t{} {}\t{}{at}",
                        g.id,
                        g.resource_type,
                        store::shown(&g.name),
                        g.actions.join(",")
                    );
                }
                match page.last() {
                    Some(g) if page.len() as i64 == store::MAX_PAGE => after = g.id.clone(),
                    _ => break,
                }
            }
        }
        Grants::Delete { id } => {
            store.delete_grant(&id).await?;
            eprintln!("deleted grant {id}");
        }
    }
    Ok(())
}

pub async fn tokens(args: &StoreArgs, cmd: Tokens) -> anyhow::Result<()> {
    let (store, _) = open(args).await?;
    let later = "running issuers refuse it within store.cache_ttl_seconds";
    match cmd {
        Tokens::List { user } => {
            for t in store.refresh_tokens_of(&user).await? {
                println!(
                    "{}\t{}\tclient {:?}\tissued {}\texpires {}\t{}",
                    t.id,
                    t.source,
                    t.client_id,
                    store::rfc3339(t.created_at),
                    store::rfc3339(t.expires_at),
                    t.last_used_at.map_or("never used".into(), |u| format!(
                        "last used {}",
                        store::rfc3339(u)
                    ))
                );
            }
        }
        Tokens::Revoke { id: Some(id), .. } => {
            store.revoke_refresh_token(&id).await?;
            eprintln!("revoked refresh token {id}: {later}");
        }
        Tokens::Revoke {
            user: Some(user), ..
        } => {
            let n = store.revoke_refresh_tokens_of(&user).await?;
            eprintln!("revoked {n} refresh token(s) of {user}: {later}");
        }
        Tokens::Revoke { .. } => anyhow::bail!("name a token id or --user USER"),
    }
    Ok(())
}
