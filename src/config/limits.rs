//! `[http]` and `[damping]`: what one client may cost the service. Every limit has a default
//! that a registry's real clients never reach (docker asks for one or two scopes a token, keeps
//! a connection idle for seconds, sends a layer without pausing for a minute).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::setting;

/// Both listeners (the issuer's and the built-in registry's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// A request's head (request line and headers) must arrive within this many seconds of
    /// its first byte.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_seconds: u64,
    /// A kept-alive connection with no request in progress is closed after this long.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    /// A request in progress (its body arriving, or its response leaving) that moves no byte
    /// for this long is aborted and the connection closed; an upload keeps what arrived before.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_seconds: u64,
    /// Open connections per listener; past it, new connections wait in the kernel's queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Scopes one token request may name (docker asks for one or two; more is a 400 before
    /// any authentication work).
    #[serde(default = "default_max_scopes")]
    pub max_scopes: usize,
    /// Peers (CIDRs or addresses) whose `X-Forwarded-For` / `Forwarded` headers are believed
    /// about the client's address. Empty: the socket's peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout_seconds: default_header_timeout(),
            idle_timeout_seconds: default_idle_timeout(),
            body_timeout_seconds: default_body_timeout(),
            max_connections: default_max_connections(),
            max_scopes: default_max_scopes(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The parsed form of `[http]`, what the server and the realm use.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl HttpConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        for (key, value, max) in [
            (
                "http.header_timeout_seconds",
                self.header_timeout_seconds,
                600,
            ),
            ("http.idle_timeout_seconds", self.idle_timeout_seconds, 3600),
            ("http.body_timeout_seconds", self.body_timeout_seconds, 3600),
        ] {
            if !(1..=max).contains(&value) {
                bail!("{}: between 1 and {max} seconds", setting(key));
            }
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            bail!("{}: between 1 and 1000000", setting("http.max_connections"));
        }
        if !(1..=10_000).contains(&self.max_scopes) {
            bail!("{}: between 1 and 10000", setting("http.max_scopes"));
        }
        self.proxies().map(|_| ())
    }

    fn proxies(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        networks(&self.trusted_proxies, "http.trusted_proxies")
    }

    pub fn limits(&self) -> anyhow::Result<HttpLimits> {
        Ok(HttpLimits {
            header_timeout: Duration::from_secs(self.header_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            body_timeout: Duration::from_secs(self.body_timeout_seconds),
            max_connections: self.max_connections,
            trusted_proxies: self.proxies()?,
        })
    }
}

/// Brute-force damping of the realm's logins. A failure is a credential the password check or
/// the identity API refused; the same wrong credential again within seconds (containerd's GET
/// after its POST, a client's retry) is answered from memory and not counted again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DampingConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Failures of one account from one client address within a minute before that pair's
    /// attempts are slowed.
    #[serde(default = "default_pair_failures")]
    pub failures_per_minute: u32,
    /// Failures from one client address, over all accounts, within a minute before every
    /// attempt from it is slowed.
    #[serde(default = "default_ip_failures")]
    pub ip_failures_per_minute: u32,
    /// The delay doubles with each failure past the threshold, up to this.
    #[serde(default = "default_max_delay")]
    pub max_delay_seconds: u64,
    /// Attempts of one slowed pair or address allowed to wait their turn at once; more get a
    /// fast 429 with `Retry-After` (no client retries those, so this is the hard ceiling, not
    /// the usual answer: one client sending many attempts in parallel).
    #[serde(default = "default_max_waiting")]
    pub max_waiting: u32,
    /// Entries kept (pairs, addresses and accounts each); the least used go first.
    #[serde(default = "default_table_capacity")]
    pub table_capacity: u64,
    /// Failures of one account over all addresses within a minute before its new logins are
    /// slowed (a guesser rotating addresses; a verified credential still passes from cache).
    #[serde(default = "default_account_failures")]
    pub account_failures_per_minute: u32,
    /// IPv6 clients are counted by this network prefix: one host can hold a whole /64.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

impl Default for DampingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failures_per_minute: default_pair_failures(),
            ip_failures_per_minute: default_ip_failures(),
            max_delay_seconds: default_max_delay(),
            max_waiting: default_max_waiting(),
            table_capacity: default_table_capacity(),
            account_failures_per_minute: default_account_failures(),
            ipv6_prefix: default_ipv6_prefix(),
        }
    }
}

impl DampingConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.failures_per_minute == 0
            || self.ip_failures_per_minute == 0
            || self.account_failures_per_minute == 0
        {
            bail!(
                "{}, {} and {}: at least 1 (set damping.enabled = false to turn damping off)",
                setting("damping.failures_per_minute"),
                setting("damping.ip_failures_per_minute"),
                setting("damping.account_failures_per_minute")
            );
        }
        if !(32..=128).contains(&self.ipv6_prefix) {
            bail!("{}: between 32 and 128", setting("damping.ipv6_prefix"));
        }
        if !(1..=300).contains(&self.max_delay_seconds) {
            bail!(
                "{}: between 1 and 300",
                setting("damping.max_delay_seconds")
            );
        }
        if !(1..=10_000).contains(&self.max_waiting) {
            bail!("{}: between 1 and 10000", setting("damping.max_waiting"));
        }
        if !(100..=10_000_000).contains(&self.table_capacity) {
            bail!(
                "{}: between 100 and 10000000",
                setting("damping.table_capacity")
            );
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}
fn default_header_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_body_timeout() -> u64 {
    60
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_scopes() -> usize {
    100
}
fn default_pair_failures() -> u32 {
    10
}
fn default_ip_failures() -> u32 {
    30
}
fn default_max_delay() -> u64 {
    8
}
fn default_max_waiting() -> u32 {
    16
}
fn default_account_failures() -> u32 {
    20
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn default_table_capacity() -> u64 {
    100_000
}

/// Networks as written in `key` (CIDRs like `10.0.0.0/8`, or single addresses).
pub(crate) fn networks(list: &[String], key: &str) -> anyhow::Result<Vec<ipnet::IpNet>> {
    list.iter()
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{}: {p:?} is neither an address nor a CIDR like 10.0.0.0/8",
                        setting(key)
                    )
                })
        })
        .collect()
}
