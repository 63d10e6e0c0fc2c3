//! containerd's `ctr` against the built-in registry, distribution 2.8 and distribution 3.1.1,
//! with a `containerd` of the test's own (root, state and socket in the test's directory).
//! containerd asks for tokens its own way: it POSTs the OAuth2 password form first, with
//! `client_id=containerd-client`, and falls back to GET on 401. What `ctr` prints for each
//! refusal is asserted as the README records it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::targets::*;
use common::*;

/// A containerd of the test's own, killed when dropped.
struct Containerd {
    proc: Proc,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("containerd dir");
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = socket.display(),
            ),
        )
        .expect("containerd config");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config);
        let mut proc = Proc::spawn("containerd", cmd, dir.join("containerd.log"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let containerd = loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("containerd exited with {status}:\n{}", proc.log_text());
            }
            let ready = Command::new("ctr")
                .arg("--address")
                .arg(&socket)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                break Self { proc, socket };
            }
            assert!(
                Instant::now() < deadline,
                "containerd not ready:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        containerd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("ctr (scripts/test installs containerd)");
        // Never echo the --user pair.
        let shown: Vec<&str> = args
            .iter()
            .map(|a| {
                if a.contains(':') && !a.contains('/') {
                    "<user:password>"
                } else {
                    a
                }
            })
            .collect();
        eprintln!(
            "ctr {}: {}\n{}",
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {:?} failed:\n{}",
            args[..2].to_vec(),
            self.proc.log_text()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Fails; returns the last line ctr printed (its own `ctr: ...` summary).
    fn refused(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            !out.status.success(),
            "ctr {:?} should fail",
            args[..2].to_vec()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        err.lines().last().unwrap_or_default().to_string()
    }
}

const PULL: [&str; 5] = ["images", "pull", "--plain-http", "--snapshotter", "native"];
const PUSH: [&str; 3] = ["images", "push", "--plain-http"];

fn with<'a>(base: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
    [base, rest].concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn ctr_against_every_registry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let containerd = Containerd::start(&tmp.path().join("containerd"));
    let admin = format!("{}:{}", ADMIN.0, ADMIN.1);
    let reader = format!("{}:{}", READER.0, READER.1);
    let wrong = format!("{}:wrong", ADMIN.0);
    for target in every_registry(tmp.path()).await {
        let label = target.label;
        let layer = seed_image(&target, "org/app", format!("for ctr on {label}").as_bytes());
        let image = format!("{}/org/app:latest", target.host);

        // No credentials: containerd asks for an anonymous token, which is refused.
        let err = containerd.refused(&with(&PULL, &[&image]));
        assert_eq!(
            err,
            format!(
                "ctr: failed to resolve reference \"{image}\": failed to authorize: \
                 failed to fetch anonymous token: unexpected status: 401 Unauthorized"
            ),
            "{label}"
        );

        // A wrong password: POST (the OAuth2 form, containerd's own client_id), then GET.
        let err = containerd.refused(&with(&PULL, &["--user", &wrong, &image]));
        assert_eq!(
            err,
            format!(
                "ctr: failed to resolve reference \"{image}\": failed to authorize: \
                 failed to fetch oauth token: unexpected status: 401 Unauthorized"
            ),
            "{label}"
        );
        let log = target.issuer_log();
        let post = log
            .find(r#"user="admin" method="POST" client_id="containerd-client""#)
            .unwrap_or_else(|| panic!("{label}: no refused POST logged:\n{log}"));
        assert!(
            log[post..].contains(r#"user="admin" method="GET" client_id="""#),
            "{label}: no GET after the refused POST:\n{log}"
        );

        // Pull: the layer's bytes arrive unchanged.
        containerd.ok(&with(&PULL, &["--user", &admin, &image]));
        let got = containerd.ctr(&["content", "get", &format!("sha256:{layer}")]);
        assert!(
            got.status.success(),
            "{label}: layer not in the content store"
        );
        assert_eq!(sha256_hex(&got.stdout), layer, "{label}");

        // Push under another name as admin; skopeo sees the same layer there.
        let copy = format!("{}/org/ctr-copy:latest", target.host);
        containerd.ok(&["images", "tag", &image, &copy]);
        containerd.ok(&with(&PUSH, &["--user", &admin, &copy]));
        let out = skopeo(
            &target.dir,
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                &admin,
                &format!("docker://{copy}"),
            ],
        );
        assert!(out.status.success(), "{label}: pushed image not readable");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&layer),
            "{label}: pushed manifest lacks the layer"
        );

        // A pull-only user's push is refused at once, in ctr's words.
        let other = format!("{}/org/ctr-denied:latest", target.host);
        containerd.ok(&["images", "tag", &image, &other]);
        let err = containerd.refused(&with(&PUSH, &["--user", &reader, &other]));
        assert_eq!(
            err, "ctr: server message: insufficient_scope: authorization failed",
            "{label}"
        );
        containerd.ok(&["images", "rm", &image, &copy, &other]);
    }
}
