//! Prints, for every committed XOR ECC map, its weights, its proven
//! tolerance and the share of loss patterns that still decode one, two and
//! three positions past the tolerance, as a Markdown table (the one in
//! `docs/ecc.md`).
//!
//! Run: `cargo run -p bitdust-ecc --release --bin ecc-report`
//!
//! Shares are exhaustive when there are at most [`EXHAUSTIVE_LIMIT`]
//! patterns of that size and sampled otherwise ([`SAMPLES`] uniformly random
//! patterns from a fixed-seed generator), as marked in each cell. The count
//! of failing patterns one past the tolerance is exact for every map: those
//! are all minimal, and the stuck-set search of `EccMap` lists them.

use bitdust_ecc::SUPPLIER_COUNTS;
use bitdust_ecc::map::{EccMap, random_pattern};
use bitdust_ecc::mapgen::SplitMix64;

/// Largest pattern count checked one by one.
const EXHAUSTIVE_LIMIT: u128 = 20_000_000;

/// Random patterns per cell when exhaustive is too costly.
const SAMPLES: usize = 2_000_000;

fn binomial(n: usize, k: usize) -> u128 {
    if k > n {
        return 0;
    }
    (0..k).fold(1u128, |acc, i| acc * (n - i) as u128 / (i + 1) as u128)
}

/// Calls `f` with every `k`-subset of the low `n` bits (Gosper's hack).
fn for_each_subset(n: usize, k: usize, mut f: impl FnMut(u64)) {
    if k == 0 {
        f(0);
        return;
    }
    if k > n {
        return;
    }
    let limit: u128 = 1u128 << n;
    let mut s: u128 = (1u128 << k) - 1;
    while s < limit {
        f(s as u64);
        let c = s & s.wrapping_neg();
        let r = s + c;
        s = (((r ^ s) >> 2) / c) | r;
    }
}

/// The share of `k`-position loss patterns that decode, and whether it was
/// sampled.
fn share(map: &EccMap, k: usize, seed: u64) -> (f64, bool) {
    let n = map.suppliers();
    let total = binomial(n, k);
    if total <= EXHAUSTIVE_LIMIT {
        let mut ok = 0u64;
        for_each_subset(n, k, |lost| ok += u64::from(map.decodes(lost)));
        (ok as f64 / total as f64, false)
    } else {
        let mut rng = SplitMix64::new(seed ^ (n as u64) << 8 ^ k as u64);
        let ok = (0..SAMPLES)
            .filter(|_| map.decodes(random_pattern(&mut rng, n, k)))
            .count();
        (ok as f64 / SAMPLES as f64, true)
    }
}

fn weights(w: &[usize]) -> String {
    let (lo, hi) = (w.iter().min(), w.iter().max());
    match (lo, hi) {
        (Some(lo), Some(hi)) if lo == hi => format!("{lo}"),
        (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
        _ => "-".to_string(),
    }
}

fn main() {
    println!(
        "| N | column weight | row weight | tolerance | required | failing patterns at t+1 (exact) | decodes at t+1 | at t+2 | at t+3 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in SUPPLIER_COUNTS {
        let Some(map) = EccMap::builtin(n) else {
            continue;
        };
        let t = map.tolerance();
        let required = bitdust_ecc::map::REQUIRED_TOLERANCE
            .iter()
            .find(|(m, _)| *m == n)
            .map_or(0, |(_, r)| *r);
        let mut cells = Vec::new();
        for extra in 1..=3 {
            let k = t + extra;
            if k > n {
                cells.push("n/a".to_string());
                continue;
            }
            let (s, sampled) = share(map, k, 0x5EED);
            let how = if sampled {
                format!("sampled {}M", SAMPLES / 1_000_000)
            } else {
                format!("exhaustive {}", binomial(n, k))
            };
            cells.push(format!("{:.4}% ({how})", s * 100.0));
        }
        // Every failing pattern one past the tolerance is a minimal one, which
        // the stuck-set search enumerates exactly, even for N = 64.
        let failing = if t < n {
            format!(
                "{} of {}",
                map.minimal_failing_patterns(t + 1).len(),
                binomial(n, t + 1)
            )
        } else {
            "n/a".to_string()
        };
        println!(
            "| {n} | {} | {} | {t} | {required} | {failing} | {} |",
            weights(&map.column_weights()),
            weights(&map.row_weights()),
            cells.join(" | ")
        );
    }
}
