//! `users`, `groups`, `grants` and `tokens`: the admin API's operations from the command line,
//! against the configured store directly (no server needed).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use token_issuer::config::Config;
use token_issuer::identity::htpasswd::Htpasswd;
use token_issuer::store::{self, NewGrant, Store, UserPatch};

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
pub enum Users {
    /// Add a user, reading the password from standard input.
    Add {
        /// The user name: 1-128 bytes, no ':', '/', control or format (zero-width, bidi)
        /// characters, no surrounding spaces, and not the same as an existing name ignoring
        /// case and look-alike compatibility forms (kept in Unicode NFC).
        name: String,
        /// May do everything, catalog and admin API included.
        #[arg(long)]
        admin: bool,
        /// Expire after this long (`30d`, `12h`) or at this RFC 3339 UTC time (robot accounts).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List users: name, flags, expiry, last use (to the minute).
    List {
        /// Only accounts that expire within this span from now (e.g. 7d, 36h).
        #[arg(long, value_parser = store::parse_within, conflicts_with = "unused")]
        expiring: Option<i64>,
        /// Only accounts not used for this span (e.g. 90d); never used counts from creation.
        #[arg(long, value_parser = store::parse_within)]
        unused: Option<i64>,
    },
    /// Set a user's password, reading it from standard input (or `--generate` one); the
    /// expiry stays, the user's refresh tokens are revoked.
    Passwd {
        /// The user name.
        name: String,
        /// Make a fresh random password and print it (once) instead of reading one.
        #[arg(long)]
        generate: bool,
    },
    /// Refuse a user's logins (at most store.cache_ttl_seconds later on running issuers).
    Disable {
        /// The user name.
        name: String,
    },
    /// Allow a disabled user's logins again.
    Enable {
        /// The user name.
        name: String,
    },
    /// Delete a user, their memberships and grants.
    Delete {
        /// The user name.
        name: String,
    },
    /// Copy every user of an htpasswd file (bcrypt hashes as they are) into the store.
    Import {
        /// The htpasswd file.
        file: PathBuf,
    },
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
async fn open(args: &StoreArgs) -> anyhow::Result<(Store, Option<Htpasswd>)> {
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
            store.set_max_expiry_days(sc.max_expiry_days);
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
            Ok((Store::open(&url, Path::new("")).await?, None))
        }
    }
}

/// `30d`, `12h` from now, or an RFC 3339 time.
fn expiry(s: &str) -> anyhow::Result<i64> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(store::now() + d.as_secs() as i64);
    }
    store::parse_time(s).map_err(|_| {
        anyhow::anyhow!("--expires {s:?}: use a duration (30d, 12h) or an RFC 3339 UTC time")
    })
}

fn hash_stdin() -> anyhow::Result<String> {
    Ok(store::hash_password(&super::tools::read_password()?)?)
}

pub async fn users(args: &StoreArgs, cmd: Users) -> anyhow::Result<()> {
    let (store, htpasswd) = open(args).await?;
    let in_file = |name: &str| htpasswd.as_ref().is_some_and(|h| h.knows(name));
    match cmd {
        Users::Add {
            name,
            admin,
            expires,
        } => {
            if in_file(&name) {
                anyhow::bail!("user {name:?} is in the htpasswd file; a name lives in one source");
            }
            let expires_at = expires.as_deref().map(expiry).transpose()?;
            let name = store
                .add_user(&name, &hash_stdin()?, admin, false, expires_at)
                .await?;
            eprintln!("added user {} to {}", store::shown(&name), store.shown);
        }
        Users::List { expiring, unused } => {
            let filter = match (expiring, unused) {
                (Some(w), _) => store::UserFilter::Expiring(w),
                (_, Some(u)) => store::UserFilter::Unused(u),
                _ => store::UserFilter::All,
            };
            let mut after = String::new();
            loop {
                let page = store.users_where(&after, store::MAX_PAGE, filter).await?;
                for u in &page {
                    let mut flags = Vec::new();
                    if u.admin {
                        flags.push("admin".to_string());
                    }
                    if u.disabled {
                        flags.push("disabled".to_string());
                    }
                    if let Some(t) = u.expires_at {
                        flags.push(format!("expires {}", store::rfc3339(t)));
                    }
                    flags.push(match u.last_used_at {
                        Some(t) => format!("last used {}", store::rfc3339(t)),
                        None => "never used".into(),
                    });
                    println!("{}\t{}", store::shown(&u.name), flags.join(", "));
                }
                match page.last() {
                    Some(u) if page.len() as i64 == store::MAX_PAGE => after = u.name.clone(),
                    _ => break,
                }
            }
        }
        Users::Passwd { name, generate } => {
            let generated = generate.then(store::generate_password).transpose()?;
            let hash = match &generated {
                Some(pw) => store::hash_password(pw)?,
                None => hash_stdin()?,
            };
            let revoked = store.set_password(&name, hash).await?;
            if let Some(pw) = generated {
                // Standard output holds the secret alone, for a script to capture.
                println!("{pw}");
            }
            eprintln!(
                "changed the password of {name} (its expiry unchanged; {revoked} refresh token(s) revoked)"
            );
        }
        Users::Disable { name } => {
            set_disabled(&store, &name, true).await?;
            eprintln!("disabled {name}: running issuers refuse it within store.cache_ttl_seconds");
        }
        Users::Enable { name } => {
            set_disabled(&store, &name, false).await?;
            eprintln!("enabled {name}");
        }
        Users::Delete { name } => {
            store.delete_user(&name).await?;
            eprintln!("deleted user {name}");
        }
        Users::Import { file } => {
            let h = Htpasswd::load(&file)?;
            let (mut added, mut kept) = (0, 0);
            for (name, hash) in h.entries() {
                match store.add_user(name, hash, false, false, None).await {
                    Ok(_) => added += 1,
                    Err(store::StoreError::Conflict(_)) => {
                        eprintln!("kept user {name}: already in the store");
                        kept += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            eprintln!(
                "imported {added} user(s) from {} into {} ({kept} already there); remove them from the htpasswd file (or identity.htpasswd) before restarting",
                file.display(),
                store.shown
            );
        }
    }
    Ok(())
}

async fn set_disabled(store: &Store, name: &str, disabled: bool) -> anyhow::Result<()> {
    let patch = UserPatch {
        disabled: Some(disabled),
        ..UserPatch::default()
    };
    store.update_user(name, &patch).await?;
    Ok(())
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
