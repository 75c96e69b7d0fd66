//! Erasure-coding throughput on a 4 MiB block, in block bytes per second,
//! next to a plain 4 MiB memcpy as the baseline.
//!
//! The block is exactly 4,194,304 bytes, zero-padded into data fragments of
//! `Code::fragment_len(4 MiB)` bytes as the block format stores it (233,024
//! for XOR N = 18, 65,600 for N = 64); throughput counts the 4 MiB only.
//! Every buffer, the memcpy's too, is an `AlignedBuf`, as in the pipeline.
//!
//! Run: `cargo bench -p bitdust-ecc` (ratios: `ecc-bench-ratio` binary).

use std::hint::black_box;
use std::time::Duration;

use bitdust_ecc::{AlignedBuf, Code, Scheme};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BLOCK: usize = 4 << 20;

/// An encoded random block for `code`: (buffer, fragment length).
fn encoded(code: &Code) -> (AlignedBuf, usize) {
    let fl = code.fragment_len(BLOCK);
    let mut buf = AlignedBuf::zeroed(code.fragment_count() * fl);
    ChaCha8Rng::seed_from_u64(42).fill_bytes(&mut buf[..BLOCK]);
    code.encode(&mut buf, fl).expect("encode");
    (buf, fl)
}

/// Fragment flags for losing the decode benchmark's worst case at the
/// tolerance: for XOR the costliest pattern (most XOR work, then the longest
/// chain of dependent recoveries) among 2000 seeded samples, for
/// Reed-Solomon the first `tolerance` positions, i.e. as many original
/// shards as possible.
fn worst_case_flags(code: &Code) -> Vec<bool> {
    let lost = match code.ecc_map() {
        Some(map) => map
            .costliest_pattern(code.tolerance(), 2000, 0xDEC0DE)
            .expect("patterns at the tolerance decode"),
        None => (1u64 << code.tolerance()) - 1,
    };
    let mut flags = vec![true; code.fragment_count()];
    for p in (0..code.suppliers()).filter(|p| lost & 1 << p != 0) {
        for f in code.position_fragments(p) {
            flags[f] = false;
        }
    }
    flags
}

fn ecc(c: &mut Criterion) {
    let mut group = c.benchmark_group("ecc-4MiB");
    group.throughput(Throughput::Bytes(BLOCK as u64));
    group.sample_size(30);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));

    let mut src = AlignedBuf::zeroed(BLOCK);
    src.fill(7);
    let mut dst = AlignedBuf::zeroed(BLOCK);
    group.bench_function("memcpy", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)));
    });

    for (scheme, tag) in [(Scheme::Xor, "xor"), (Scheme::ReedSolomon, "rs")] {
        for n in [18, 64] {
            let code = Code::new(scheme, n).expect("supported");
            let (mut buf, fl) = encoded(&code);
            group.bench_function(format!("{tag}-encode-N{n}"), |b| {
                b.iter(|| code.encode(black_box(&mut buf), fl).expect("encode"));
            });
            let flags = worst_case_flags(&code);
            let mut present = flags.clone();
            group.bench_function(format!("{tag}-decode-N{n}-lose{}", code.tolerance()), |b| {
                b.iter(|| {
                    present.copy_from_slice(&flags);
                    code.reconstruct_data(black_box(&mut buf), fl, &mut present)
                        .expect("decode");
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, ecc);
criterion_main!(benches);
