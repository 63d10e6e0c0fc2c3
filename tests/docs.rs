//! The manual cannot drift from the code: every relative link and anchor of README.md,
//! BENCH.md and docs/ resolves, and every setting the config accepts is named in
//! docs/configuration.md (the settings are found by asking the config itself: each section's
//! "unknown field" error lists the fields it has).

use std::path::Path;

use token_issuer::config::Config;

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as '-'.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            inside = !inside;
        } else if !inside {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
                out.push(slug(&line[hashes + 1..]));
            }
        }
    }
    out
}

#[test]
fn every_link_of_the_readme_and_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("BENCH.md")];
    for e in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    let link = regex::Regex::new(r"\[[^\]]*\]\(([^)\s]+)\)").expect("regex");
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with("```") {
                inside = !inside;
                continue;
            }
            if inside {
                continue;
            }
            for c in link.captures_iter(line) {
                let target = &c[1];
                if target.contains(':') {
                    continue; // https:, mailto:
                }
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let to = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().expect("dir").join(path)
                };
                checked += 1;
                let ok = to.exists()
                    && (anchor.is_empty()
                        || anchors(&std::fs::read_to_string(&to).unwrap_or_default())
                            .iter()
                            .any(|a| a == anchor));
                if !ok {
                    broken.push(format!("{}: {target}", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 50, "only {checked} links found");
}

/// The fields a TOML text's unknown key `zzz` is said to be none of, or `None` when the error
/// is of another kind (a leaf: a value, a map of free keys, an enum).
fn fields_beside(dir: &Path, toml: &str) -> Option<Vec<String>> {
    let file = dir.join("probe.toml");
    std::fs::write(&file, toml).expect("write");
    let err = Config::load(Some(&file), &[]).err()?.to_string();
    let (_, expected) = err.split_once("unknown field: found `zzz`, expected ")?;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every dotted key the config accepts, leaves only.
fn settings(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let fields = if prefix.is_empty() {
        fields_beside(dir, "zzz = 1\n")
    } else {
        fields_beside(dir, &format!("[{prefix}]\nzzz = 1\n"))
            .or_else(|| fields_beside(dir, &format!("[[{prefix}]]\nzzz = 1\n")))
    };
    match fields {
        Some(fields) => {
            for f in fields {
                let key = if prefix.is_empty() {
                    f
                } else {
                    format!("{prefix}.{f}")
                };
                settings(dir, &key, out);
            }
        }
        None => out.push(prefix.to_string()),
    }
}

#[test]
fn every_setting_is_in_the_configuration_page() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut all = Vec::new();
    settings(tmp.path(), "", &mut all);
    assert!(all.len() > 60, "found only {all:?}");
    assert!(
        all.contains(&"registry.gc.grace_seconds".to_string()),
        "{all:?}"
    );
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let missing: Vec<&String> = all
        .iter()
        .filter(|k| !page.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:?}"
    );
}
