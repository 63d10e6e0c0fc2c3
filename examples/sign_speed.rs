//! aws-lc's own P-256 signing time on one thread, beside `openssl speed ecdsap256` in
//! `scripts/bench`: the signature the issuer pays per token is aws-lc's, which is faster than
//! Debian's OpenSSL, so the true floor under the CPU-per-token row is this.
//!
//! `cargo run --release --example sign_speed -- [seconds]` prints microseconds per signature.

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("a key");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .expect("the key");
    // A token's signing input is a few hundred bytes.
    let message = [7u8; 400];
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while Instant::now() < until {
        for _ in 0..100 {
            let sig = key.sign(&rng, &message).expect("a signature");
            std::hint::black_box(sig);
        }
        n += 100;
    }
    println!("{:.2}", start.elapsed().as_secs_f64() * 1e6 / n as f64);
}
