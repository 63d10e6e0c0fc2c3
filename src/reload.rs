//! Hot reload: the running [`App`] is one `Arc` swapped whole, so a request sees either the old
//! state or the new one, never a mix, and a request in flight finishes on the state it began
//! with. A reload (SIGHUP, or a change to a watched file) reads and validates everything first
//! — the config file and environment, the htpasswd file, the keys — and swaps only when all of
//! it is good; otherwise the running state stays, the log says what is wrong, and
//! `token_issuer_reloads_total{result="failed"}` counts it.
//!
//! Settings that shape listeners and storage (`listen`, `[http]`, `[registry]`, `[metrics]`,
//! `[audit]`, `store.url`) take effect at restart; a reload that changes them says so.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use notify::Watcher;

use crate::app::App;
use crate::config::Config;
use crate::registry::Registry;

/// Changes closer together than this are one reload (an editor's write, rename and chmod).
const SETTLE: Duration = Duration::from_millis(100);
/// A changed file is applied once two reads this far apart agree: a config written in place
/// slowly can be valid TOML half-way (cut at a rule's boundary, dropping a trailing deny rule),
/// and applying that half would grant what the whole forbids.
const STILL: Duration = Duration::from_millis(500);
/// How long a file may keep changing before the reload waits for the next change instead.
const STILL_TRIES: usize = 20;
/// Symbolic links followed from a watched path to the file it names (stow, Nix, Ansible).
const MAX_LINKS: usize = 8;

/// Where the configuration comes from, to read it again.
pub struct Source {
    pub file: Option<PathBuf>,
    /// Command-line flags, as `key = value` pairs over the file and environment.
    pub overrides: Vec<(&'static str, String)>,
}

pub struct Live {
    app: ArcSwap<App>,
    config: std::sync::Mutex<Config>,
    source: Source,
    registry: std::sync::OnceLock<Arc<Registry>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Live {
    pub fn new(app: App, config: Config, source: Source) -> Self {
        set_loaded_metrics(&app);
        Self {
            app: ArcSwap::from_pointee(app),
            config: std::sync::Mutex::new(config),
            source,
            registry: std::sync::OnceLock::new(),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The state a request runs on, from start to end.
    pub fn current(&self) -> Arc<App> {
        self.app.load_full()
    }

    /// The built-in registry follows the issuer's keys: a reload updates the keys it trusts.
    pub fn attach_registry(&self, reg: Arc<Registry>) {
        let _ = self.registry.set(reg);
    }

    /// Reads and validates everything, then swaps; on any error the running state stays.
    pub async fn reload(&self, why: &str) -> anyhow::Result<()> {
        let _one = self.one_at_a_time.lock().await;
        let result = self.try_reload().await;
        let m = crate::metrics::get();
        match &result {
            Ok(()) => {
                m.reload_ok.inc();
                tracing::info!(kid = %self.current().keys.kid, "reloaded ({why})");
            }
            Err(e) => {
                m.reload_failed.inc();
                tracing::error!(
                    "reload ({why}) failed, still running the previous configuration: {e:#}"
                );
            }
        }
        result
    }

    async fn try_reload(&self) -> anyhow::Result<()> {
        let overrides: Vec<(&str, String)> = self
            .source
            .overrides
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let cfg = Config::load(self.source.file.as_deref(), &overrides)?;
        let old = self.current();
        let app = App::rebuild(&cfg, &old).await?;
        if !Arc::ptr_eq(&app.auth, &old.auth) {
            old.auth.revoke_changed_local(&app.auth).await;
        }
        {
            let mut running = self
                .config
                .lock()
                .map_err(|_| anyhow::anyhow!("reload state poisoned"))?;
            // Said also with a store, whose grants then decide alone: a file cut short while
            // it was written is the usual way to lose every rule.
            if !running.acl.is_empty() && cfg.acl.is_empty() {
                tracing::warn!(
                    "this reload removed every [[acl]] rule (there were {}); if that was not \
                     meant, the config file may have been read while it was written: write it \
                     whole and rename it into place",
                    running.acl.len()
                );
            }
            for what in restart_only_changes(&running, &cfg) {
                tracing::warn!("{what} changed; it takes effect at the next restart");
            }
            // What is compared next time: the restart-only settings stay those in force.
            let mut kept = cfg.clone();
            kept.listen = running.listen.clone();
            kept.http = running.http.clone();
            kept.registry = running.registry.clone();
            kept.metrics = running.metrics.clone();
            kept.audit = running.audit.clone();
            if let (Some(k), Some(r)) = (&mut kept.store, &running.store) {
                k.url = r.url.clone();
            }
            *running = kept;
        }
        if let Some(reg) = self.registry.get() {
            reg.auth.trust(crate::app::trusted_keys(&app));
        }
        set_loaded_metrics(&app);
        // Nothing can fail from here: the store takes this configuration's settings as it
        // goes into force.
        if let Some(users) = app.auth.store() {
            users.apply_settings();
        }
        self.app.store(Arc::new(app));
        Ok(())
    }

    /// The files whose change triggers a reload: the config file, the htpasswd file and the
    /// key files in force, each as configured and as every link on the way to it resolves (a
    /// change to the target of a link into another directory is a change to the file).
    fn watched(&self) -> HashSet<PathBuf> {
        let mut configured = Vec::new();
        if let Some(f) = &self.source.file {
            configured.push(absolute(f));
        }
        if let Ok(cfg) = self.config.lock() {
            if let Some(h) = &cfg.identity.htpasswd {
                configured.push(absolute(&h.relative()));
            }
            let k = &cfg.keys;
            for f in [&k.cert_file, &k.key_file, &k.kid_file]
                .into_iter()
                .flatten()
            {
                configured.push(absolute(&f.relative()));
            }
            for f in &k.published_files {
                configured.push(absolute(&f.relative()));
            }
        }
        let mut out = HashSet::new();
        for f in configured {
            resolve_links(&f, &mut out);
        }
        out
    }
}

fn set_loaded_metrics(app: &App) {
    let m = crate::metrics::get();
    m.key_not_after.set(app.keys.not_after);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    m.reload_last_success.set(now);
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `path`, each link it passes through on the way to the file, and the file itself.
fn resolve_links(path: &Path, out: &mut HashSet<PathBuf>) {
    let mut at = path.to_path_buf();
    out.insert(at.clone());
    for _ in 0..MAX_LINKS {
        let Ok(target) = std::fs::read_link(&at) else {
            break;
        };
        let next = match at.parent() {
            Some(dir) => absolute(&dir.join(target)),
            None => absolute(&target),
        };
        at = next;
        out.insert(at.clone());
    }
    // A link in a directory on the way (a linked config directory) resolves here.
    if let Ok(real) = std::fs::canonicalize(path) {
        out.insert(real);
    }
}

/// What the watched files hold now (a missing file reads as `None`).
fn contents(files: &HashSet<PathBuf>) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out: Vec<_> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read(f).ok()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Waits until the watched files read the same twice, [`STILL`] apart; false if they kept
/// changing for [`STILL_TRIES`] rounds (the next change event tries again). The events that
/// queued before a read are about what that read sees, so they are dropped first; one that
/// comes after the last read stays queued and brings another round.
async fn still(
    files: &HashSet<PathBuf>,
    rx: &mut tokio::sync::mpsc::Receiver<&'static str>,
) -> bool {
    while rx.try_recv().is_ok() {}
    let mut before = contents(files);
    for _ in 0..STILL_TRIES {
        tokio::time::sleep(STILL).await;
        while rx.try_recv().is_ok() {}
        let now = contents(files);
        if now == before {
            return true;
        }
        before = now;
    }
    false
}

/// Restart-only settings that differ between the running config and the new one.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    // The config types are compared through their Debug form: each is plain data, so equal
    // text is equal settings, without a PartialEq on every config struct.
    let differ =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push("listen");
    }
    if differ(&old.http, &new.http) {
        out.push("[http]");
    }
    if differ(&old.registry, &new.registry) {
        out.push("[registry]");
    }
    if differ(&old.metrics, &new.metrics) {
        out.push("[metrics]");
    }
    if differ(&old.audit, &new.audit) {
        out.push("[audit]");
    }
    if old.store.as_ref().map(|s| &s.url) != new.store.as_ref().map(|s| &s.url) {
        out.push("store.url");
    }
    out
}

/// Why a reload runs, as the log says it.
const FILE_CHANGED: &str = "file changed";
const SIGHUP: &str = "SIGHUP";

/// Reloads on SIGHUP (reopening the audit file too) and, with `reload.watch`, when a watched
/// file changes. Runs until the process ends.
pub fn spawn(live: Arc<Live>, watch: bool) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(16);
    #[cfg(unix)]
    {
        let tx = tx.clone();
        let live = live.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("SIGHUP cannot be handled here; reload by changing the files");
                return;
            };
            while hup.recv().await.is_some() {
                if let Some(a) = &live.current().audit {
                    a.reopen();
                }
                let _ = tx.try_send(SIGHUP);
            }
        });
    }
    // The files the running watcher covers.
    let mut covered = live.watched();
    let mut watcher = if watch {
        start_watcher(&covered, tx.clone())
    } else {
        None
    };
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Let a burst of changes settle, then reload once for all of them.
            let mut file_changed = first == FILE_CHANGED;
            let mut asked = first != FILE_CHANGED;
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(w)) => {
                        file_changed |= w == FILE_CHANGED;
                        asked |= w != FILE_CHANGED;
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if file_changed && !still(&live.watched(), &mut rx).await {
                tracing::warn!(
                    "a watched file is still changing after {} s; waiting for its next change \
                     (write files whole and rename them into place)",
                    (STILL * STILL_TRIES as u32).as_secs()
                );
                // A SIGHUP in the same burst was an explicit request: it is served anyway.
                if !asked {
                    continue;
                }
            }
            let why = if asked { SIGHUP } else { FILE_CHANGED };
            let _ = live.reload(why).await;
            if watch {
                // Links are resolved again: a link pointed elsewhere moves the watch with it.
                let now = live.watched();
                if now != covered {
                    watcher = start_watcher(&now, tx.clone());
                    covered = now;
                }
            }
        }
        drop(watcher);
    });
}

/// Watches the directories holding `files` (editors and Kubernetes replace files by rename,
/// which a watch on the file itself would miss) and reports changes to any of them, or to a
/// Kubernetes `..data` link swap, on `tx`.
fn start_watcher(
    files: &HashSet<PathBuf>,
    tx: tokio::sync::mpsc::Sender<&'static str>,
) -> Option<notify::RecommendedWatcher> {
    let names: HashSet<PathBuf> = files.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            names.contains(p)
                || p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".."))
        });
        if relevant {
            let _ = tx.try_send(FILE_CHANGED);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("files are not watched ({e}); reload with SIGHUP");
            return None;
        }
    };
    let dirs: HashSet<&Path> = files.iter().filter_map(|f| f.parent()).collect();
    for dir in dirs {
        if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), "not watched ({e}); reload with SIGHUP");
        }
    }
    Some(watcher)
}
