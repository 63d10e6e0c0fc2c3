//! oras-py (PyPI `oras` 0.2.43, the version scripts/test installs into a virtualenv and names
//! in `ORAS_PYTHON`) against the built-in registry, distribution 2.8 and distribution 3.1.1.
//! Its pull works. Its push cannot: after a blob HEAD it holds a pull-scoped token, and on the
//! registry's `insufficient_scope` challenge it sends that same token again instead of asking
//! the realm for `push`. That is the client's bug; the server does not work around it, and the
//! test asserts the refusal so that the README's note stays true.

use std::path::Path;
use std::process::{Command, Output};

use common::targets::*;

/// Logs in and pulls or pushes one target, printing what oras-py returned or raised.
/// oras-py retries a refused request five times with sleeps of 3, 5, 11, 29 and 83 seconds;
/// the script replaces `time.sleep` with a tally so the test sees the 131 s a user waits
/// without spending them (every request still goes over HTTP to the real servers).
const SCRIPT: &str = r#"
import sys, time, oras.client
slept = [0]
time.sleep = lambda s: slept.__setitem__(0, slept[0] + s)
host, user, password, action, target, path = sys.argv[1:7]
client = oras.client.OrasClient(hostname=host, insecure=True)
client.login(username=user, password=password, hostname=host, tls_verify=False)
try:
    if action == "pull":
        for f in client.pull(target=f"{host}/{target}", outdir=path):
            print("pulled", f)
    else:
        client.push(target=f"{host}/{target}", files=[path])
        print("pushed")
except Exception as e:
    print("error:", e)
    print("slept", slept[0])
    sys.exit(1)
"#;

/// The Python with oras-py installed, or why the test cannot run (it must under `CI`).
fn python() -> Option<String> {
    match std::env::var("ORAS_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("ORAS_PYTHON is not set: run scripts/test, which installs oras-py")
        }
        Err(_) => {
            eprintln!("oras: not run, ORAS_PYTHON is not set (scripts/test sets it)");
            None
        }
    }
}

fn oras(python: &str, dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("ORAS_PYTHON runs");
    eprintln!(
        "oras {} {}: {}\n{}{}",
        args[3],
        args[4],
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn oras_py_against_every_registry() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    for target in every_registry(tmp.path()).await {
        let label = target.label;
        let content = format!("for oras on {label}");
        let layer = seed_image(&target, "org/app", content.as_bytes());
        let (user, pw) = READER;
        let out_dir = target.dir.join("oras-out");

        // Pull as the pull-only user. oras-py treats a tar+gzip layer as a directory and
        // unpacks it: the image's one file arrives with its content.
        let out = oras(
            &python,
            &target.dir,
            &[
                &target.host,
                user,
                pw,
                "pull",
                "org/app:latest",
                &out_dir.to_string_lossy(),
            ],
        );
        assert!(out.status.success(), "{label}: oras pull failed");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains(&format!("sha256:{layer}")), "{label}: {said}");
        let got = std::fs::read_to_string(out_dir.join("hello.txt"))
            .unwrap_or_else(|e| panic!("{label}: hello.txt: {e}"));
        assert_eq!(got, content, "{label}");

        // A wrong password: oras-py's own words (its login does not check the password).
        let out = oras(
            &python,
            &target.dir,
            &[
                &target.host,
                user,
                "wrong",
                "pull",
                "org/app:latest",
                &out_dir.to_string_lossy(),
            ],
        );
        assert!(
            !out.status.success(),
            "{label}: pulled with a wrong password"
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("error: Cannot respond to request for authentication.")
                && said.contains("slept 131"),
            "{label}: {said}"
        );

        // Push as admin, who may push: refused, because oras-py re-sends its pull token.
        let file = target.dir.join("artifact.txt");
        std::fs::write(&file, "artifact").expect("artifact");
        let (user, pw) = ADMIN;
        let out = oras(
            &python,
            &target.dir,
            &[
                &target.host,
                user,
                pw,
                "push",
                "org/artifact:v1",
                &file.to_string_lossy(),
            ],
        );
        assert!(
            !out.status.success(),
            "{label}: oras-py's push now works: update the README"
        );
        let said = String::from_utf8_lossy(&out.stdout);
        // distribution says "authentication required", the built-in registry "insufficient
        // scope"; both answer 401 UNAUTHORIZED with an insufficient_scope challenge.
        assert!(
            said.contains("error: Issue retrieving session url")
                && said.contains("'code': 'UNAUTHORIZED'"),
            "{label}: {said}"
        );
    }
}
