//! `sample-image DIR`: a small, valid OCI image layout to push on a machine without a Docker
//! engine (skopeo `oci:DIR:latest`). One layer holding `hello.txt`, a config naming its
//! diff_id, and `index.json` tagging the manifest `latest`. Deterministic: the same text gives
//! the same digests.

use std::path::Path;

use anyhow::Context;
use aws_lc_rs::digest;
use serde_json::json;

fn sha256(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Writes the layout; returns the manifest's digest (`sha256:...`).
pub fn write_oci_layout(dir: &Path, text: &str) -> anyhow::Result<String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let put = |bytes: &[u8]| -> anyhow::Result<String> {
        let hex = sha256(bytes);
        std::fs::write(blobs.join(&hex), bytes)
            .with_context(|| format!("writing into {}", blobs.display()))?;
        Ok(hex)
    };

    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "hello.txt", text.as_bytes())?;
    let layer_tar = tar.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &layer_tar)?;
    let layer = gz.finish()?;
    let layer_hex = put(&layer)?;

    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&layer_tar))]},
    })
    .to_string();
    let config_hex = put(config.as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_hex}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{layer_hex}"),
            "size": layer.len(),
        }],
    })
    .to_string();
    let manifest_hex = put(manifest.as_bytes())?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string())?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(format!("sha256:{manifest_hex}"))
}
