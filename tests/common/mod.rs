//! What the integration tests share, a library of its own so that it is compiled once: real
//! processes on loopback ports chosen at run time (`process`: the binary under test and the
//! port race; `issuer`, `distribution`, `slapd`, `postgres`), real clients (skopeo in `oci`),
//! stand-ins for the system's boundaries (`fake_api`, `fake_balena`, `idp`) and fixtures.

use std::path::Path;

use aws_lc_rs::digest;

pub mod config;
pub use config::ConfigBuilder;
mod distribution;
pub use distribution::*;
mod issuer;
pub use issuer::*;
mod oci;
pub use oci::*;
mod process;
pub use process::*;
pub mod fake_api;
pub mod fake_balena;
pub mod hygiene;
pub mod idp;
pub mod load;
pub mod postgres;
pub mod slapd;
pub mod store_api;
pub mod targets;

/// Serves `app` on 127.0.0.1:`port` (0: any free port); returns the port and the server task
/// (abort it to stop serving).
pub async fn serve_loopback(
    port: u16,
    app: impl poem::Endpoint + 'static,
) -> (u16, tokio::task::JoinHandle<()>) {
    serve_on(
        poem::listener::TcpListener::bind(format!("127.0.0.1:{port}")),
        app,
    )
    .await
}

/// Serves `app` on `listener` (plain TCP, or wrapped in TLS); returns the port it got and the
/// server task.
pub async fn serve_on(
    listener: impl poem::listener::Listener + 'static,
    app: impl poem::Endpoint + 'static,
) -> (u16, tokio::task::JoinHandle<()>) {
    use poem::listener::Acceptor;
    let acceptor = listener
        .into_acceptor()
        .await
        .expect("bind a loopback port");
    let port = acceptor.local_addr()[0]
        .as_socket_addr()
        .expect("tcp")
        .port();
    let task = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });
    (port, task)
}

/// A token from the realm at `url` (query included) for `user`:`password`; it must be issued.
pub async fn token_at(url: &str, user: &str, password: &str) -> String {
    let body: serde_json::Value = reqwest::Client::new()
        .get(url)
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("realm")
        .json()
        .await
        .expect("json");
    body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_string()
}

/// A JWT's header, decoded.
pub fn jwt_header(token: &str) -> serde_json::Value {
    jwt_part(token, 0)
}

/// A JWT's claims, decoded (not verified).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    jwt_part(token, 1)
}

fn jwt_part(token: &str, i: usize) -> serde_json::Value {
    let part = token.split('.').nth(i).expect("a JWT part");
    serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(part.as_bytes())
            .expect("b64"),
    )
    .expect("json")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// A SQLite store's bytes as they stand on disk: the file and its write-ahead log, where writes
/// stay until a checkpoint copies them into the file (the issuer keeps the store in WAL mode).
pub fn sqlite_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).expect("the store's file");
    if let Ok(log) = std::fs::read(format!("{}-wal", db.display())) {
        bytes.extend(log);
    }
    bytes
}

pub fn htpasswd_line(user: &str, password: &str) -> String {
    format!("{user}:{}\n", bcrypt::hash(password, 4).expect("bcrypt"))
}

/// DIR/users.htpasswd with these (user, password) pairs.
pub fn write_users(dir: &Path, users: &[(&str, &str)]) {
    let lines: String = users.iter().map(|(u, p)| htpasswd_line(u, p)).collect();
    std::fs::write(dir.join("users.htpasswd"), lines).expect("users.htpasswd");
}
