//! A real PostgreSQL server for the store's tests: initdb into a temporary directory and
//! `postgres` on a loopback port chosen at run time, as the `postgres` user when the tests run
//! as root (PostgreSQL refuses to run as root; CI runs as root). Stopped and started again by
//! the tests to play a database outage.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{on_free_port, Proc};

pub const PASSWORD: &str = "pg-secret-pw";

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    dir: PathBuf,
    /// (uid, gid) to run as, when running as root.
    user: Option<(u32, u32)>,
    proc: Option<Proc>,
    starts: u32,
}

/// The directory of initdb/postgres: `PG_BIN`, else Debian's /usr/lib/postgresql/N/bin.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/test installs Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").is_file())
        .collect();
    found.sort();
    found.pop().expect("a /usr/lib/postgresql/N/bin/postgres")
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id");
    assert!(
        out.status.success(),
        "no postgres user to run PostgreSQL as"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a numeric id")
}

impl Postgres {
    /// A fresh cluster under `dir` (which must be reachable by the postgres user), started.
    pub async fn start(dir: &Path) -> Self {
        let euid = Command::new("id").arg("-u").output().expect("id -u");
        let root = String::from_utf8_lossy(&euid.stdout).trim() == "0";
        let user = root.then(|| (id_of("-u"), id_of("-g")));
        let dir = dir.join("pg");
        std::fs::create_dir_all(&dir).expect("pg dir");
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).expect("pwfile");
        if let Some((uid, gid)) = user {
            // The postgres user must traverse the test's temporary directories.
            let mut p = dir.clone();
            while let Some(parent) = p.parent() {
                if parent == Path::new("/") || parent == std::env::temp_dir() {
                    break;
                }
                let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755));
                p = parent.to_path_buf();
            }
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown pg dir");
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown pwfile");
        }
        let mut pg = Self {
            port: 0,
            bin: bin_dir(),
            data: dir.join("data"),
            dir,
            user,
            proc: None,
            starts: 0,
        };
        let out = pg
            .command("initdb")
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
            .arg("--pwfile")
            .arg(&pwfile)
            .arg("-D")
            .arg(&pg.data)
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        on_free_port("postgres", async |port| {
            pg.port = port;
            pg.listen().await.then_some(())
        })
        .await;
        pg
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(&self.dir);
        cmd
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// Starts the server again on the same port and waits until it accepts connections.
    pub async fn resume(&mut self) {
        assert!(
            self.listen().await,
            "postgres lost its port {} to another process",
            self.port
        );
    }

    /// False when another process took the port first ([`Proc::wait_listening`]).
    async fn listen(&mut self) -> bool {
        self.starts += 1;
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            // The lines waited for below in English, whatever the machine's locale.
            .args(["-c", "lc_messages=C"]);
        let mut proc = Proc::spawn(
            "postgres",
            cmd,
            self.dir
                .join(format!("postgres-{}-{}.log", self.port, self.starts)),
        );
        let listening = format!(
            "listening on IPv4 address \"127.0.0.1\", port {}\n",
            self.port
        );
        let lost = "could not bind IPv4 address \"127.0.0.1\": Address already in use";
        if !proc.wait_listening(&listening, &[lost]).await {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .output()
                .expect("pg_isready");
            if ready.status.success() {
                self.proc = Some(proc);
                return true;
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("postgres exited ({status}):\n{}", proc.log_text());
            }
            assert!(Instant::now() < deadline, "postgres not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (fast shutdown: clients are disconnected) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = Command::new("kill")
                .args(["-INT", &p.child.id().to_string()])
                .status();
            let _ = p.child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
