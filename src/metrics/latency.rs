//! The token request latency histogram, without a lock. prometheus-client's `Histogram` takes a
//! mutex on every observation; on the token path that lock's cache line moved between the
//! worker threads' cores on every request. Here each thread counts into its own shard (atomic
//! adds on a cache line no other worker writes, with up to `SHARDS` threads), and a scrape adds
//! the shards up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds in seconds: 0.25 ms doubling to ~8 s (a warm token is well under a
/// millisecond, bcrypt tens of ms, a slow upstream seconds), then +Inf. The upstream latency
/// histograms use the same bounds (`bounds()`).
const BOUNDS: usize = 16;
/// Shards: threads beyond this many share (correctly, just with contention).
const SHARDS: usize = 8;

fn upper_bound(i: usize) -> f64 {
    0.000_25 * f64::from(1u32 << i)
}

/// The finite upper bounds, for prometheus-client's `Histogram::new`.
pub(super) fn bounds() -> impl Iterator<Item = f64> {
    (0..BOUNDS).map(upper_bound)
}

#[derive(Default)]
#[repr(align(128))] // a shard to itself: no false sharing with its neighbours
struct Shard {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BOUNDS + 1],
    sum_nanos: AtomicU64,
}

/// Cheap to clone: the registry and the metrics set share the shards.
#[derive(Clone, Default)]
pub struct Latency {
    shards: Arc<[Shard; SHARDS]>,
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Latency")
    }
}

impl Latency {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = (0..BOUNDS)
            .find(|&i| secs <= upper_bound(i))
            .unwrap_or(BOUNDS);
        let shard = &self.shards[shard_index()];
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts with their upper bounds).
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = bounds()
            .chain(std::iter::once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        // In u128: one shard's sum cannot overflow in practice, the total of eight could.
        let mut nanos = 0u128;
        for shard in self.shards.iter() {
            for (total, n) in buckets.iter_mut().zip(&shard.buckets) {
                total.1 += n.load(Ordering::Relaxed);
            }
            nanos += u128::from(shard.sum_nanos.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        (nanos as f64 / 1e9, count, buckets)
    }
}

/// This thread's shard, chosen round-robin on its first observation.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::{Registry, Unit};

    fn text(register: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        out
    }

    /// The exposition is the one prometheus-client's own histogram (as the upstream latency is
    /// kept) gives for the same observations. The sums are added differently (nanoseconds here,
    /// seconds as f64 there), so `_sum` is compared to within a nanosecond per observation.
    #[test]
    fn same_text_as_prometheus_client_histogram() {
        let samples_us = [
            1u64, 250, 251, 499, 500, 1_000, 3_000, 70_000, 4_000_000, 8_192_000, 9_000_000,
            60_000_000,
        ];
        let ours = Latency::default();
        let theirs = super::super::latency_histogram();
        let threads: Vec<_> = samples_us
            .iter()
            .map(|&us| {
                let ours = ours.clone();
                std::thread::spawn(move || ours.observe(Duration::from_micros(us)))
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        for us in samples_us {
            theirs.observe(us as f64 / 1e6);
        }
        let a = text(|r| r.register_with_unit("d", "h", Unit::Seconds, ours));
        let b = text(|r| r.register_with_unit("d", "h", Unit::Seconds, theirs));
        assert!(a.contains("d_seconds_bucket{le=\"0.00025\"} 2"), "{a}");
        assert!(a.contains("d_seconds_bucket{le=\"+Inf\"} 12"), "{a}");
        let sum = |text: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix("d_seconds_sum "))
                .and_then(|v| v.parse().ok())
                .expect("a _sum line")
        };
        assert!((sum(&a) - sum(&b)).abs() < 1e-9 * samples_us.len() as f64);
        let without_sum = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with("d_seconds_sum "))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(without_sum(&a), without_sum(&b));
    }
}
