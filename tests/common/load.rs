//! The soak's parts: answers by kind and status with their latencies ([`Tally`]), the
//! processes' memory and open files over time ([`Timeline`]) with the summary tables, and the
//! traffic that is not token requests (pushes and pulls against `dev`, admin changes).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::store_api::BOSS;
use super::{digest, image_manifest, Proc};

/// What one request came to.
pub enum Outcome {
    /// An HTTP answer; `Some(why)` when its content broke a rule of the soak.
    Answer(u16, Option<String>),
    /// No HTTP answer at all (refused, reset, timed out).
    NoAnswer(String),
}

#[derive(Default)]
struct Kind {
    statuses: BTreeMap<u16, u64>,
    micros: Vec<u32>,
    no_answer: u64,
}

/// Answers by kind of request: counts by status, latencies, and the first few problems.
#[derive(Default)]
pub struct Tally {
    kinds: Mutex<BTreeMap<&'static str, Kind>>,
    problems: Mutex<Vec<String>>,
}

/// Problems kept for the report; the count of the rest is still failed on.
const KEPT_PROBLEMS: usize = 20;

impl Tally {
    /// Notes `outcome` of a `kind` request that took `took`; `allowed` are the statuses the
    /// kind may answer (anything else is a problem).
    pub fn note(&self, kind: &'static str, allowed: &[u16], took: Duration, outcome: Outcome) {
        let problem = {
            let mut kinds = self.kinds.lock().expect("tally");
            let k = kinds.entry(kind).or_default();
            match outcome {
                Outcome::Answer(status, why) => {
                    *k.statuses.entry(status).or_default() += 1;
                    k.micros.push(took.as_micros().min(u32::MAX as u128) as u32);
                    match (allowed.contains(&status), why) {
                        (false, _) => Some(format!("{kind}: status {status}")),
                        (true, Some(why)) => Some(format!("{kind}: {why}")),
                        (true, None) => None,
                    }
                }
                Outcome::NoAnswer(e) => {
                    k.no_answer += 1;
                    Some(format!("{kind}: no answer: {e}"))
                }
            }
        };
        if let Some(p) = problem {
            let mut problems = self.problems.lock().expect("problems");
            problems.push(p);
        }
    }

    /// Every problem noted (the first [`KEPT_PROBLEMS`] in full).
    pub fn problems(&self) -> (usize, Vec<String>) {
        let problems = self.problems.lock().expect("problems");
        let kept = problems.iter().take(KEPT_PROBLEMS).cloned().collect();
        (problems.len(), kept)
    }

    /// Requests answered, over all kinds.
    pub fn total(&self) -> u64 {
        let kinds = self.kinds.lock().expect("tally");
        kinds.values().flat_map(|k| k.statuses.values()).sum()
    }

    /// Requests of `kind` answered with a status in `statuses`.
    pub fn answered(&self, kind: &str, statuses: std::ops::Range<u16>) -> u64 {
        let kinds = self.kinds.lock().expect("tally");
        kinds.get(kind).map_or(0, |k| {
            k.statuses
                .iter()
                .filter(|(s, _)| statuses.contains(*s))
                .map(|(_, c)| c)
                .sum()
        })
    }

    /// `kind | requests | by status | p50 | p99` rows.
    pub fn table(&self, seconds: f64) -> String {
        let mut kinds = self.kinds.lock().expect("tally");
        let mut out = String::from(
            "| kind | requests | per second | by status | p50 ms | p99 ms |\n|---|---|---|---|---|---|\n",
        );
        for (name, k) in kinds.iter_mut() {
            k.micros.sort_unstable();
            let n: u64 = k.statuses.values().sum();
            let statuses: Vec<String> = k
                .statuses
                .iter()
                .map(|(s, c)| format!("{s}: {c}"))
                .chain((k.no_answer > 0).then(|| format!("no answer: {}", k.no_answer)))
                .collect();
            let _ = writeln!(
                out,
                "| {name} | {n} | {:.0} | {} | {:.1} | {:.1} |",
                n as f64 / seconds,
                statuses.join(", "),
                quantile(&k.micros, 0.50),
                quantile(&k.micros, 0.99),
            );
        }
        out
    }
}

/// The `q` quantile of sorted microseconds, in milliseconds.
fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// One sample of the watched processes: (seconds since the start, RSS KiB and fds of each).
pub struct Sample {
    pub at: f64,
    pub procs: Vec<(u64, usize)>,
}

/// Samples of named processes over time.
pub struct Timeline {
    pub names: Vec<&'static str>,
    pids: Vec<u32>,
    start: Instant,
    pub samples: Vec<Sample>,
}

impl Timeline {
    pub fn new(procs: &[(&'static str, u32)]) -> Self {
        Self {
            names: procs.iter().map(|p| p.0).collect(),
            pids: procs.iter().map(|p| p.1).collect(),
            start: Instant::now(),
            samples: Vec::new(),
        }
    }

    pub fn sample(&mut self) {
        let procs = self
            .pids
            .iter()
            .map(|&pid| (super::vm_rss_kib(pid), open_fds(pid)))
            .collect();
        self.samples.push(Sample {
            at: self.start.elapsed().as_secs_f64(),
            procs,
        });
    }

    /// The first sample taken at or after `seconds`.
    pub fn at(&self, seconds: f64) -> &Sample {
        self.samples
            .iter()
            .find(|s| s.at >= seconds)
            .or(self.samples.last())
            .expect("samples")
    }

    pub fn last(&self) -> &Sample {
        self.samples.last().expect("samples")
    }

    /// `s | NAME RSS MiB | NAME fds | ...` rows, one per sample.
    pub fn table(&self) -> String {
        let mut out = String::from("| s |");
        for n in &self.names {
            let _ = write!(out, " {n} RSS MiB | {n} fds |");
        }
        out.push_str("\n|---|");
        out.push_str(&"---|---|".repeat(self.names.len()));
        out.push('\n');
        for s in &self.samples {
            let _ = write!(out, "| {:.0} |", s.at);
            for (rss, fds) in &s.procs {
                let _ = write!(out, " {:.1} | {fds} |", *rss as f64 / 1024.0);
            }
            out.push('\n');
        }
        out
    }
}

/// Sends `req` and reads the answer: status and body, or why there was none.
pub async fn send(req: reqwest::RequestBuilder) -> Result<(u16, bytes::Bytes), String> {
    let r = req.send().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// A client as each of the soak's workers has its own (30 s for any request).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// `dev` with its registry: (process, realm, registry URL).
pub async fn start_dev(dir: &Path) -> (Proc, String, String) {
    let (proc, issuer, registry) = super::start_dev(dir, &dir.join("dev"), "dev-pw").await;
    (
        proc,
        format!("http://127.0.0.1:{issuer}"),
        format!("http://127.0.0.1:{registry}"),
    )
}

/// One push and pull against `dev`: a token, a new layer and the config, the manifest under
/// one of 50 tags, then the manifest and the layer read back.
pub async fn push_and_pull(
    c: &reqwest::Client,
    dev: &(String, String, String),
    n: u64,
    tally: &Tally,
) {
    let (realm, service, registry) = dev;
    let (at, sent) = timed(send(
        c.get(realm)
            .query(&[
                ("service", service.as_str()),
                ("scope", "repository:soak/app:pull,push"),
            ])
            .basic_auth("admin", Some("dev-pw")),
    ))
    .await;
    let token = match &sent {
        Ok((200, body)) => serde_json::from_slice::<Value>(body).unwrap_or_default()["token"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    };
    tally.note("dev token", &[200], at, outcome(sent, |_| None));
    let layer = format!("soak layer {n} {}", seconds_since_epoch()).into_bytes();
    let config = b"{\"soak\":true}".to_vec();
    for blob in [&layer, &config] {
        let url = format!(
            "{registry}/v2/soak/app/blobs/uploads/?digest={}",
            digest(blob)
        );
        let (at, sent) = timed(send(c.post(url).bearer_auth(&token).body(blob.clone()))).await;
        tally.note("dev push", &[201], at, outcome(sent, |_| None));
    }
    let manifest = image_manifest(&digest(&config), config.len(), &digest(&layer), layer.len());
    let tag = format!("t{}", n % 50);
    let url = format!("{registry}/v2/soak/app/manifests/{tag}");
    let put = c
        .put(&url)
        .bearer_auth(&token)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string());
    let (at, sent) = timed(send(put)).await;
    tally.note("dev push", &[201], at, outcome(sent, |_| None));
    let get = c
        .get(&url)
        .bearer_auth(&token)
        .header("Accept", "application/vnd.oci.image.manifest.v1+json");
    let same = |b: &[u8]| (b != manifest.to_string().as_bytes()).then(|| "another manifest".into());
    let (at, sent) = timed(send(get)).await;
    tally.note("dev pull", &[200], at, outcome(sent, same));
    let url = format!("{registry}/v2/soak/app/blobs/{}", digest(&layer));
    let same = |b: &[u8]| (b != layer.as_slice()).then(|| "another layer".into());
    let get = c.get(url).bearer_auth(&token);
    let (at, sent) = timed(send(get)).await;
    tally.note("dev pull", &[200], at, outcome(sent, same));
}

/// How long `f` took, and what it gave.
pub async fn timed<T>(f: impl Future<Output = T>) -> (Duration, T) {
    let at = Instant::now();
    let out = f.await;
    (at.elapsed(), out)
}

/// An answer, with `check` run on a 2xx body.
pub fn outcome(
    sent: Result<(u16, bytes::Bytes), String>,
    check: impl Fn(&[u8]) -> Option<String>,
) -> Outcome {
    match sent {
        Ok((status, body)) if (200..300).contains(&status) => Outcome::Answer(status, check(&body)),
        Ok((status, _)) => Outcome::Answer(status, None),
        Err(e) => Outcome::NoAnswer(e),
    }
}

/// The admin API once a second: a group and a generated-secret user made, then both deleted.
pub async fn admin_changes(url: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let c = client();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for n in 0.. {
        tick.tick().await;
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let steps = [
            (
                "POST",
                "/groups".to_string(),
                Some(json!({"name": format!("g{n}")})),
                201,
            ),
            (
                "POST",
                "/users".into(),
                Some(json!({"name": format!("u{n}"), "generate": true})),
                201,
            ),
            ("DELETE", format!("/users/u{n}"), None, 204),
            ("DELETE", format!("/groups/g{n}"), None, 204),
        ];
        for (method, path, body, want) in steps {
            let mut req = c
                .request(
                    method.parse().expect("method"),
                    format!("{url}/admin/v1{path}"),
                )
                .basic_auth(BOSS.0, Some(BOSS.1));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let (at, sent) = timed(send(req)).await;
            tally.note("admin change", &[want], at, outcome(sent, |_| None));
        }
    }
}

pub fn seconds_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}
