//! The soak's bookkeeping: answers by kind and status with their latencies ([`Tally`]), the
//! processes' memory and open files over time ([`Timeline`]), and the summary table.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
