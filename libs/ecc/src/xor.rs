//! The XOR engine: runs "fragment `dst` = XOR of fragments `srcs`" steps
//! over one contiguous fragment buffer, in place and without allocating.
//!
//! Work is tiled: every step runs over the first tile of its fragments, then
//! every step over the next tile, and so on, so one tile of the inputs stays
//! in cache while every output of that tile is computed, instead of each
//! output streaming the whole 4 MiB block through the cache again. Decode
//! steps may read what an earlier step wrote; that stays correct because a
//! step only ever reads the same byte range of other fragments.
//!
//! An encode can also run *staged* ([`Staged`]): each tile first builds
//! temporaries in a stack scratch (a copy of one data fragment, or the XOR
//! of a pair of them shared by several parities), then every parity of the
//! tile is folded from the scratch. Shared pairs cut the loads per parity,
//! which is what bounds encode speed, and the scratch also sidesteps cache
//! set aliasing between fragments (see [`aliases`]).
//!
//! Encodes of most maps skip all this: [`run_kernel`] runs the generated
//! register-blocked kernel of the map (see [`crate::kernelgen`]) through the
//! same run-time dispatch, when [`kernel_pays`] for the fragment length.
//!
//! The inner loops fold up to [`GROUP`] sources per pass over 32-byte chunks
//! handled as `[u64; 4]`, which LLVM turns into SIMD loads and XORs; the
//! loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at run
//! time.

/// Bytes of each fragment per tile when encoding straight from the buffer (a
/// multiple of 64). Measured best on a Zen 4 core for N = 18: smaller tiles
/// lose more to per-step setup than they gain in cache hits, since one tile
/// of all 18 data fragments (72 KiB) still sits in L2.
const ENCODE_TILE: usize = 4096;

/// Bytes of each fragment per tile for mixed (decode) plans, which touch
/// only a few fragments per tile.
const TILE: usize = 8192;

/// Bytes of stack scratch for staged encodes: 2 KiB per temporary for
/// N = 64, which measured best (64 KiB gave 1 KiB tiles and 10% less speed,
/// 256 KiB no more). Encoding thus needs this much stack on the calling
/// thread, far below the 2 MiB Rust gives spawned threads.
const SCRATCH: usize = 128 * 1024;

/// Sources folded into the destination per pass.
const GROUP: usize = 12;

/// Bytes per inner-loop chunk (four `u64` lanes).
const CHUNK: usize = 32;

/// One step: fragment `dst` becomes the XOR of the fragments `srcs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) dst: usize,
    pub(crate) srcs: Vec<usize>,
}

/// A staged encode program over a buffer whose first `split` fragments are
/// the inputs and the rest the outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Staged {
    pub(crate) split: usize,
    /// Temporary `t` is the XOR of these input fragments.
    pub(crate) temps: Vec<Vec<usize>>,
    /// Output steps; their `srcs` name temporaries, their `dst` fragments.
    pub(crate) outputs: Vec<Step>,
}

/// Runs `steps` in order over `buf`, whose fragments are `fragment_len`
/// bytes each (a multiple of 64). Every index must name a fragment in `buf`,
/// and no step may list its own `dst` as a source.
pub(crate) fn run(buf: &mut [u8], fragment_len: usize, steps: &[Step]) {
    dispatch::run(buf, fragment_len, Job::Mixed(steps));
}

/// Like [`run`] for plans whose sources all come before fragment `split`
/// and whose destinations all come at or after it (an encode), which lets
/// the buffer be split once instead of at every step.
pub(crate) fn run_split(buf: &mut [u8], fragment_len: usize, split: usize, steps: &[Step]) {
    debug_assert!(
        steps
            .iter()
            .all(|s| s.dst >= split && s.srcs.iter().all(|&x| x < split))
    );
    dispatch::run(buf, fragment_len, Job::Split(split, steps));
}

/// Runs a staged encode program.
pub(crate) fn run_staged(buf: &mut [u8], fragment_len: usize, staged: &Staged) {
    debug_assert!(staged.temps.len() * 64 <= SCRATCH);
    dispatch::run(buf, fragment_len, Job::Staged(staged));
}

/// Runs the generated register-blocked encode kernel of the `suppliers`
/// map (see [`crate::kernelgen`]) over a buffer of `2 * suppliers`
/// fragments. False, with nothing written, if there is no kernel for it.
pub(crate) fn run_kernel(buf: &mut [u8], fragment_len: usize, suppliers: usize) -> bool {
    let mut done = false;
    dispatch::run(buf, fragment_len, Job::Kernel(suppliers, &mut done));
    done
}

/// Whether the generated column kernel beats the tiled loops for `suppliers`
/// fragments of `fragment_len` bytes. The kernel touches the same offset of
/// all `2N` fragments per 64-byte column; fragment `i`'s line falls into L1
/// set `(i * fragment_len / 64 + c) mod 64`, so when `fragment_len / 64` is
/// a multiple of 2, 4, .. 64 those lines crowd into 32, 16, .. 1 of the 64
/// sets of the 8-way L1 and evict each other (and the lines the prefetcher
/// brought in) before use. [`crate::Code::fragment_len`] always gives an odd
/// `fragment_len / 64`, i.e. all 64 sets and no crowding; other lengths only
/// come from callers that pick their own. Measured on Zen 4: the kernel
/// still wins by far with up to 13 lines per set (N = 13 or 26 at multiples
/// of 1024 or 2048: 1.1-2.7x) and loses with 14 or more (N = 7 or 18 at
/// multiples of 4096 or 2048: 0.5-0.9x). N = 64 competes with the staged
/// encoder, which is slow itself (8-9 GB/s), so its kernel wins up to 32
/// lines per set (4 sets: 11-12 vs 8-9 GB/s), ties at 64 and loses at 128
/// (64 KiB fragments: 5 vs 9 GB/s).
pub(crate) fn kernel_pays(suppliers: usize, fragment_len: usize) -> bool {
    let sets = 4096 / (1usize << fragment_len.trailing_zeros().min(12));
    let per_set = (2 * suppliers).div_ceil(sets);
    per_set <= 13 || (suppliers > 32 && per_set <= 32)
}

/// Whether the same offset of consecutive fragments falls into few L1 cache
/// sets (64 sets of 64 bytes): true when `fragment_len` is a multiple of
/// 512 (at most 8 sets), e.g. 64 KiB for a 4 MiB block over 64 fragments
/// under the old, unpadded fragment length. Ten-plus sources per step then
/// evict each other from the 8-way cache on every chunk, so encodes that
/// do not run a kernel should run staged. Never true for the lengths
/// [`crate::Code::fragment_len`] gives (an odd number of 64-byte lines).
pub(crate) fn aliases(fragment_len: usize) -> bool {
    fragment_len.is_multiple_of(512)
}

/// Most temporaries a staged program may use (one 64-byte tile each).
pub(crate) const MAX_TEMPS: usize = SCRATCH / 64;

/// What to run.
enum Job<'a> {
    /// Any step may read any fragment but its own.
    Mixed(&'a [Step]),
    /// Sources before the fragment index, destinations from it on.
    Split(usize, &'a [Step]),
    Staged(&'a Staged),
    /// The generated kernel of a map; sets the flag if there is one.
    Kernel(usize, &'a mut bool),
}

/// Picks the widest vector instructions the CPU has for the same plain code.
mod dispatch {
    #![allow(unsafe_code)]

    use super::{Job, run_job};

    pub(super) fn run(buf: &mut [u8], fragment_len: usize, job: Job<'_>) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F, checked just above.
                unsafe { run_avx512(buf, fragment_len, job) };
                return;
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { run_avx2(buf, fragment_len, job) };
                return;
            }
        }
        run_job(buf, fragment_len, job);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx2(buf: &mut [u8], fragment_len: usize, job: Job<'_>) {
        run_job(buf, fragment_len, job);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn run_avx512(buf: &mut [u8], fragment_len: usize, job: Job<'_>) {
        run_job(buf, fragment_len, job);
    }
}

/// The tiled loops; always inlined so each dispatch target compiles its own copy.
#[inline(always)]
fn run_job(buf: &mut [u8], fragment_len: usize, job: Job<'_>) {
    match job {
        Job::Mixed(steps) => {
            let mut start = 0;
            while start < fragment_len {
                let len = TILE.min(fragment_len - start);
                for step in steps {
                    mixed_step(buf, fragment_len, step, start, len);
                }
                start += len;
            }
        }
        Job::Split(split, steps) => {
            let (inputs, outputs) = buf.split_at_mut(split * fragment_len);
            let mut start = 0;
            while start < fragment_len {
                let len = ENCODE_TILE.min(fragment_len - start);
                for step in steps {
                    let at = (step.dst - split) * fragment_len + start;
                    let dst = &mut outputs[at..at + len];
                    let src = |s: usize| -> &[u8] {
                        let at = s * fragment_len + start;
                        &inputs[at..at + len]
                    };
                    fold_all(dst, &step.srcs, src);
                }
                start += len;
            }
        }
        Job::Staged(staged) => run_staged_tiles(buf, fragment_len, staged),
        Job::Kernel(n, done) => {
            let (inputs, outputs) = buf.split_at_mut(n * fragment_len);
            *done = crate::kernels_gen::encode(n, inputs, outputs, fragment_len);
        }
    }
}

#[inline(always)]
fn run_staged_tiles(buf: &mut [u8], fragment_len: usize, staged: &Staged) {
    let split = staged.split;
    let (inputs, outputs) = buf.split_at_mut(split * fragment_len);
    let mut scratch = [0u8; SCRATCH];
    let tile = (SCRATCH / staged.temps.len().max(1) / 64 * 64).max(64);
    let mut start = 0;
    while start < fragment_len {
        let len = tile.min(fragment_len - start);
        for (slot, srcs) in scratch.chunks_exact_mut(len).zip(&staged.temps) {
            let src = |s: usize| -> &[u8] {
                let at = s * fragment_len + start;
                &inputs[at..at + len]
            };
            fold_all(slot, srcs, src);
        }
        for step in &staged.outputs {
            let at = (step.dst - split) * fragment_len + start;
            let dst = &mut outputs[at..at + len];
            let src = |t: usize| -> &[u8] { &scratch[t * len..(t + 1) * len] };
            fold_all(dst, &step.srcs, src);
        }
        start += len;
    }
}

/// Computes bytes `start..start + len` of one step of a mixed plan.
#[inline(always)]
fn mixed_step(buf: &mut [u8], fragment_len: usize, step: &Step, start: usize, len: usize) {
    // Splitting around the destination gives a mutable destination next to
    // shared sources without copying or unsafe code.
    let (before, rest) = buf.split_at_mut(step.dst * fragment_len);
    let (dst_frag, after) = rest.split_at_mut(fragment_len);
    let dst = &mut dst_frag[start..start + len];
    let src = |s: usize| -> &[u8] {
        let (half, base): (&[u8], usize) = if s < step.dst {
            (before, s * fragment_len)
        } else {
            (after, (s - step.dst - 1) * fragment_len)
        };
        &half[base + start..base + start + len]
    };
    fold_all(dst, &step.srcs, src);
}

/// `dst` = XOR of `src(s)` over `srcs`, in passes of up to [`GROUP`] sources.
#[inline(always)]
fn fold_all<'a>(dst: &mut [u8], srcs: &[usize], src: impl Fn(usize) -> &'a [u8]) {
    macro_rules! arms {
        ($group:expr, $keep:expr, $($n:literal: [$($v:ident),+]),+) => {
            match *$group {
                $([$($v),+] => fold(dst, [$(src($v)),+], $keep),)+
                _ => {}
            }
        };
    }
    let mut keep = false;
    for group in srcs.chunks(GROUP) {
        arms!(group, keep,
            12: [a, b, c, d, e, f, g, h, i, j, k, l],
            11: [a, b, c, d, e, f, g, h, i, j, k],
            10: [a, b, c, d, e, f, g, h, i, j],
            9: [a, b, c, d, e, f, g, h, i],
            8: [a, b, c, d, e, f, g, h],
            7: [a, b, c, d, e, f, g],
            6: [a, b, c, d, e, f],
            5: [a, b, c, d, e],
            4: [a, b, c, d],
            3: [a, b, c],
            2: [a, b],
            1: [a]
        );
        keep = true;
    }
    if !keep {
        dst.fill(0);
    }
}

/// `dst = (keep ? dst : 0) ^ srcs[0] ^ .. ^ srcs[K-1]`, all the same length.
#[inline(always)]
fn fold<const K: usize>(dst: &mut [u8], srcs: [&[u8]; K], keep: bool) {
    let body = dst.len() - dst.len() % CHUNK;
    // Every slice is exactly `body` long and the loop runs while
    // `off + CHUNK <= body`, so LLVM can drop all the bounds checks inside.
    let out = &mut dst[..body];
    let whole = srcs.map(|s| &s[..body]);
    let mut off = 0;
    while off + CHUNK <= body {
        let mut acc = if keep {
            load(&out[off..off + CHUNK])
        } else {
            [0u64; 4]
        };
        for s in &whole {
            let v = load(&s[off..off + CHUNK]);
            for lane in 0..4 {
                acc[lane] ^= v[lane];
            }
        }
        store(&mut out[off..off + CHUNK], acc);
        off += CHUNK;
    }
    // Fragments are multiples of 64 bytes, so this tail only runs for
    // callers outside the codec (kept for completeness).
    for off in body..dst.len() {
        let mut b = if keep { dst[off] } else { 0 };
        for s in &srcs {
            b ^= s[off];
        }
        dst[off] = b;
    }
}

#[inline(always)]
fn load(bytes: &[u8]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (lane, word) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        *lane = u64::from_ne_bytes(w);
    }
    out
}

#[inline(always)]
fn store(bytes: &mut [u8], words: [u64; 4]) {
    for (word, lane) in bytes.chunks_exact_mut(8).zip(words) {
        word.copy_from_slice(&lane.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_fragment_lengths_never_alias() {
        for lines in (1..4000).step_by(2) {
            let fl = lines * 64;
            assert!(!aliases(fl), "fl={fl}");
            for n in crate::SUPPLIER_COUNTS {
                assert!(kernel_pays(n, fl), "n={n} fl={fl}");
            }
        }
        // Lines crowding into one set: only the small maps keep the kernel.
        assert!(aliases(65_536));
        assert!(kernel_pays(4, 65_536));
        assert!(!kernel_pays(18, 65_536));
        assert!(!kernel_pays(64, 65_536));
        // Four sets (fragment_len / 64 an odd multiple of 16).
        assert!(kernel_pays(64, 65 * 1024));
        assert!(!kernel_pays(64, 33 * 2048));
        assert!(!kernel_pays(18, 33 * 2048));
    }

    #[test]
    fn matches_bytewise_xor() {
        let fl = TILE + 192;
        let n = 9;
        let mut buf: Vec<u8> = (0..n * fl).map(|i| (i * 7 + i / 13) as u8).collect();
        let srcs = vec![0, 2, 3, 5, 7, 8];
        let mut expect = vec![0u8; fl];
        for &s in &srcs {
            for k in 0..fl {
                expect[k] ^= buf[s * fl + k];
            }
        }
        run(&mut buf, fl, &[Step { dst: 4, srcs }]);
        assert_eq!(&buf[4 * fl..5 * fl], &expect[..]);
    }

    #[test]
    fn odd_tail_is_handled() {
        let mut dst = [1u8; 37];
        fold(&mut dst, [&[2u8; 37][..], &[4u8; 37][..]], true);
        assert_eq!(dst, [7u8; 37]);
    }
}
