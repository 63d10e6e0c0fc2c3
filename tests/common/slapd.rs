//! A real OpenLDAP server (Debian's slapd) for the directory tests: a slapd.conf and an LDIF
//! written into the test's directory, loaded with slapadd, served on a loopback port chosen at
//! run time (plain ldap://, or ldaps:// with a test CA made by openssl). Stopped and started
//! again by the tests to play an outage. Its log (`-d 256`: one line per operation) shows
//! which binds were made.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{on_free_port, run, Proc};

pub const BASE: &str = "dc=example,dc=test";
pub const SERVICE_DN: &str = "cn=token-issuer,ou=services,dc=example,dc=test";
pub const SERVICE_PASSWORD: &str = "svc-secret-pw";

/// One person: uid, password, the `ou` under people it sits in, and its groups (groupOfNames
/// under ou=groups, and the same in the entry's `memberOf`, as the memberof overlay keeps it).
pub struct Person<'a> {
    pub uid: &'a str,
    pub password: &'a str,
    pub ou: Option<&'a str>,
    pub groups: &'a [&'a str],
    /// More group DNs in `memberOf` only (groups elsewhere in the tree).
    pub member_of: &'a [&'a str],
}

pub fn person<'a>(uid: &'a str, password: &'a str, groups: &'a [&'a str]) -> Person<'a> {
    Person {
        uid,
        password,
        ou: None,
        groups,
        member_of: &[],
    }
}

/// How the server is reached.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    /// `ldaps://`, with a test CA.
    Ldaps,
    /// `ldap://` upgraded with StartTLS, with a test CA.
    StartTls,
}

pub struct Slapd {
    pub port: u16,
    /// `ldap://127.0.0.1:PORT` or `ldaps://127.0.0.1:PORT`.
    pub url: String,
    /// The test CA's certificate (ldaps only).
    pub ca: Option<PathBuf>,
    dir: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

impl Slapd {
    /// A directory under `dir` holding `people` (and their groups), started. Only the service
    /// account may read entries: a search made while still bound as a user finds nothing.
    pub async fn start(dir: &Path, people: &[Person<'_>], tls: Transport) -> Self {
        let dir = dir.join("slapd");
        std::fs::create_dir_all(dir.join("db")).expect("slapd dir");
        let mut conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             moduleload memberof\n\
             pidfile {d}/slapd.pid\n\
             argsfile {d}/slapd.args\n\
             # a DN with an empty password is an anonymous bind that succeeds, as on some\n\
             # Active Directory set-ups: what the issuer must never take for a login\n\
             allow bind_anon_cred\n",
            d = dir.display()
        );
        let ca = (tls != Transport::Plain).then(|| {
            let (ca, cert, key) = certificates(&dir);
            conf.push_str(&format!(
                "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                cert.display(),
                key.display()
            ));
            ca
        });
        conf.push_str(&format!(
            "database mdb\nmaxsize 67108864\nsuffix \"{BASE}\"\nrootdn \"cn=admin,{BASE}\"\n\
             rootpw admin-pw\ndirectory {}/db\noverlay memberof\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by dn.exact=\"{SERVICE_DN}\" read by anonymous auth by * none\n",
            dir.display()
        ));
        std::fs::write(dir.join("slapd.conf"), conf).expect("slapd.conf");
        std::fs::write(dir.join("data.ldif"), ldif(people)).expect("data.ldif");
        run(Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-l")
            .arg(dir.join("data.ldif")));
        let scheme = if tls == Transport::Ldaps {
            "ldaps"
        } else {
            "ldap"
        };
        on_free_port("slapd", async |port| {
            let mut slapd = Self {
                port,
                url: format!("{scheme}://127.0.0.1:{port}"),
                ca: ca.clone(),
                dir: dir.clone(),
                proc: None,
                starts: 0,
            };
            slapd.listen().await.then_some(slapd)
        })
        .await
    }

    /// Starts the server again on the same port and data; returns once it accepts
    /// connections.
    pub async fn start_again(&mut self) {
        assert!(
            self.listen().await,
            "slapd lost its port {} to another process",
            self.port
        );
    }

    /// False when another process took the port first ([`Proc::wait_listening`]).
    async fn listen(&mut self) -> bool {
        assert!(self.proc.is_none(), "slapd is running");
        self.starts += 1;
        let mut cmd = Command::new("/usr/sbin/slapd");
        cmd.args(["-d", "256", "-f"])
            .arg(self.dir.join("slapd.conf"))
            .arg("-h")
            .arg(format!("{}/", self.url));
        let mut proc = Proc::spawn(
            "slapd",
            cmd,
            self.dir
                .join(format!("slapd-{}-{}.log", self.port, self.starts)),
        );
        // slapd has bound its port when it says this; it accepts connections soon after.
        // Its one listener: "daemon: bind(N) failed errno=98 (Address already in use)".
        if !proc
            .wait_listening("slapd starting", &["(Address already in use)"])
            .await
        {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "slapd not accepting connections:\n{}",
                proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.proc = Some(proc);
        true
    }

    /// Kills the server; its port refuses connections until [`Self::start_again`].
    pub fn stop(&mut self) {
        let proc = self.proc.take().expect("slapd is running");
        drop(proc);
        let _ = std::fs::remove_file(self.dir.join("slapd.pid"));
    }

    /// An issuer's `[ldap]` section for this directory (users under ou=people, groupOfNames
    /// under ou=groups), its password file written into `dir` and named by its absolute path.
    /// More of its keys (`ca_file`, `timeout_seconds`) may follow it.
    pub fn section(&self, dir: &Path) -> String {
        let password = dir.join("ldap-bind-password");
        std::fs::write(&password, format!("{SERVICE_PASSWORD}\n")).expect("password file");
        format!(
            "[ldap]\nurl = \"{}\"\nbind_dn = \"{SERVICE_DN}\"\nbind_password_file = {:?}\n\
             user_base = \"ou=people,{BASE}\"\n\
             user_filter = \"(&(objectClass=inetOrgPerson)(uid={{username}}))\"\n\
             group_base = \"ou=groups,{BASE}\"\n\
             group_filter = \"(&(objectClass=groupOfNames)(member={{dn}}))\"\n",
            self.url,
            password.display().to_string()
        )
    }

    /// What the running server has logged.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log_text).unwrap_or_default()
    }

    /// How many binds as `dn` the running server has seen (with any password): slapd logs one
    /// `BIND dn="..." method=128` line per simple bind, and a second line when it succeeds.
    pub fn binds_as(&self, dn: &str) -> usize {
        self.log()
            .matches(&format!("BIND dn=\"{dn}\" method="))
            .count()
    }
}

pub fn user_dn(uid: &str, ou: Option<&str>) -> String {
    match ou {
        Some(ou) => format!("uid={uid},ou={ou},ou=people,{BASE}"),
        None => format!("uid={uid},ou=people,{BASE}"),
    }
}

fn ldif(people: &[Person<'_>]) -> String {
    let mut out = format!(
        "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services\n\n\
         dn: {SERVICE_DN}\nobjectClass: person\nobjectClass: simpleSecurityObject\n\
         cn: token-issuer\nsn: service\nuserPassword: {SERVICE_PASSWORD}\n\n"
    );
    let mut ous: Vec<&str> = people.iter().filter_map(|p| p.ou).collect();
    ous.sort();
    ous.dedup();
    for ou in ous {
        out.push_str(&format!(
            "dn: ou={ou},ou=people,{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
        ));
    }
    let mut groups: Vec<&str> = people
        .iter()
        .flat_map(|p| p.groups.iter().copied())
        .collect();
    groups.sort();
    groups.dedup();
    for p in people {
        out.push_str(&format!(
            "dn: {}\nobjectClass: inetOrgPerson\nuid: {}\ncn: {}\nsn: {}\nuserPassword: {}\n",
            user_dn(p.uid, p.ou),
            p.uid,
            p.uid,
            p.uid,
            p.password
        ));
        for g in p.groups {
            out.push_str(&format!("memberOf: cn={g},ou=groups,{BASE}\n"));
        }
        for dn in p.member_of {
            out.push_str(&format!("memberOf: {dn}\n"));
        }
        out.push('\n');
    }
    for g in groups {
        out.push_str(&format!(
            "dn: cn={g},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {g}\n"
        ));
        for p in people.iter().filter(|p| p.groups.contains(&g)) {
            out.push_str(&format!("member: {}\n", user_dn(p.uid, p.ou)));
        }
        out.push('\n');
    }
    out
}

/// A test CA and a server certificate for 127.0.0.1 it signed: (ca.crt, server.crt, server.key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(f);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=token-issuer test LDAP CA",
        ])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(
        p("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(p("server.ext"))
        .arg("-out")
        .arg(p("server.crt")));
    (p("ca.crt"), p("server.crt"), p("server.key"))
}
