//! Proofs about the committed XOR ECC maps: that they parse, are what the
//! generator writes, and survive every loss pattern up to their tolerance.

use bitdust_ecc::SUPPLIER_COUNTS;
use bitdust_ecc::map::{EccMap, REQUIRED_TOLERANCE, low_bits};
use bitdust_ecc::mapgen::{self, PLANS};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn map(n: usize) -> &'static EccMap {
    EccMap::builtin(n).expect("every supported count has a map")
}

/// Calls `f` with every subset of at most `k` of the low `n` bits.
fn for_each_pattern_up_to(n: usize, k: usize, f: &mut impl FnMut(u64)) {
    fn rec(n: usize, k: usize, from: usize, lost: u64, f: &mut impl FnMut(u64)) {
        f(lost);
        if k == 0 {
            return;
        }
        for i in from..n {
            rec(n, k - 1, i + 1, lost | 1 << i, f);
        }
    }
    rec(n, k, 0, 0, f);
}

fn random_pattern(rng: &mut ChaCha8Rng, n: usize, k: usize) -> u64 {
    sample(rng, n, k).iter().fold(0u64, |m, i| m | 1 << i)
}

#[test]
fn maps_meet_the_required_tolerance() {
    for (n, required) in REQUIRED_TOLERANCE {
        let m = map(n);
        assert_eq!(m.suppliers(), n);
        assert!(
            m.tolerance() >= required,
            "N={n}: {} < {required}",
            m.tolerance()
        );
        // A lone data fragment is stuck once its parities are lost too.
        for (i, w) in m.column_weights().into_iter().enumerate() {
            assert!(w >= m.tolerance(), "N={n}: D{i} is in only {w} parities");
        }
        for j in 0..n {
            assert!(!m.members(j).contains(&j), "N={n}: P{j} covers D{j}");
        }
    }
}

#[test]
fn weights_are_balanced() {
    for n in SUPPLIER_COUNTS {
        let m = map(n);
        let cols = m.column_weights();
        let rows = m.row_weights();
        assert!(cols.iter().all(|&w| w == cols[0]), "N={n} columns {cols:?}");
        assert!(rows.iter().all(|&w| w == rows[0]), "N={n} rows {rows:?}");
    }
}

#[test]
fn exhaustive_up_to_tolerance_for_small_maps() {
    for n in SUPPLIER_COUNTS.into_iter().filter(|&n| n <= 26) {
        let m = map(n);
        let mut checked = 0u64;
        for_each_pattern_up_to(n, m.tolerance(), &mut |lost| {
            assert!(m.decodes(lost), "N={n}: losing {lost:#b} fails");
            checked += 1;
        });
        assert!(checked > 0);
    }
}

#[test]
fn tolerance_is_exact_for_small_maps() {
    // Some pattern one past the tolerance fails, so the stored figure is not
    // an understatement either.
    for n in SUPPLIER_COUNTS.into_iter().filter(|&n| n <= 26) {
        let m = map(n);
        let mut failing = 0u64;
        for_each_pattern_up_to(n, m.tolerance() + 1, &mut |lost| {
            if !m.decodes(lost) {
                failing += 1;
            }
        });
        assert!(failing > 0, "N={n} survives tolerance + 1");
    }
}

#[test]
fn n64_exhaustive_up_to_five_losses() {
    let m = map(64);
    let mut checked = 0u64;
    for_each_pattern_up_to(64, 5, &mut |lost| {
        assert!(m.decodes(lost), "N=64: losing {lost:#x} fails");
        checked += 1;
    });
    assert_eq!(checked, 1 + 64 + 2016 + 41664 + 635_376 + 7_624_512);
}

fn n64_sampled(samples: usize, seed: u64) {
    let m = map(64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..samples {
        let lost = random_pattern(&mut rng, 64, m.tolerance());
        assert!(m.decodes(lost), "N=64: losing {lost:#x} fails");
    }
}

#[test]
fn n64_sampled_at_tolerance() {
    n64_sampled(20_000, 64);
}

#[test]
#[ignore = "slow: a million random patterns"]
fn n64_million_sampled_at_tolerance() {
    n64_sampled(1_000_000, 6464);
}

#[test]
fn stuck_set_search_proves_every_tolerance() {
    for n in SUPPLIER_COUNTS {
        let m = map(n);
        let t = m.tolerance();
        assert_eq!(m.min_failing_pattern(t), None, "N={n}");
        let p = m.min_failing_pattern(t + 1).expect("tolerance is exact");
        assert_eq!(p.size(), t + 1);
        assert!(!m.decodes(p.lost));
        assert_eq!(m.proven_tolerance(), t);
    }
}

/// A random map: each parity covers `w` random other data fragments.
fn random_map(rng: &mut ChaCha8Rng, n: usize, w: usize) -> EccMap {
    let members = (0..n)
        .map(|j| {
            let mut row = Vec::new();
            while row.len() < w {
                let i = rng.random_range(0..n);
                if i != j && !row.contains(&i) {
                    row.push(i);
                }
            }
            row
        })
        .collect();
    EccMap::from_members(n, 0, members).expect("valid random map")
}

#[test]
fn stuck_set_search_agrees_with_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for round in 0..40 {
        let n = [7, 9, 12, 13][round % 4];
        let w = 2 + round % 3;
        let m = if round % 2 == 0 {
            random_map(&mut rng, n, w)
        } else {
            let mut diffs = Vec::new();
            while diffs.len() < w {
                let d = rng.random_range(1..n);
                if !diffs.contains(&d) {
                    diffs.push(d);
                }
            }
            mapgen::circulant(n, &diffs, 0).expect("valid circulant")
        };
        let brute = (1u64..=low_bits(n))
            .filter(|&l| !m.decodes(l))
            .map(|l| l.count_ones() as usize)
            .min();
        let search = m.min_failing_pattern(n).map(|p| p.size());
        assert_eq!(search, brute, "round {round}: {m:?}");
        // And the exact list of minimal failing patterns.
        if let Some(size) = brute {
            let mut expect: Vec<u64> = (1u64..=low_bits(n))
                .filter(|&l| l.count_ones() as usize == size && !m.decodes(l))
                .collect();
            expect.sort_unstable();
            assert_eq!(m.minimal_failing_patterns(size), expect, "round {round}");
        }
    }
}

#[test]
fn committed_files_parse_and_round_trip() {
    for n in SUPPLIER_COUNTS {
        let text = EccMap::builtin_text(n).expect("committed text");
        let parsed = EccMap::parse(text).expect("parses");
        assert_eq!(&parsed, map(n));
        assert!(parsed.is_circulant());
    }
}

fn reproduce(plan: mapgen::Plan) {
    let (m, comments) = mapgen::generate(plan);
    let text = m.to_text(&comments);
    assert_eq!(
        Some(text.as_str()),
        EccMap::builtin_text(plan.suppliers),
        "N={}: rerun `cargo run -p bitdust-ecc --release --bin ecc-mapgen`",
        plan.suppliers
    );
}

#[test]
fn generator_reproduces_committed_maps() {
    // The searches up to N = 26 take milliseconds; they are the determinism proof.
    for plan in PLANS.into_iter().filter(|p| p.suppliers <= 26) {
        reproduce(plan);
    }
}

#[test]
#[ignore = "slow: the N = 64 search takes about 100 s in release"]
fn generator_reproduces_committed_n64_map() {
    for plan in PLANS.into_iter().filter(|p| p.suppliers == 64) {
        reproduce(plan);
    }
}
