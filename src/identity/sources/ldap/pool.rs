//! The directory's connections: at most `ldap.pool_size`, each bound as the service account,
//! TLS with the system's roots and `ldap.ca_file`, every exchange under `ldap.timeout_seconds`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings, LdapError};
use tokio::sync::{Semaphore, SemaphorePermit};
use zeroize::Zeroizing;

use super::SUCCESS;
use crate::config::{setting, LdapConfig, BIND_PASSWORD_ENV};
use crate::identity::types::AuthError;

/// Connections bound as the service account, at most `pool_size` in use at once. A connection
/// goes back only after every operation on it succeeded; one that failed, timed out or closed
/// is dropped, and the next login opens a new one.
/// How long an idle connection is reused.
const MAX_IDLE: Duration = Duration::from_secs(60);

pub(super) struct Pool {
    pub(super) url: String,
    settings: LdapConnSettings,
    bind_dn: String,
    bind_password: Zeroizing<String>,
    timeout: Duration,
    /// Connections bound as the service account, with when each was last used.
    idle: Mutex<Vec<(ldap3::Ldap, Instant)>>,
    permits: Semaphore,
}

pub(super) struct Conn<'p> {
    pub(super) ldap: ldap3::Ldap,
    pool: &'p Pool,
    _permit: SemaphorePermit<'p>,
}

impl Conn<'_> {
    pub(super) fn release(self) {
        let mut idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        idle.push((self.ldap, Instant::now()));
    }
}

impl Pool {
    pub(super) fn new(cfg: &LdapConfig) -> anyhow::Result<Self> {
        let timeout = Duration::from_secs(cfg.timeout_seconds);
        let password = bind_password(cfg)?;
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_starttls(cfg.start_tls);
        if cfg.start_tls || cfg.url.starts_with("ldaps://") {
            settings = settings.set_config(tls_config(cfg)?);
        }
        Ok(Self {
            url: cfg.url.clone(),
            settings,
            bind_dn: cfg.bind_dn.clone(),
            bind_password: Zeroizing::new(password),
            timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(cfg.pool_size),
        })
    }

    /// The directory failed: a 503 naming it and how (never a credential).
    pub(super) fn down(&self, how: &str) -> AuthError {
        tracing::warn!(url = %self.url, "directory: {how}");
        AuthError::Unavailable(format!("the directory {}: {how}", self.url))
    }

    /// Every exchange with the directory, and the wait for a connection, has the timeout.
    pub(super) async fn within<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(self.down(&format!(
                "no answer within {} s ({})",
                self.timeout.as_secs(),
                setting("ldap.timeout_seconds")
            ))),
        }
    }

    pub(super) async fn get(&self) -> Result<Conn<'_>, AuthError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| self.down("closed"))?;
        let reused = loop {
            let next = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match next {
                // A connection idle this long may have been cut by a firewall without a word:
                // a fresh one costs a connect and a bind, a dead one a 503.
                Some((mut l, since)) => {
                    if !l.is_closed() && since.elapsed() < MAX_IDLE {
                        break Some(l);
                    }
                }
                None => break None,
            }
        };
        let ldap = match reused {
            Some(l) => l,
            None => self.connect().await?,
        };
        Ok(Conn {
            ldap,
            pool: self,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<ldap3::Ldap, AuthError> {
        let (conn, mut ldap) = LdapConnAsync::with_settings(self.settings.clone(), &self.url)
            .await
            .map_err(|e| self.down(&format!("cannot connect: {}", describe(&e))))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "directory connection ended");
            }
        });
        self.bind_service(&mut ldap).await?;
        Ok(ldap)
    }

    pub(super) async fn bind_service(&self, ldap: &mut ldap3::Ldap) -> Result<(), AuthError> {
        let r = ldap
            .simple_bind(&self.bind_dn, &self.bind_password)
            .await
            .map_err(|e| self.down(&format!("the service account's bind failed: {e}")))?;
        if r.rc != SUCCESS {
            return Err(self.down(&format!(
                "the service account's bind was refused ({} {}); check {} and its password",
                r.rc,
                r.text,
                setting("ldap.bind_dn")
            )));
        }
        Ok(())
    }
}

/// The service account's password: `TOKEN_ISSUER_LDAP__BIND_PASSWORD` read as it is (not
/// through the config layers, which would parse `12345678` as a number and print it in their
/// error), or the first line of `ldap.bind_password_file`.
fn bind_password(cfg: &LdapConfig) -> anyhow::Result<String> {
    if let Some(p) = std::env::var_os(BIND_PASSWORD_ENV) {
        return match p.into_string() {
            Ok(p) if !p.is_empty() => Ok(p),
            _ => anyhow::bail!(
                "{BIND_PASSWORD_ENV}: empty or not UTF-8 (an empty password is an \
                 unauthenticated bind)"
            ),
        };
    }
    let key = setting("ldap.bind_password_file");
    let Some(file) = &cfg.bind_password_file else {
        anyhow::bail!("{key}: missing; give a file, or set {BIND_PASSWORD_ENV}");
    };
    let path = file.relative();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("{key}: cannot read {}: {e}", path.display()))?;
    let p = text.strip_suffix('\n').unwrap_or(&text);
    let p = p.strip_suffix('\r').unwrap_or(p);
    if p.is_empty() {
        anyhow::bail!(
            "{key}: {} is empty (an empty password is an unauthenticated bind)",
            path.display()
        );
    }
    Ok(p.to_string())
}

fn describe(e: &LdapError) -> String {
    match e {
        LdapError::Io { source } => source.to_string(),
        other => other.to_string(),
    }
}

/// The system's roots and `ca_file`'s certificates, with aws-lc-rs.
fn tls_config(cfg: &LdapConfig) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(file) = &cfg.ca_file {
        let path = file.relative();
        let key = setting("ldap.ca_file");
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("{key}: {}: {e}", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{key}: {} holds no certificate", path.display());
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| anyhow::anyhow!("{key}: {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
