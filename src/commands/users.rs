//! `users`: the store's users from the command line (the admin API's `/users` routes), against
//! the configured store directly.

use std::path::PathBuf;

use clap::Subcommand;
use token_issuer::identity::htpasswd::Htpasswd;
use token_issuer::store::{self, Store, UserPatch};

use super::manage::{open, StoreArgs};

#[derive(Subcommand)]
pub enum Users {
    /// Add a user, reading the password from standard input (or `--generate` a secret).
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
        /// Make a secret (`tis_...`, 160 random bits, stored as a keyed hash under
        /// store.pepper_files) and print it, once, instead of reading a password.
        #[arg(long)]
        generate: bool,
    },
    /// Whose generated secret this is (read from standard input, never the command line).
    FindSecret,
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
        /// Make a fresh secret (as `add --generate`) and print it, once, instead of reading one.
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

/// `30d`, `12h` from now, or an RFC 3339 time.
fn expiry(s: &str) -> anyhow::Result<i64> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(store::now() + d.as_secs() as i64);
    }
    store::parse_time(s).map_err(|_| {
        anyhow::anyhow!("--expires {s:?}: use a duration (30d, 12h) or an RFC 3339 UTC time")
    })
}

/// The stored form of a new credential, and the secret to print when it was generated: a
/// generated secret under the store's pepper, else bcrypt of the password on standard input.
fn credential(store: &Store, generate: bool) -> anyhow::Result<(String, Option<String>)> {
    if generate {
        let (secret, stored) = store.new_secret()?;
        return Ok((stored, Some(secret)));
    }
    let password = super::tools::read_password()?;
    Ok((store::hash_password(&password)?, None))
}

/// Standard output holds the secret alone, for a script to capture.
fn print_secret(secret: Option<String>) {
    if let Some(s) = secret {
        println!("{s}");
    }
}

pub async fn users(args: &StoreArgs, cmd: Users) -> anyhow::Result<()> {
    let (store, htpasswd) = open(args).await?;
    let in_file = |name: &str| htpasswd.as_ref().is_some_and(|h| h.knows(name));
    match cmd {
        Users::Add {
            name,
            admin,
            expires,
            generate,
        } => {
            if in_file(&name) {
                anyhow::bail!("user {name:?} is in the htpasswd file; a name lives in one source");
            }
            let expires_at = expires.as_deref().map(expiry).transpose()?;
            let (stored, secret) = credential(&store, generate)?;
            let name = store
                .add_user(&name, &stored, admin, false, expires_at)
                .await?;
            print_secret(secret);
            eprintln!("added user {} to {}", store::shown(&name), store.shown);
        }
        Users::FindSecret => {
            let secret = super::tools::read_password()?;
            if !store::looks_generated(&secret) {
                anyhow::bail!("this is not a generated secret (tis_ and 32 base32 characters)");
            }
            match store.find_secret(&secret).await? {
                Some(name) => println!("{}", store::shown(&name)),
                None => anyhow::bail!(
                    "no user has this secret under the configured peppers (store.pepper_files)"
                ),
            }
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
            let (stored, secret) = credential(&store, generate)?;
            let revoked = store.set_password(&name, stored).await?;
            print_secret(secret);
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
