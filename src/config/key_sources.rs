//! Where the signing key, its certificate and the published certificates come from: inline
//! base64 (the seed's `REGISTRY_TOKEN_AUTH_CERT*` variables) or files.

use std::path::PathBuf;

use anyhow::{bail, Context};
use figment::value::magic::RelativePathBuf;

use super::{setting, Config};

/// The signing key's parts, each with the setting it came from as a person would look for it
/// (`keys.cert_file (keys/api.crt)`, `REGISTRY_TOKEN_AUTH_CERT (keys.cert)`): an error about a
/// key names what was actually set, never a setting that was not.
pub struct KeySources {
    pub cert: Vec<u8>,
    pub cert_from: String,
    pub key: Vec<u8>,
    pub key_from: String,
    pub kid: Option<String>,
    pub kid_from: Option<String>,
}

impl Config {
    /// The PEM certificate, the PEM key and the kid, if given, with where each came from.
    pub fn key_sources(&self) -> anyhow::Result<KeySources> {
        let k = &self.keys;
        let (cert, cert_from) = required_source(
            k.cert.as_deref(),
            k.cert_file.as_ref(),
            "keys.cert",
            "certificate",
        )?;
        let (key, key_from) =
            required_source(k.key.as_deref(), k.key_file.as_ref(), "keys.key", "key")?;
        let (kid, kid_from) = match inline_or_file(
            k.kid.as_deref(),
            k.kid_file.as_ref(),
            "keys.kid",
            "keys.kid_file",
        )? {
            Some((bytes, from)) => (
                Some(
                    String::from_utf8(bytes)
                        .with_context(|| format!("{from}: the kid is not text"))?,
                ),
                Some(from),
            ),
            None => (None, None),
        };
        Ok(KeySources {
            cert,
            cert_from,
            key,
            key_from,
            kid,
            kid_from,
        })
    }

    /// The certificates of `keys.published` and `keys.published_files`, each with the setting
    /// it came from (for error messages).
    pub fn published_sources(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let k = &self.keys;
        let mut out = Vec::new();
        for (i, b64) in k.published.iter().enumerate() {
            let what = format!("{} entry {}", setting("keys.published"), i + 1);
            out.push((what.clone(), decode_base64(b64).with_context(|| what)?));
        }
        for path in &k.published_files {
            let path: PathBuf = path.relative();
            let what = format!("keys.published_files: {}", path.display());
            let bytes = std::fs::read(&path).with_context(|| format!("{what}: reading it"))?;
            out.push((what, bytes));
        }
        Ok(out)
    }
}

/// `inline_or_file` for a source the issuer cannot start without: its absence names both
/// settings.
fn required_source(
    inline: Option<&str>,
    file: Option<&RelativePathBuf>,
    key: &str,
    what: &str,
) -> anyhow::Result<(Vec<u8>, String)> {
    inline_or_file(inline, file, key, &format!("{key}_file"))?
        .with_context(|| format!("no signing {what}: set {} or {key}_file", setting(key)))
}

/// The bytes, and the setting they came from.
fn inline_or_file(
    inline: Option<&str>,
    file: Option<&RelativePathBuf>,
    inline_key: &str,
    file_key: &str,
) -> anyhow::Result<Option<(Vec<u8>, String)>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!(
            "{} and {file_key} are both set; keep one",
            setting(inline_key)
        ),
        (Some(b64), None) => {
            let from = setting(inline_key);
            let bytes = decode_base64(b64).with_context(|| from.clone())?;
            Ok(Some((bytes, from)))
        }
        (None, Some(path)) => {
            let path: PathBuf = path.relative();
            let from = format!("{file_key} ({})", path.display());
            let bytes = std::fs::read(&path)
                .with_context(|| format!("{file_key}: reading {}", path.display()))?;
            Ok(Some((trim_end(bytes), from)))
        }
        (None, None) => Ok(None),
    }
}

/// Base64 as open-balena's tooling writes it: line breaks allowed, and the decoded file's
/// trailing newline trimmed.
fn decode_base64(value: &str) -> anyhow::Result<Vec<u8>> {
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = data_encoding::BASE64
        .decode(compact.as_bytes())
        .or_else(|_| data_encoding::BASE64_NOPAD.decode(compact.as_bytes()))
        .map_err(|_| anyhow::anyhow!("is not valid base64 (expected `base64 -w0 < file`)"))?;
    Ok(trim_end(bytes))
}

fn trim_end(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_trimmed_after_decoding() {
        // "kid\n" with a line break inside the base64.
        assert_eq!(decode_base64("a2lk\nCg==\n").expect("b64"), b"kid");
        assert!(decode_base64("not base64!").is_err());
    }
}
