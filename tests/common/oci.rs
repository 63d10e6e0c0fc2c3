//! OCI content: digests, a one-layer manifest and image layout, and skopeo pushing and pulling it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use super::sha256_hex;

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// An OCI image manifest naming one config and one layer.
pub fn image_manifest(
    config: &str,
    config_len: usize,
    layer: &str,
    layer_len: usize,
) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_len}]
    })
}

/// A one-layer OCI image layout at `dir` tagged `tag`; returns the layer's digest hex.
/// The layer is gzipped so that skopeo pushes it unchanged (it would compress a plain tar).
pub fn oci_layout(dir: &Path, tag: &str, file_content: &[u8]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dir");
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).expect("blob");
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(file_content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "hello.txt", file_content)
        .expect("tar");
    let tar_bytes = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).expect("gzip");
    let layer = gz.finish().expect("gzip");
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar_bytes))]}
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}]
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
    layer_digest.trim_start_matches("sha256:").to_string()
}

/// Runs skopeo with an empty auth file, no TLS and no signature policy (loopback only).
pub fn skopeo(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .env("REGISTRY_AUTH_FILE", dir.join("skopeo-auth.json"))
        .output()
        .expect("skopeo is installed (scripts/test installs it)");
    eprintln!(
        "skopeo {}: {}\n{}",
        args.iter()
            .filter(|a| !a.contains(':') || a.starts_with("docker://") || a.starts_with("oci:"))
            .cloned()
            .collect::<Vec<_>>()
            .join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn push(dir: &Path, layout: &Path, dest: &str, creds: &str) -> Output {
    skopeo(
        dir,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            &format!("oci:{}:latest", layout.display()),
            dest,
        ],
    )
}

pub fn pull(dir: &Path, src: &str, layout: &Path, creds: &str) -> Output {
    skopeo(
        dir,
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            creds,
            src,
            &format!("oci:{}:latest", layout.display()),
        ],
    )
}
