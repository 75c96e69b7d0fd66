//! Round trips through both schemes: encode, lose positions, reconstruct,
//! and rebuild single positions from their rebuild plans.

use bitdust_ecc::{Code, EccError, FragmentKind, SUPPLIER_COUNTS, Scheme};
use rand::seq::index::sample;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SCHEMES: [Scheme; 2] = [Scheme::Xor, Scheme::ReedSolomon];

fn code(scheme: Scheme, n: usize) -> Code {
    Code::new(scheme, n).expect("supported supplier count")
}

/// An encoded random block of `block_len` bytes: (buffer, fragment length).
fn encoded(code: &Code, block_len: usize, rng: &mut ChaCha8Rng) -> (Vec<u8>, usize) {
    let fl = code.fragment_len(block_len);
    let mut buf = vec![0u8; code.fragment_count() * fl];
    rng.fill_bytes(&mut buf[..block_len]);
    // Parity bytes must not depend on what the buffer held before.
    rng.fill_bytes(&mut buf[code.data_fragments() * fl..]);
    code.encode(&mut buf, fl).expect("encode");
    (buf, fl)
}

/// Marks every fragment of the positions in `lost` absent and scribbles
/// over them, so only a real reconstruction can restore them.
fn lose(code: &Code, buf: &mut [u8], fl: usize, lost: &[usize], rng: &mut ChaCha8Rng) -> Vec<bool> {
    let mut present = vec![true; code.fragment_count()];
    for &p in lost {
        for f in code.position_fragments(p) {
            present[f] = false;
            rng.fill_bytes(&mut buf[f * fl..(f + 1) * fl]);
        }
    }
    present
}

fn random_positions(rng: &mut ChaCha8Rng, n: usize, k: usize) -> Vec<usize> {
    let mut v = sample(rng, n, k).into_vec();
    v.sort_unstable();
    v
}

#[test]
fn round_trip_every_scheme_and_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for scheme in SCHEMES {
        for n in SUPPLIER_COUNTS {
            let code = code(scheme, n);
            for round in 0..12 {
                let block_len = if round == 0 {
                    0
                } else {
                    rng.random_range(1..200_000)
                };
                let (orig, fl) = encoded(&code, block_len, &mut rng);
                let losses = round % (code.tolerance() + 1);
                let lost = random_positions(&mut rng, n, losses);
                let mut buf = orig.clone();
                let mut present = lose(&code, &mut buf, fl, &lost, &mut rng);
                code.reconstruct_data(&mut buf, fl, &mut present)
                    .unwrap_or_else(|e| panic!("{scheme} N={n} lost {lost:?}: {e}"));
                let data = code.data_fragments() * fl;
                assert_eq!(&buf[..data], &orig[..data], "{scheme} N={n} lost {lost:?}");
                assert!(present[..code.data_fragments()].iter().all(|&ok| ok));
            }
        }
    }
}

#[test]
fn every_pattern_at_tolerance_round_trips_for_small_counts() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for scheme in SCHEMES {
        for n in [2, 4, 7] {
            let code = code(scheme, n);
            let (orig, fl) = encoded(&code, 5000, &mut rng);
            for mask in 0u64..1 << n {
                if mask.count_ones() as usize != code.tolerance() {
                    continue;
                }
                let lost: Vec<usize> = (0..n).filter(|p| mask & 1 << p != 0).collect();
                let mut buf = orig.clone();
                let mut present = lose(&code, &mut buf, fl, &lost, &mut rng);
                code.reconstruct_data(&mut buf, fl, &mut present)
                    .expect("decodes");
                let data = code.data_fragments() * fl;
                assert_eq!(&buf[..data], &orig[..data], "{scheme} N={n} lost {lost:?}");
            }
        }
    }
}

#[test]
fn one_past_tolerance_can_be_unrecoverable() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for scheme in SCHEMES {
        for n in SUPPLIER_COUNTS {
            let code = code(scheme, n);
            let (orig, fl) = encoded(&code, 10_000, &mut rng);
            let lost: Vec<usize> = match code.ecc_map() {
                Some(map) => {
                    let p = map
                        .min_failing_pattern(code.tolerance() + 1)
                        .expect("the tolerance is exact");
                    (0..n).filter(|i| p.lost & 1 << i != 0).collect()
                }
                None => (0..=code.tolerance()).collect(),
            };
            assert_eq!(lost.len(), code.tolerance() + 1);
            let mut buf = orig.clone();
            let mut present = lose(&code, &mut buf, fl, &lost, &mut rng);
            let before = buf.clone();
            let flags_before = present.clone();
            match code.reconstruct_data(&mut buf, fl, &mut present) {
                Err(EccError::Unrecoverable {
                    missing_data,
                    lost_positions,
                }) => {
                    assert!(!missing_data.is_empty());
                    assert_eq!(lost_positions, lost);
                    let e = EccError::Unrecoverable {
                        missing_data,
                        lost_positions,
                    };
                    assert!(e.to_string().starts_with("cannot recover data fragments"));
                }
                other => panic!("{scheme} N={n} lost {lost:?}: {other:?}"),
            }
            assert!(buf == before, "a failed reconstruction must not write");
            assert_eq!(present, flags_before);
        }
    }
}

/// The obvious rebuild set: the lost parity's members, plus the first
/// parity covering the lost data whose other members are all available.
fn naive_plan(code: &Code, p: usize, available: &[bool]) -> Option<Vec<usize>> {
    let n = code.suppliers();
    if code.scheme() == Scheme::ReedSolomon {
        return Some((0..code.data_fragments()).collect());
    }
    let mut set: Vec<usize> = code.parity_members(p).to_vec();
    if set.iter().any(|&f| !available[f]) {
        return None;
    }
    let j = (0..n).find(|&j| {
        j != p
            && available[n + j]
            && code.parity_members(j).contains(&p)
            && code
                .parity_members(j)
                .iter()
                .all(|&m| m == p || available[m])
    })?;
    set.push(n + j);
    set.extend(code.parity_members(j).iter().filter(|&&m| m != p));
    set.sort_unstable();
    set.dedup();
    Some(set)
}

#[test]
fn rebuild_plans_regenerate_exact_bytes() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for scheme in SCHEMES {
        for n in SUPPLIER_COUNTS {
            let code = code(scheme, n);
            let (orig, fl) = encoded(&code, 50_000, &mut rng);
            for round in 0..20 {
                let losses = 1 + round % code.tolerance();
                let lost = random_positions(&mut rng, n, losses);
                let p = lost[rng.random_range(0..lost.len())];
                let mut available = vec![true; code.fragment_count()];
                for &q in &lost {
                    for f in code.position_fragments(q) {
                        available[f] = false;
                    }
                }
                let plan = code
                    .rebuild_plan(p, &available)
                    .unwrap_or_else(|e| panic!("{scheme} N={n} p={p} lost {lost:?}: {e}"));
                assert!(plan.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
                assert!(plan.iter().all(|&f| available[f]));
                if let Some(naive) = naive_plan(&code, p, &available) {
                    assert!(
                        plan.len() <= naive.len(),
                        "{scheme} N={n} p={p}: {plan:?} larger than {naive:?}"
                    );
                }
                // Only the planned fragments hold real bytes.
                let mut buf = vec![0u8; orig.len()];
                rng.fill_bytes(&mut buf);
                let mut present = vec![false; code.fragment_count()];
                for &f in &plan {
                    buf[f * fl..(f + 1) * fl].copy_from_slice(&orig[f * fl..(f + 1) * fl]);
                    present[f] = true;
                }
                code.reconstruct_position(p, &mut buf, fl, &mut present)
                    .unwrap_or_else(|e| panic!("{scheme} N={n} p={p} plan {plan:?}: {e}"));
                for f in code.position_fragments(p) {
                    assert!(present[f]);
                    assert!(
                        buf[f * fl..(f + 1) * fl] == orig[f * fl..(f + 1) * fl],
                        "{scheme} N={n} p={p}: fragment {f} differs"
                    );
                }
            }
        }
    }
}

#[test]
fn rebuild_with_everything_else_available_is_small() {
    for n in SUPPLIER_COUNTS {
        let code = code(Scheme::Xor, n);
        let mut available = vec![true; code.fragment_count()];
        for p in 0..n {
            available[p] = false;
            available[n + p] = false;
            let plan = code.rebuild_plan(p, &available).expect("plan");
            let naive = naive_plan(&code, p, &available).expect("naive plan");
            assert!(plan.len() <= naive.len());
            assert_eq!(
                plan.iter()
                    .filter(|&&f| code.fragment_kind(f) == FragmentKind::Parity)
                    .count(),
                1,
                "N={n} p={p}: one parity equation suffices"
            );
            available[p] = true;
            available[n + p] = true;
        }
    }
}

#[test]
fn rebuild_plan_reports_impossible_rebuilds() {
    for scheme in SCHEMES {
        for n in SUPPLIER_COUNTS {
            let code = code(scheme, n);
            let available = vec![false; code.fragment_count()];
            match code.rebuild_plan(0, &available) {
                Err(EccError::Unrecoverable { lost_positions, .. }) => {
                    assert_eq!(lost_positions, (0..n).collect::<Vec<_>>());
                }
                other => panic!("{scheme} N={n}: {other:?}"),
            }
        }
    }
}

#[test]
fn reed_solomon_two_suppliers_is_a_one_of_two_code() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let code = code(Scheme::ReedSolomon, 2);
    assert_eq!((code.data_fragments(), code.tolerance()), (1, 1));
    let (orig, fl) = encoded(&code, 1000, &mut rng);
    for p in 0..2 {
        let mut buf = orig.clone();
        let mut present = lose(&code, &mut buf, fl, &[p], &mut rng);
        code.reconstruct_position(p, &mut buf, fl, &mut present)
            .expect("rebuild");
        assert_eq!(buf, orig);
    }
}

#[test]
fn position_fragments_match_fragment_positions() {
    for scheme in SCHEMES {
        for n in SUPPLIER_COUNTS {
            let code = code(scheme, n);
            let mut seen = vec![false; code.fragment_count()];
            for p in 0..n {
                for f in code.position_fragments(p) {
                    assert_eq!(code.fragment_position(f), p);
                    assert!(!seen[f]);
                    seen[f] = true;
                }
            }
            assert!(seen.into_iter().all(|s| s));
        }
    }
}
