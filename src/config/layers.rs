//! The figment layers beyond the file: the seed's environment names, and what `load` says when
//! a layer overrides the file or a value does not parse.

use std::path::Path;

use figment::providers::Env;
use figment::value::Value;
use figment::Figment;

use super::SEED_ENV;

/// Says which keys of the file the environment or a flag replaced with another value (the
/// container image's `TOKEN_ISSUER_LISTEN`, a stray variable): a config that says one thing
/// while the process does another must not be silent. Values are not shown (some are secret).
/// `given` is `fig`'s merged layers, `mine` the file's alone.
pub(super) fn warn_overridden(fig: &Figment, given: &Given, mine: &Given, file: &Path) {
    let Some(Value::Dict(_, dict)) = &mine.0 else {
        return;
    };
    let mut keys = Vec::new();
    leaves("", dict, &mut keys);
    for key in keys {
        let (Some(mine), Some(theirs)) = (mine.find(&key), given.find(&key)) else {
            continue;
        };
        if mine == theirs {
            continue;
        }
        let by = match fig.get_metadata(theirs.tag()) {
            Some(m) if m.name.contains("environment") => env_var_for(&key),
            _ => "a command-line flag".to_string(),
        };
        tracing::warn!(
            "{key} in {}: overridden by {by}, which sets another value",
            file.display()
        );
    }
}

/// The variable that set `key` from the environment: a seed name when that is set, else the
/// `TOKEN_ISSUER_` name.
fn env_var_for(key: &str) -> String {
    match SEED_ENV
        .iter()
        .find(|(env, k)| *k == key && std::env::var_os(env).is_some())
    {
        Some((env, _)) => format!("{env} ({key})"),
        None => format!("TOKEN_ISSUER_{}", key.to_uppercase().replace('.', "__")),
    }
}

/// The merged layers of a figment, copied once: `Figment::find_value` copies the whole tree
/// on every call, which a config of 10,000 rules makes the cost of start-up.
pub(super) struct Given(Option<Value>);

impl Given {
    pub(super) fn of(fig: &Figment) -> Self {
        // The empty path is the root: the merged tree itself, tags (and so metadata) kept.
        Self(fig.find_value("").ok())
    }

    /// The value at a dotted `key`, as `Figment::find_value` finds it.
    pub(super) fn find(&self, key: &str) -> Option<&Value> {
        self.0.as_ref()?.find_ref(key)
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.find(key).is_some()
    }
}

fn leaves(prefix: &str, dict: &figment::value::Dict, out: &mut Vec<String>) {
    for (k, v) in dict {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            figment::value::Value::Dict(_, d) => leaves(&key, d, out),
            _ => out.push(key),
        }
    }
}

/// One figment error in the user's terms: the variable they set (not figment's upper-cased
/// TOML path), or the key and the file it is in.
pub(super) fn describe(e: figment::Error) -> String {
    let key = e.path.join(".").to_lowercase();
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let file = e.metadata.as_ref().and_then(|m| match &m.source {
        Some(figment::Source::File(p)) => Some(p.display().to_string()),
        _ => None,
    });
    let what = if from_env {
        env_var_for(&key)
    } else if let Some(file) = file {
        format!("{key} in {file}")
    } else {
        key
    };
    // serde quotes its list of expected fields inside another pair of backticks.
    let kind = e
        .kind
        .to_string()
        .replace("expected `one of ", "expected one of ")
        .replace("``", "`");
    format!("{what}: {kind}")
}

pub(super) fn seed_env() -> Env {
    let names: Vec<&str> = SEED_ENV.iter().map(|(e, _)| *e).collect();
    Env::raw().only(&names).map(|name| {
        SEED_ENV
            .iter()
            .find(|(e, _)| name == *e)
            .map(|(_, key)| (*key).into())
            .unwrap_or_else(|| name.into())
    })
}
