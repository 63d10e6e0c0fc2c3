//! The store commands' audit line: after a change made with `--config` and `[audit]` on, one
//! `"kind":"admin"` line (see `token_issuer::audit::cli_change`).

use super::manage::StoreArgs;

/// After a store command: with `--config` and `[audit]` on, one `"kind":"admin"` line for a
/// change (the arguments name it; passwords come from standard input and are never among
/// them), whatever its outcome. Listings write none.
pub(crate) async fn audited(args: &StoreArgs, result: anyhow::Result<()>) -> anyhow::Result<()> {
    let Some(file) = &args.config else {
        return result;
    };
    let words: Vec<String> = std::env::args().skip(1).collect();
    let mut plain = words.iter().filter(|w| !w.starts_with('-'));
    let (Some(noun), Some(verb)) = (plain.next(), plain.next()) else {
        return result;
    };
    let reads = verb == "list"
        || (noun == "groups"
            && verb == "members"
            && !words.iter().any(|w| w == "--add" || w == "--remove"));
    if reads {
        return result;
    }
    let target = plain.next().cloned().unwrap_or_default();
    let fields = serde_json::json!({ "args": words });
    let cfg = token_issuer::config::Config::load(Some(file), &[])?;
    token_issuer::audit::cli_change(
        &cfg.audit,
        &format!("{noun} {verb}"),
        &target,
        fields,
        result.is_ok(),
    )
    .await?;
    result
}
