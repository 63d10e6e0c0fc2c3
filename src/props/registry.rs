//! The built-in registry's input: digests, references, byte ranges, manifests.

use proptest::prelude::*;

use super::{linear, text};
use crate::registry::handlers::blobs::parse_range;
use crate::registry::handlers::uploads::parse_content_range;
use crate::registry::manifest::{Manifest, Reference};
use crate::registry::storage::Digest;

proptest! {
    #[test]
    fn prop_digests_and_references_never_panic(s in text(200)) {
        let _ = Digest::parse(&s);
        let _ = Reference::parse(&s);
    }

    #[test]
    fn prop_digest_renders_what_it_parsed(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let d = Digest::of(&bytes);
        let again = Digest::parse(&d.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.to_string(), d.to_string());
    }

    #[test]
    fn prop_tags_round_trip(tag in "[A-Za-z0-9_][A-Za-z0-9._-]{0,127}") {
        match Reference::parse(&tag) {
            Ok(Reference::Tag(t)) => prop_assert_eq!(t, tag),
            other => prop_assert!(false, "{tag}: {other:?}"),
        }
    }

    #[test]
    fn prop_ranges_never_panic_and_stay_within_the_blob(
        header in text(60),
        size in 0u64..1_000_000,
        a in 0u64..2_000_000,
        b in 0u64..2_000_000,
    ) {
        let _ = parse_content_range(&header);
        for h in [header.clone(), format!("bytes={a}-{b}"), format!("bytes=-{a}"), format!("bytes={a}-")] {
            if let Some((start, end)) = parse_range(&h, size) {
                prop_assert!(start <= end && end < size, "{h} in {size}: {start}-{end}");
            }
        }
        if let Some((start, end)) = parse_content_range(&format!("{a}-{b}")) {
            prop_assert_eq!(start, a);
            prop_assert!(end == Some(b) && a <= b);
        }
    }

    #[test]
    fn prop_manifests_never_panic(body in text(400), json in any::<bool>()) {
        let ct = json.then_some("application/vnd.oci.image.manifest.v1+json");
        let _ = Manifest::parse(body.as_bytes(), ct);
    }
}

/// The reference is the machine's `sha256sum`.
#[test]
fn digests_agree_with_sha256sum() {
    use std::io::Write;
    for n in [0usize, 1, 63, 64, 65, 4096, 100_000] {
        let bytes: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sha256sum");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&bytes)
            .expect("write");
        let out = child.wait_with_output().expect("sha256sum");
        let hex = String::from_utf8_lossy(&out.stdout);
        let hex = hex.split_whitespace().next().expect("a digest");
        assert_eq!(Digest::of(&bytes).hex(), hex, "{n} bytes");
    }
}

#[test]
fn references_and_manifests_are_linear() {
    linear("a", |s| {
        let _ = Reference::parse(s);
    });
    linear("{\"a\":[1,", |s| {
        let _ = Manifest::parse(s.as_bytes(), None);
    });
}
