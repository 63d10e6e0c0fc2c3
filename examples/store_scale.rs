//! The bench's store-scale row (scripts/bench.d/scale.sh): what a cold login costs the store,
//! by the size of the store. It opens the store at URL (as `serve` does) and reads LOOKUPS
//! accounts named PREFIX1 ... PREFIX<USERS>, spread over the whole range, one at a time, the way
//! a cold login reads its account (one statement: user, groups, grants). It prints the median
//! and 90th percentile of the lookups' wall time in microseconds: the database's time, since
//! nothing else is in flight.
//!
//!   store_scale URL DIR PREFIX USERS LOOKUPS

use std::path::Path;
use std::time::Instant;

use token_issuer::store::Store;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, dir, prefix, users, lookups] = args.as_slice() else {
        anyhow::bail!("usage: store_scale URL DIR PREFIX USERS LOOKUPS");
    };
    let (users, lookups): (u64, usize) = (users.parse()?, lookups.parse()?);
    anyhow::ensure!(
        users > 0 && lookups > 0,
        "USERS and LOOKUPS must be at least 1"
    );
    let store = Store::open(url, Path::new(dir)).await?;
    // Names spread over the range by a multiplicative step (coprime with any count that is
    // not a multiple of it), so an index is walked, not a cached neighbourhood.
    let name = |i: u64| format!("{prefix}{}", (i * 2_654_435_761) % users + 1);
    for i in 0..lookups.min(1000) as u64 {
        store.account(&name(i)).await?;
    }
    let mut micros = Vec::with_capacity(lookups);
    // Past the warm-up's names, so the timed reads are not of accounts just read.
    for i in 1000..1000 + lookups as u64 {
        let at = Instant::now();
        let found = store.account(&name(i)).await?;
        micros.push(at.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(found.is_some(), "{} is not in the store", name(i));
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
    println!("{:.1} {:.1}", at(0.5), at(0.9));
    Ok(())
}
