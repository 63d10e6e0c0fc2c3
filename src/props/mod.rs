//! Property tests of every parser that reads outside input: no input makes one panic or take
//! more than linear time, renderers round-trip, and parsers agree with a reference where one
//! exists. Each test is a `prop_*` function run for `PROPTEST_CASES` generated inputs (256 by
//! default, what `scripts/test` runs; `scripts/fuzz` runs a million in all). A failing case is
//! shrunk and kept in `proptest-regressions/`, which proptest replays first on every later run.

mod documents;
mod names;
mod realm;
mod registry;
mod tokens;

use std::time::{Duration, Instant};

/// Checks that `parse` is linear in its input: `piece` repeated 100 times longer takes less
/// than 200 times as long (the least of 5 timings each, against the scheduler's noise).
pub(crate) fn linear(piece: &str, parse: impl Fn(&str)) {
    let time = |n: usize| {
        let input = piece.repeat(n);
        (0..5)
            .map(|_| {
                let t = Instant::now();
                parse(&input);
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
            .max(Duration::from_nanos(1))
    };
    let (short, long) = (time(200), time(20_000));
    let ratio = long.as_secs_f64() / short.as_secs_f64();
    assert!(
        ratio < 200.0,
        "{piece:?}: 100x the input took {ratio:.0}x the time ({short:?} -> {long:?})"
    );
}

/// Any text, up to `max` characters, weighted towards the characters parsers split on.
pub(crate) fn text(max: usize) -> impl proptest::strategy::Strategy<Value = String> {
    proptest::string::string_regex(&format!(
        "([:/,;= \"\\[\\]@.*${{}}a-z0-9-]|\\PC){{0,{max}}}"
    ))
    .expect("a valid regex")
}
