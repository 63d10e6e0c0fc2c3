//! Processes the tests start: the binary under test, a free port and a server's own word that it
//! took it (see docs/testing.md, "Ports"), a child killed with its process group when the test ends.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `token-issuer` binary. `CARGO_BIN_EXE_token-issuer` is given to the test binaries at
/// compile time only (this library is not one of them), and at run time by newer cargo; else
/// it is where cargo builds it for the integration tests, the directory above the one the test
/// binaries run from (`target/<profile>/deps/`).
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("CARGO_BIN_EXE_token-issuer") {
            return bin;
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/<test>")
            .join("token-issuer");
        assert!(bin.is_file(), "{} is not built", bin.display());
        bin.to_str().expect("a UTF-8 path").to_string()
    })
}

/// Runs `cmd`, which must succeed; its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the program is installed");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts a server with `start` on a port from [`free_port`], which is free when picked but not
/// held: a parallel test's process may bind it before this server does. `start` gives `None`
/// when its server lost the port that way ([`Proc::wait_listening`]), and it is tried again on
/// another, three times in all.
pub async fn on_free_port<T>(what: &str, mut start: impl AsyncFnMut(u16) -> Option<T>) -> T {
    for _ in 0..3 {
        if let Some(server) = start(free_port()).await {
            return server;
        }
    }
    panic!("{what} lost its port to another process three times")
}

/// A process's resident memory (`VmRSS`), in KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// A child process killed when the test ends; its output goes to a log file shown on failure.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    /// In a process group of its own, so that dropping it also ends whatever it started
    /// (scripts/dev-stack's docker-registry).
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            child,
            log,
            name: name.into(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until this process's own log holds `line`, its word that it listens. Something
    /// answering on its port is not enough: that may be another test's process that took the
    /// port first (seen once in CI: a test talking to another test's issuer). Returns false when
    /// the process exited with one of `lost` in its log, its words for "a port picked for this
    /// try is taken", so that [`on_free_port`] tries others; any other exit (a port the test
    /// chose outside the retry, a lock, a bad config), or no such line within 30 s, fails the
    /// test with the log.
    pub async fn wait_listening(&mut self, line: &str, lost: &[&str]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log_text();
            if log.contains(line) {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    lost.iter().any(|l| log.contains(l)),
                    "{} exited with {status} before it was ready:\n{log}",
                    self.name
                );
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening (no {line:?} in its log):\n{log}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until this process says `line`, failing the test if it exits first: for a port the
    /// test cannot move (written into a README block or a script's settings), so that a
    /// server answering there is known to be this one.
    pub async fn wait_said(&mut self, line: &str) {
        assert!(self.wait_listening(line, &[]).await);
    }

    /// Polls `url` until it answers `want` (the process may still be binding its port).
    pub async fn wait_http(&mut self, url: &str, want: u16) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before it was ready:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if let Ok(r) = client.get(url).send().await {
                if r.status().as_u16() == want {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready at {url}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends `signal` (`-HUP`, `-TERM`, `-KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {signal} {}", self.name);
    }

    /// Sends SIGTERM (a clean shutdown) and waits for the process to exit.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        self.signal("-TERM");
        self.wait_exit()
    }

    /// Waits for the process to exit by itself (start-up failures), returning status and log.
    pub fn wait_exit(&mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, self.log_text());
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        // Quietly: the group may have ended already.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
