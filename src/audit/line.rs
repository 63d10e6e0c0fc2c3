//! One audit line: a [`Record`] written as a JSON object into a byte buffer.
//!
//! Written field by field rather than through serde's derive: most fields are known-safe
//! (constants, digits, an IP address, hex ids) and go in with one copy, and a string that needs
//! no escaping (nearly every user and scope) is copied whole after one scan. Through the derive,
//! each scope and the time went through `collect_str`, which escapes fragment by fragment; that
//! was most of the audit's cost per token. Text that does need escaping goes through serde_json.
//! Numbers go in through `itoa`, not `core::fmt`: under callgrind, the formatting machinery
//! (`fmt::write`, `pad_integral`, the `io::Write` adapter) was a quarter of the audit's
//! instructions per token.

use std::io::Write;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::scope::Scope;

/// One decision. Borrowed from the request: built only when the audit log is on.
pub struct Record<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub method: &'a str,
    pub client_id: &'a str,
    /// `""` for the anonymous caller or when the caller was not identified.
    pub user: &'a str,
    /// `htpasswd`, `store`, `upstream`, `oidc`, `anonymous`, or `""` when not identified.
    pub source: &'a str,
    /// `password`, `refresh_token` or `anonymous`.
    pub grant: &'a str,
    /// The service: the token's `aud` when one was signed, else the one asked for (`""`: none).
    pub service: &'a str,
    pub requested: &'a [Scope],
    pub granted: &'a [Scope],
    /// For each requested scope, in order: `acl[N]`, `acl[N]+upstream:allowed|refused`,
    /// `store:admin`, `store:grants` or `no-rule`.
    pub decided_by: &'a [crate::policy::DecidedBy],
    /// The metrics outcome: `issued`, `unauthorized`, `bad_request`, ...
    pub outcome: &'a str,
    /// Why it was refused (the message the client was given); `""` when issued.
    pub reason: &'a str,
    pub jti: &'a str,
    pub exp: Option<u64>,
    /// Whether a refresh token was handed out with this access token.
    pub refresh_token_issued: bool,
}

impl Record<'_> {
    /// Appends the line (without its newline) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"time":""#);
        rfc3339_millis(self.time, out);
        out.extend_from_slice(br#"","request_id":"#);
        ours(out, self.request_id);
        out.extend_from_slice(br#","client_ip":""#);
        ip(out, self.client_ip);
        out.extend_from_slice(br#"","method":"#);
        ours(out, self.method);
        out.extend_from_slice(br#","client_id":"#);
        string(out, self.client_id);
        out.extend_from_slice(br#","user":"#);
        string(out, self.user);
        out.extend_from_slice(br#","source":"#);
        ours(out, self.source);
        out.extend_from_slice(br#","grant":"#);
        ours(out, self.grant);
        out.extend_from_slice(br#","service":"#);
        string(out, self.service);
        out.extend_from_slice(br#","requested":"#);
        scopes(out, self.requested);
        out.extend_from_slice(br#","granted":"#);
        scopes(out, self.granted);
        out.extend_from_slice(br#","decided_by":"#);
        decided(out, self.decided_by);
        out.extend_from_slice(br#","outcome":"#);
        ours(out, self.outcome);
        out.extend_from_slice(br#","reason":"#);
        string(out, self.reason);
        out.extend_from_slice(br#","jti":"#);
        ours(out, self.jti);
        match self.exp {
            Some(exp) => {
                out.extend_from_slice(br#","exp":"#);
                out.extend_from_slice(itoa::Buffer::new().format(exp).as_bytes());
            }
            None => out.extend_from_slice(br#","exp":null"#),
        }
        out.extend_from_slice(if self.refresh_token_issued {
            br#","refresh_token_issued":true}"#
        } else {
            br#","refresh_token_issued":false}"#
        });
    }
}

/// One administrative change, or a refused administrative request: the admin API's and the
/// CLI's, in the same file as token decisions, told apart by `"kind":"admin"`.
pub struct AdminRecord<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    /// Who: the admin's name as given (Basic user), or `cli:<OS user>`.
    pub by: &'a str,
    /// `POST /admin/v1/users`, or the CLI's command (`users add`).
    pub action: &'a str,
    /// What it was done to (`users/ci-bot`).
    pub target: &'a str,
    /// The fields given, secrets removed (a JSON object).
    pub fields: &'a serde_json::Value,
    /// `ok`, `refused` (401/403), or `failed`.
    pub outcome: &'a str,
    /// The HTTP status (0 for the CLI).
    pub status: u16,
}

impl AdminRecord<'_> {
    /// Appends the line (without its newline) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"time":""#);
        rfc3339_millis(self.time, out);
        out.extend_from_slice(br#"","kind":"admin","request_id":"#);
        ours(out, self.request_id);
        out.extend_from_slice(br#","client_ip":"#);
        match self.client_ip {
            Some(a) => {
                out.push(b'"');
                ip(out, a);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","by":"#);
        string(out, self.by);
        out.extend_from_slice(br#","action":"#);
        string(out, self.action);
        out.extend_from_slice(br#","target":"#);
        string(out, self.target);
        out.extend_from_slice(br#","fields":"#);
        // serde_json escapes as `string` does for what needs it.
        let _ = serde_json::to_writer(&mut *out, self.fields);
        out.extend_from_slice(br#","outcome":"#);
        ours(out, self.outcome);
        out.extend_from_slice(br#","status":"#);
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.push(b'}');
    }
}

/// Bytes that may stand in a JSON string as they are. Bytes of multi-byte UTF-8 characters are
/// all ≥ 0x80, so a `str` is copied whole when it has no quote, backslash or control character.
fn plain(b: u8) -> bool {
    b >= 0x20 && b != b'"' && b != b'\\'
}

/// Whether `bytes` can stand in a JSON string as they are. Not short-circuiting, so the
/// compiler checks many bytes at a time: nearly every string passes.
fn all_plain(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & plain(b))
}

/// `s` as a JSON string.
fn string(out: &mut Vec<u8>, s: &str) {
    if all_plain(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail, and a `str` always serializes.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Text this process made (a request id, a jti, a constant): ASCII letters, digits, `-` and
/// `_`, copied without a scan (the line's tests check each field).
fn ours(out: &mut Vec<u8>, s: &str) {
    debug_assert!(all_plain(s.as_bytes()), "{s:?} needs escaping");
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// An address's text is digits, hex, dots and colons: nothing to escape. IPv4, the usual
/// case, is written octet by octet.
fn ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// `decided_by` as a JSON array: `acl[N]` and fixed suffixes, nothing to escape.
fn decided(out: &mut Vec<u8>, items: &[crate::policy::DecidedBy]) {
    let mut digits = itoa::Buffer::new();
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        let (rule, rest) = item.parts();
        if let Some(n) = rule {
            out.extend_from_slice(b"acl[");
            out.extend_from_slice(digits.format(n).as_bytes());
            out.push(b']');
        }
        out.extend_from_slice(rest.as_bytes());
        out.push(b'"');
    }
    out.push(b']');
}

/// Scopes as a JSON array of their `type:name:actions` text, `Scope::for_each_piece` copied straight in
/// (no formatting machinery: two lists per line); escaped only when a name needs it.
fn scopes(out: &mut Vec<u8>, items: &[Scope]) {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let start = out.len();
        out.push(b'"');
        s.for_each_piece(|piece| out.extend_from_slice(piece.as_bytes()));
        close_or_escape(out, start);
    }
    out.push(b']');
}

/// Ends the string opened at `start` (its quote) if its text needs no escaping; else writes
/// it again, escaped.
fn close_or_escape(out: &mut Vec<u8>, start: usize) {
    if all_plain(&out[start + 1..]) {
        out.push(b'"');
    } else {
        let text = String::from_utf8_lossy(&out[start + 1..]).into_owned();
        out.truncate(start);
        string(out, &text);
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`. The part to the second is formatted once per second per
/// thread; every line within that second copies it and adds the milliseconds.
fn rfc3339_millis(t: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let full =
            humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .to_string();
        // "YYYY-MM-DDTHH:MM:SSZ": the 19 bytes before the Z.
        text.copy_from_slice(&full.as_bytes()[..19]);
        SECOND.set((secs, text));
    }
    out.extend_from_slice(&text);
    let ms = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DecidedBy;

    fn parsed(r: &Record) -> serde_json::Value {
        let mut out = Vec::new();
        r.write_to(&mut out);
        serde_json::from_slice(&out).expect("the line is JSON")
    }

    #[test]
    fn every_field_with_hostile_text_escaped() {
        // A name outside the repository grammar may hold quotes and backslashes; a reason
        // echoes client text; a client id may hold a newline.
        let odd = Scope::new("registry", "cat\"a\\log\u{1}é", &["*"]);
        let requested = [Scope::new("repository", "org/app", &["pull", "push"]), odd];
        let granted = [Scope::new("repository", "org/app", &["pull"])];
        let r = Record {
            time: UNIX_EPOCH + std::time::Duration::from_millis(1_764_615_737_042),
            request_id: "abc-1f",
            client_ip: "::1".parse().expect("ip"),
            method: "POST",
            client_id: "doc\nker",
            user: "al\"ice",
            source: "htpasswd",
            grant: "password",
            service: "registry.test",
            requested: &requested,
            granted: &granted,
            decided_by: &[DecidedBy::Rule(2), DecidedBy::NoRule],
            outcome: "issued",
            reason: "tab\there \u{7f} ünï",
            jti: "j",
            exp: Some(1_764_616_037),
            refresh_token_issued: true,
        };
        let v = parsed(&r);
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2025-12-01T19:02:17.042Z",
                "request_id": "abc-1f",
                "client_ip": "::1",
                "method": "POST",
                "client_id": "doc\nker",
                "user": "al\"ice",
                "source": "htpasswd",
                "grant": "password",
                "service": "registry.test",
                "requested": ["repository:org/app:pull,push", "registry:cat\"a\\log\u{1}é:*"],
                "granted": ["repository:org/app:pull"],
                "decided_by": ["acl[2]", "no-rule"],
                "outcome": "issued",
                "reason": "tab\there \u{7f} ünï",
                "jti": "j",
                "exp": 1_764_616_037u64,
                "refresh_token_issued": true,
            })
        );
    }

    #[test]
    fn empty_lists_no_exp_and_the_cached_second() {
        let at = |ms: u64| UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let mut r = Record {
            time: at(1_000_000_999),
            request_id: "",
            client_ip: IpAddr::from([10, 0, 0, 1]),
            method: "GET",
            client_id: "",
            user: "",
            source: "",
            grant: "",
            service: "",
            requested: &[],
            granted: &[],
            decided_by: &[],
            outcome: "bad_request",
            reason: "",
            jti: "",
            exp: None,
            refresh_token_issued: false,
        };
        let v = parsed(&r);
        assert_eq!(v["time"], "1970-01-12T13:46:40.999Z");
        assert_eq!(v["client_ip"], "10.0.0.1");
        assert_eq!(v["requested"], serde_json::json!([]));
        assert_eq!(v["exp"], serde_json::Value::Null);
        assert_eq!(v["refresh_token_issued"], false);
        // The next second, then back to the first: the cached text follows the time.
        r.time = at(1_000_001_000);
        assert_eq!(parsed(&r)["time"], "1970-01-12T13:46:41.000Z");
        r.time = at(1_000_000_001);
        assert_eq!(parsed(&r)["time"], "1970-01-12T13:46:40.001Z");
        r.time = at(1_000_000_090);
        assert_eq!(parsed(&r)["time"], "1970-01-12T13:46:40.090Z");
    }

    #[test]
    fn every_decision_and_address_as_display_renders_it() {
        use crate::policy::DecidedBy::*;
        let all = [
            Rule(0),
            Rule(1234),
            Upstream {
                rule: 7,
                allowed: true,
            },
            Upstream {
                rule: 10,
                allowed: false,
            },
            StoreAdmin,
            StoreGrants,
            NoRule,
        ];
        let mut out = Vec::new();
        decided(&mut out, &all);
        let texts: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(
            serde_json::from_slice::<Vec<String>>(&out).ok(),
            Some(texts)
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"["acl[0]","acl[1234]","acl[7]+upstream:allowed","acl[10]+upstream:refused","store:admin","store:grants","no-rule"]"#
        );
        for addr in [
            "0.0.0.0",
            "255.255.255.255",
            "192.168.10.9",
            "::1",
            "2001:db8::ff00:42:8329",
        ] {
            let ip: IpAddr = addr.parse().expect("address");
            let mut out = Vec::new();
            super::ip(&mut out, ip);
            assert_eq!(String::from_utf8_lossy(&out), addr);
        }
    }
}
