//! Times the erasure codes on a 4 MiB block with `std::time::Instant` and
//! prints each throughput as a ratio to a plain 4 MiB memcpy, the figure the
//! performance targets are stated in (XOR encode >= 0.5x, worst-case XOR
//! decode at tolerance >= 0.25x).
//!
//! The block is exactly 4,194,304 bytes, zero-padded into data fragments of
//! `Code::fragment_len(4 MiB)` bytes as the block format stores it (printed
//! as `fl`); throughput counts the 4 MiB only. The buffers, the memcpy's
//! too, are `AlignedBuf`s as in the pipeline; N = 64 is also timed in a
//! plain `Vec` to show what the alignment is worth.
//!
//! Run: `cargo run -p bitdust-ecc --release --bin ecc-bench-ratio`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bitdust_ecc::{AlignedBuf, Code, Scheme};

const BLOCK: usize = 4 << 20;

/// Median seconds per call of `f`, over batches of about 100 ms.
fn time(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_millis(100) {
        f();
        calls += 1;
    }
    let per_batch = calls.max(1);
    let mut samples: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            t.elapsed().as_secs_f64() / f64::from(per_batch)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn gbps(seconds: f64) -> f64 {
    BLOCK as f64 / seconds / 1e9
}

/// A block buffer for `code`, filled with pseudo-random data and encoded.
fn encoded(code: &Code) -> (AlignedBuf, usize) {
    let fl = code.fragment_len(BLOCK);
    let mut buf = AlignedBuf::zeroed(code.fragment_count() * fl);
    let mut x = 0x1234_5678_9abc_def0u64;
    for b in buf[..BLOCK].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    if let Err(e) = code.encode(&mut buf, fl) {
        panic!("encode failed: {e}");
    }
    (buf, fl)
}

/// Fragment flags with every fragment of the `lost` positions cleared.
fn flags_without(code: &Code, lost: u64) -> Vec<bool> {
    let mut flags = vec![true; code.fragment_count()];
    for p in 0..code.suppliers() {
        if lost & 1 << p != 0 {
            for f in code.position_fragments(p) {
                flags[f] = false;
            }
        }
    }
    flags
}

/// The decode benchmark's loss pattern: the costliest XOR pattern at the
/// tolerance among a fixed sample, or the first `tolerance` positions (all
/// original shards first) for Reed-Solomon.
pub fn worst_pattern(code: &Code) -> u64 {
    match code.ecc_map() {
        Some(map) => map
            .costliest_pattern(code.tolerance(), 2000, 0xDEC0DE)
            .unwrap_or_else(|| panic!("no decodable pattern at the tolerance")),
        None => (1u64 << code.tolerance()) - 1,
    }
}

fn main() {
    let mut src = AlignedBuf::zeroed(BLOCK);
    src.fill(7);
    let mut dst = AlignedBuf::zeroed(BLOCK);
    let memcpy = gbps(time(|| {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }));
    println!("memcpy 4 MiB: {memcpy:.2} GB/s");
    for scheme in [Scheme::Xor, Scheme::ReedSolomon] {
        for n in [18usize, 64] {
            let code = match Code::new(scheme, n) {
                Ok(c) => c,
                Err(e) => panic!("{e}"),
            };
            let (mut buf, fl) = encoded(&code);
            let enc = gbps(time(|| {
                if let Err(e) = code.encode(black_box(&mut buf), fl) {
                    panic!("{e}");
                }
            }));
            let lost = worst_pattern(&code);
            let flags = flags_without(&code, lost);
            let dec = gbps(time(|| {
                let mut present = flags.clone();
                if let Err(e) = code.reconstruct_data(black_box(&mut buf), fl, &mut present) {
                    panic!("{e}");
                }
            }));
            let t = code.tolerance();
            println!(
                "{scheme} encode N={n} (fl {fl}): {enc:.2} GB/s = {:.2} x memcpy",
                enc / memcpy
            );
            println!(
                "{scheme} decode N={n} (lose {t}): {dec:.2} GB/s = {:.2} x memcpy",
                dec / memcpy
            );
            if scheme == Scheme::Xor && n == 64 {
                // The same encode in a plain `Vec`, whose contents the
                // allocator starts 16 bytes past a cache line.
                let mut vec = buf.to_vec();
                let off = gbps(time(|| {
                    if let Err(e) = code.encode(black_box(&mut vec), fl) {
                        panic!("{e}");
                    }
                }));
                let skew = vec.as_ptr() as usize % bitdust_ecc::ALIGN;
                println!(
                    "{scheme} encode N={n} in a Vec ({skew} bytes past a line): {off:.2} GB/s = {:.2} x memcpy",
                    off / memcpy
                );
            }
        }
    }
}
