//! What a manifest is, derived once: its media type, the blobs it needs (config and layers,
//! foreign layers skipped), its children (an index's or list's manifests, with platforms), its
//! subject, artifact type and annotations. Pushes validate through [`Manifest::parse`]; the
//! handlers, referrers and garbage collection read stored ones through [`Manifest::read`].
//! And a manifest reference, a tag or a digest, parsed once ([`Reference`]).

use serde_json::Value;

use super::storage::Digest;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Non-distributable layers live elsewhere, by their `urls`: never stored, never required.
const FOREIGN_LAYERS: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// Why a pushed manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Invalid {
    /// `MANIFEST_INVALID`, with this text.
    #[error("{0}")]
    Manifest(String),
    /// A descriptor's digest is malformed: `DIGEST_INVALID`, as distribution answers.
    #[error("{0}")]
    Digest(String),
}

fn invalid(what: impl Into<String>) -> Invalid {
    Invalid::Manifest(what.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Child {
    pub digest: Digest,
    /// (os, architecture), when the index says.
    pub platform: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub media_type: String,
    blobs: Vec<Digest>,
    children: Vec<Child>,
    pub subject: Option<Digest>,
    /// `artifactType`, else the config's media type, else `""`.
    pub artifact_type: String,
    pub annotations: Option<Value>,
}

impl Manifest {
    /// Validates a pushed manifest as distribution does. `content_type` is the request's; the
    /// document's `mediaType` must agree with it (unless it is plain JSON), and an OCI manifest
    /// that names neither is told from an index by its shape.
    pub(crate) fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, Invalid> {
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|_| invalid("the manifest is not JSON"))?;
        let declared = doc.get("mediaType").and_then(Value::as_str);
        let media_type = match (content_type, declared) {
            (Some(h), Some(d)) if h != d && h != "application/json" => {
                return Err(invalid(format!("Content-Type {h} but mediaType {d}")))
            }
            (_, Some(d)) => d.to_string(),
            (Some(h), None) if h != "application/json" => h.to_string(),
            _ if doc.get("manifests").is_some() => OCI_INDEX.to_string(),
            _ => OCI_MANIFEST.to_string(),
        };
        if doc.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
            return Err(invalid("schemaVersion must be 2"));
        }
        match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let Some(config) = doc.get("config").filter(|c| c.is_object()) else {
                    return Err(invalid("an image manifest needs a config descriptor"));
                };
                if config.get("urls").is_some() {
                    return Err(invalid("the config descriptor cannot have urls"));
                }
                if doc.get("layers").is_some_and(|l| !l.is_array()) {
                    return Err(invalid("layers must be an array"));
                }
                for desc in array(&doc, "layers") {
                    // distribution allows urls on foreign layers only.
                    if desc.get("urls").is_some() && !is_foreign(desc) {
                        let mt = desc.get("mediaType").and_then(Value::as_str).unwrap_or("");
                        return Err(invalid(format!(
                            "urls are not allowed on a {mt} descriptor"
                        )));
                    }
                }
            }
            OCI_INDEX | DOCKER_LIST => {}
            other => return Err(invalid(format!("unsupported manifest media type {other}"))),
        }
        Self::from_doc(&doc, media_type, true)
    }

    /// A stored manifest (validated when it was pushed), or `None` when it does not parse.
    pub(crate) fn read(bytes: &[u8], media_type: &str) -> Option<Self> {
        let doc: Value = serde_json::from_slice(bytes).ok()?;
        Self::from_doc(&doc, media_type.to_string(), false).ok()
    }

    /// `strict`: a descriptor without a valid digest is an error, else it is skipped.
    fn from_doc(doc: &Value, media_type: String, strict: bool) -> Result<Self, Invalid> {
        let digest_of = |desc: &Value| -> Result<Option<Digest>, Invalid> {
            let parsed = desc
                .get("digest")
                .and_then(Value::as_str)
                .map(Digest::parse);
            match parsed {
                Some(Ok(d)) => Ok(Some(d)),
                _ if !strict => Ok(None),
                None => Err(invalid("a descriptor has no digest")),
                Some(Err(e)) => Err(Invalid::Digest(e.to_string())),
            }
        };
        let mut blobs = Vec::new();
        let config = doc.get("config").filter(|c| c.is_object());
        for desc in config.into_iter().chain(array(doc, "layers")) {
            if is_foreign(desc) {
                continue;
            }
            blobs.extend(digest_of(desc)?);
        }
        let mut children = Vec::new();
        for desc in array(doc, "manifests") {
            if let Some(digest) = digest_of(desc)? {
                let platform = desc.get("platform").and_then(|p| {
                    Some((
                        p.get("os")?.as_str()?.to_string(),
                        p.get("architecture")?.as_str()?.to_string(),
                    ))
                });
                children.push(Child { digest, platform });
            }
        }
        let subject = match doc.get("subject") {
            Some(s) => digest_of(s)?,
            None => None,
        };
        let artifact_type = doc
            .get("artifactType")
            .or_else(|| doc.pointer("/config/mediaType"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Self {
            media_type,
            blobs,
            children,
            subject,
            artifact_type,
            annotations: doc.get("annotations").cloned(),
        })
    }

    /// The blobs an image manifest needs in the repository: config and layers, not foreign ones.
    pub(crate) fn blobs(&self) -> &[Digest] {
        &self.blobs
    }

    /// An index's or list's manifests.
    pub(crate) fn children(&self) -> &[Child] {
        &self.children
    }

    /// The child for `os`/`architecture`, if the index names one.
    pub(crate) fn platform(&self, os: &str, architecture: &str) -> Option<&Digest> {
        self.children
            .iter()
            .find(|c| {
                c.platform
                    .as_ref()
                    .is_some_and(|(o, a)| o == os && a == architecture)
            })
            .map(|c| &c.digest)
    }
}

fn array<'a>(doc: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    doc.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn is_foreign(desc: &Value) -> bool {
    desc.get("urls").is_some()
        && desc
            .get("mediaType")
            .and_then(Value::as_str)
            .is_some_and(|mt| FOREIGN_LAYERS.contains(&mt))
}

/// A manifest reference: a digest (it holds a `:`, which tags cannot), else a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reference {
    Tag(String),
    Digest(Digest),
}

/// A reference that is neither a digest nor a valid tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadReference {
    #[error("{0}")]
    Digest(String),
    #[error("invalid tag")]
    Tag,
}

impl Reference {
    pub(crate) fn parse(s: &str) -> Result<Self, BadReference> {
        if s.contains(':') {
            return Digest::parse(s)
                .map(Self::Digest)
                .map_err(|e| BadReference::Digest(e.to_string()));
        }
        if valid_tag(s) {
            Ok(Self::Tag(s.to_string()))
        } else {
            Err(BadReference::Tag)
        }
    }
}

/// The distribution spec's tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(crate) fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn image_manifest_blobs_skip_foreign_layers() {
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": A, "size": 1},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": B, "size": 1},
                {"mediaType": FOREIGN_LAYERS[0], "digest": C, "size": 1, "urls": ["https://x"]},
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": C, "size": 1},
            "annotations": {"k": "v"},
        });
        let m = Manifest::parse(doc.to_string().as_bytes(), None).expect("valid");
        assert_eq!(m.media_type, OCI_MANIFEST, "told by shape");
        let blobs: Vec<String> = m.blobs().iter().map(ToString::to_string).collect();
        assert_eq!(blobs, [A, B]);
        assert_eq!(
            m.subject.as_ref().map(ToString::to_string).as_deref(),
            Some(C)
        );
        assert_eq!(m.artifact_type, "application/vnd.oci.image.config.v1+json");
        assert_eq!(m.annotations, Some(serde_json::json!({"k": "v"})));
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let refuse = |doc: Value, ct: Option<&str>| {
            Manifest::parse(doc.to_string().as_bytes(), ct)
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            refuse(serde_json::json!({"schemaVersion": 1}), None),
            "schemaVersion must be 2"
        );
        assert_eq!(
            refuse(serde_json::json!({"schemaVersion": 2}), None),
            "an image manifest needs a config descriptor"
        );
        assert!(matches!(
            Manifest::parse(
                serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": "sha256:12"}]})
                    .to_string()
                    .as_bytes(),
                None
            ),
            Err(Invalid::Digest(_))
        ));
        assert_eq!(
            refuse(
                serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX}),
                Some(OCI_MANIFEST)
            ),
            format!("Content-Type {OCI_MANIFEST} but mediaType {OCI_INDEX}")
        );
        assert_eq!(
            refuse(
                serde_json::json!({"schemaVersion": 2, "config": {"digest": A, "urls": ["u"]}}),
                None
            ),
            "the config descriptor cannot have urls"
        );
        assert_eq!(
            refuse(
                serde_json::json!({"schemaVersion": 2, "manifests": [{"size": 1}]}),
                None
            ),
            "a descriptor has no digest"
        );
        assert!(Manifest::parse(b"not json", None).is_err());
    }

    #[test]
    fn index_children_and_platforms() {
        let doc = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_LIST,
            "manifests": [
                {"digest": A, "platform": {"os": "linux", "architecture": "arm64"}},
                {"digest": B, "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        });
        let m = Manifest::read(doc.to_string().as_bytes(), DOCKER_LIST).expect("reads");
        assert_eq!(m.children().len(), 2);
        assert_eq!(
            m.platform("linux", "amd64")
                .map(ToString::to_string)
                .as_deref(),
            Some(B)
        );
        assert!(m.platform("windows", "amd64").is_none());
    }

    #[test]
    fn references() {
        assert_eq!(Reference::parse("v1.0"), Ok(Reference::Tag("v1.0".into())));
        assert!(matches!(Reference::parse(A), Ok(Reference::Digest(_))));
        assert!(matches!(
            Reference::parse("sha256:xyz"),
            Err(BadReference::Digest(_))
        ));
        assert_eq!(Reference::parse(".bad"), Err(BadReference::Tag));
        assert_eq!(Reference::parse(&"a".repeat(129)), Err(BadReference::Tag));
        assert!(valid_tag("v1.2_3-x") && valid_tag("_x"));
        for bad in ["-x", "", "a/b", ".x"] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }
}
