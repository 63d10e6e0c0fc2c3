//! Prometheus metrics (`GET /metrics`, the table in docs/observability.md). One process-wide set, created on
//! first use: counting is an atomic add on a counter resolved once, so the request paths pay
//! nothing for labels. Labels stay bounded: outcomes, endpoints, routes, methods and status
//! codes, never a user, repository or address.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

mod latency;
pub use latency::Latency;

/// How a token request ended: the `outcome` label of `token_issuer_token_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Issued,
    BadRequest,
    Unauthorized,
    Unavailable,
    /// Refused by brute-force damping (429).
    Damped,
    /// Too many scopes, repository checks, or too large a form.
    TooLarge,
    Internal,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Self::Issued,
        Self::BadRequest,
        Self::Unauthorized,
        Self::Unavailable,
        Self::Damped,
        Self::TooLarge,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Unavailable => "unavailable",
            Self::Damped => "damped",
            Self::TooLarge => "too_large",
            Self::Internal => "internal",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub endpoint: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WithinLabel {
    within: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

pub struct Metrics {
    registry: Registry,
    token_requests: [Counter; 7],
    pub token_latency: Latency,
    pub scopes_requested: Counter,
    pub scopes_granted: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    upstream_calls: Family<UpstreamLabels, Counter>,
    accounts_expiring: Family<WithinLabel, Gauge>,
    upstream_latency: Family<EndpointLabel, Histogram>,
    pub bcrypt_match: Counter,
    pub bcrypt_mismatch: Counter,
    pub damping_entries: Gauge,
    pub key_not_after: Gauge,
    pub reload_ok: Counter,
    pub reload_failed: Counter,
    pub reload_last_success: Gauge,
    pub audit_lines: Counter,
    pub audit_errors: Counter,
    pub in_flight: Gauge,
    registry_requests: Family<RegistryLabels, Counter>,
    pub registry_bytes_in: Counter,
    pub registry_bytes_out: Counter,
    pub uploads_in_progress: Gauge,
    pub gc_runs: Counter,
    pub gc_failed: Counter,
    pub gc_blobs: Counter,
    pub gc_manifests: Counter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// `metrics.enabled`: when off, the latency histograms are not kept (the upstream one takes a
/// lock; the token one is sharded, see `latency`); counters are single atomic adds and are kept
/// either way.
static HISTOGRAMS: AtomicBool = AtomicBool::new(true);

pub fn set_enabled(on: bool) {
    HISTOGRAMS.store(on, Ordering::Relaxed);
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// The upstream latency histogram: the token one's bounds (see `latency`).
fn latency_histogram() -> Histogram {
    Histogram::new(latency::bounds())
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("token_issuer");
        // Fixed label sets are resolved once: the handles kept share the family's atomics.
        let requests = Family::<OutcomeLabel, Counter>::default();
        let token_requests = Outcome::ALL.map(|o| {
            requests.get_or_create_owned(&OutcomeLabel {
                outcome: o.as_str(),
            })
        });
        registry.register(
            "token_requests",
            "Token requests answered, by outcome",
            requests,
        );
        let cache = Family::<ResultLabel, Counter>::default();
        let bcrypt = Family::<ResultLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let result = |f: &Family<ResultLabel, Counter>, result| {
            f.get_or_create_owned(&ResultLabel { result })
        };
        let m = Self {
            token_requests,
            token_latency: Latency::default(),
            scopes_requested: Counter::default(),
            scopes_granted: Counter::default(),
            cache_hits: result(&cache, "hit"),
            cache_misses: result(&cache, "miss"),
            upstream_calls: Family::default(),
            accounts_expiring: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            bcrypt_match: result(&bcrypt, "match"),
            bcrypt_mismatch: result(&bcrypt, "mismatch"),
            damping_entries: Gauge::default(),
            key_not_after: Gauge::default(),
            reload_ok: result(&reloads, "ok"),
            reload_failed: result(&reloads, "failed"),
            reload_last_success: Gauge::default(),
            audit_lines: Counter::default(),
            audit_errors: Counter::default(),
            in_flight: Gauge::default(),
            registry_requests: Family::default(),
            registry_bytes_in: Counter::default(),
            registry_bytes_out: Counter::default(),
            uploads_in_progress: Gauge::default(),
            gc_runs: Counter::default(),
            gc_failed: Counter::default(),
            gc_blobs: Counter::default(),
            gc_manifests: Counter::default(),
            registry: Registry::default(),
        };
        registry.register_with_unit(
            "token_request_duration",
            "Time from a token request's arrival to its answer",
            Unit::Seconds,
            m.token_latency.clone(),
        );
        registry.register(
            "scopes_requested",
            "Scopes asked for in token requests",
            m.scopes_requested.clone(),
        );
        registry.register(
            "scopes_granted",
            "Scopes granted (with at least one action) in issued tokens",
            m.scopes_granted.clone(),
        );
        registry.register(
            "identity_cache",
            "Identity lookups answered from the cache (hit) or verified (miss)",
            cache,
        );
        registry.register(
            "upstream_requests",
            "Calls to the upstream identity API, by endpoint and outcome",
            m.upstream_calls.clone(),
        );
        registry.register_with_unit(
            "upstream_request_duration",
            "Latency of calls to the upstream identity API, by endpoint",
            Unit::Seconds,
            m.upstream_latency.clone(),
        );
        registry.register(
            "bcrypt_verifications",
            "bcrypt password verifications, by result",
            bcrypt,
        );
        registry.register(
            "damping_entries",
            "Failure records held by brute-force damping (pairs and addresses)",
            m.damping_entries.clone(),
        );
        registry.register_with_unit(
            "signing_key_not_after",
            "When the signing certificate expires (Unix time): alert well before it",
            Unit::Seconds,
            m.key_not_after.clone(),
        );
        registry.register(
            "accounts_expiring",
            "Store accounts that expire within the span (1d, 7d) from now, counted every few minutes: alert before CI breaks",
            m.accounts_expiring.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads, by result (a failed one keeps the running state)",
            reloads,
        );
        registry.register_with_unit(
            "reload_last_success",
            "When the running state was last loaded (Unix time)",
            Unit::Seconds,
            m.reload_last_success.clone(),
        );
        registry.register("audit_lines", "Audit lines written", m.audit_lines.clone());
        registry.register(
            "audit_write_errors",
            "Audit lines that could not be written (disk full, file gone)",
            m.audit_errors.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being answered, on every listener",
            m.in_flight.clone(),
        );
        registry.register(
            "registry_requests",
            "Built-in registry requests, by route, method and status",
            m.registry_requests.clone(),
        );
        registry.register_with_unit(
            "registry_received",
            "Blob and manifest bytes received by the built-in registry",
            Unit::Bytes,
            m.registry_bytes_in.clone(),
        );
        registry.register_with_unit(
            "registry_sent",
            "Body bytes sent by the built-in registry",
            Unit::Bytes,
            m.registry_bytes_out.clone(),
        );
        registry.register(
            "registry_uploads_in_progress",
            "Open upload sessions in the built-in registry",
            m.uploads_in_progress.clone(),
        );
        registry.register(
            "registry_gc_runs",
            "Garbage collections completed inside the serving registry",
            m.gc_runs.clone(),
        );
        registry.register(
            "registry_gc_failures",
            "Garbage collections that failed (logged; they run again on schedule)",
            m.gc_failed.clone(),
        );
        registry.register(
            "registry_gc_deleted_blobs",
            "Blobs removed by garbage collection",
            m.gc_blobs.clone(),
        );
        registry.register(
            "registry_gc_deleted_manifests",
            "Untagged manifests removed by garbage collection (delete_untagged)",
            m.gc_manifests.clone(),
        );
        registry.register(
            "build",
            "The running build",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Self { registry, ..m }
    }

    pub fn token_request(&self, outcome: Outcome, took: Duration) {
        self.token_requests[outcome as usize].inc();
        if HISTOGRAMS.load(Ordering::Relaxed) {
            self.token_latency.observe(took);
        }
    }

    pub fn accounts_expiring(&self, within: &'static str, n: i64) {
        self.accounts_expiring
            .get_or_create(&WithinLabel { within })
            .set(n);
    }

    pub fn upstream_call(&self, endpoint: &'static str, outcome: &'static str, took: Duration) {
        self.upstream_calls
            .get_or_create(&UpstreamLabels { endpoint, outcome })
            .inc();
        if HISTOGRAMS.load(Ordering::Relaxed) {
            self.upstream_latency
                .get_or_create(&EndpointLabel { endpoint })
                .observe(took.as_secs_f64());
        }
    }

    pub fn registry_request(&self, route: &'static str, method: &'static str, status: u16) {
        self.registry_requests
            .get_or_create(&RegistryLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
