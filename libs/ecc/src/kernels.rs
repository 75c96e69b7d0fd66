//! Helpers of the generated encode kernels in `kernels_gen.rs` (see
//! [`crate::kernelgen`]): 64-byte chunks, which LLVM turns into one AVX-512
//! register (two AVX2 ones) per chunk. Everything is
//! `#[inline(always)]` so each run-time dispatch target of [`crate::xor`]
//! compiles its own copy.
//!
//! The kernels address fragments through raw pointers: with 2N slices the
//! bounds checks (a compare and branch per fragment per column, against
//! lengths LLVM keeps on the stack) cost N = 64 a fifth of its speed. The
//! one check that makes every access sound is [`frag_ptrs`]'s. This file
//! and the generated `kernels_gen.rs` hold the crate's `unsafe`, besides
//! the CPU-feature dispatch in `xor.rs`.

/// One 64-byte column chunk of a fragment. Plain bytes rather than `u64`
/// lanes: LLVM turns byte arrays into whole-register loads, XORs (merged
/// into three-way `vpternlogq`) and stores, where eight `u64` lanes built
/// with `from_ne_bytes` stayed scalar in kernels this large.
pub(crate) type V = [u8; 64];

/// The chunk at `p + at`.
///
/// # Safety
///
/// The 64 bytes from `p + at` must be readable.
#[inline(always)]
pub(crate) unsafe fn ld(p: *const u8, at: usize) -> V {
    // SAFETY: the caller keeps the 64 bytes in bounds; `V` has alignment 1.
    unsafe { p.add(at).cast::<V>().read_unaligned() }
}

/// Stores chunk `v` at `p + at`.
///
/// # Safety
///
/// The 64 bytes from `p + at` must be writable and borrowed by nothing else.
#[inline(always)]
pub(crate) unsafe fn st(p: *mut u8, at: usize, v: V) {
    // SAFETY: as for `ld`, and the caller holds the only access.
    unsafe { p.add(at).cast::<V>().write_unaligned(v) }
}

/// `a ^ b`, byte by byte.
#[inline(always)]
pub(crate) fn x(a: V, b: V) -> V {
    let mut out = a;
    for (o, b) in out.iter_mut().zip(b) {
        *o ^= b;
    }
    out
}

/// Pointers to the `N` fragments of `fl` bytes at the start of `buf`.
///
/// # Panics
///
/// If `buf` is shorter than `N * fl` bytes (or that overflows): this is the
/// check the kernels' unchecked accesses rely on.
#[inline(always)]
pub(crate) fn frag_ptrs<const N: usize>(buf: &[u8], fl: usize) -> [*const u8; N] {
    assert!(
        holds::<N>(buf.len(), fl),
        "{N} fragments of {fl} bytes need a larger buffer"
    );
    let base = buf.as_ptr();
    std::array::from_fn(|k| base.wrapping_add(k * fl))
}

/// Pointers to the `N` fragments of `fl` bytes at the start of `buf`, for
/// writing.
///
/// # Panics
///
/// As [`frag_ptrs`].
#[inline(always)]
pub(crate) fn frag_ptrs_mut<const N: usize>(buf: &mut [u8], fl: usize) -> [*mut u8; N] {
    assert!(
        holds::<N>(buf.len(), fl),
        "{N} fragments of {fl} bytes need a larger buffer"
    );
    let base = buf.as_mut_ptr();
    std::array::from_fn(|k| base.wrapping_add(k * fl))
}

/// Whether `len` bytes hold `N` fragments of `fl` bytes, a multiple of 64
/// (the kernels leave a shorter tail alone; `Code::encode` refuses such
/// lengths before any kernel runs).
#[inline(always)]
fn holds<const N: usize>(len: usize, fl: usize) -> bool {
    debug_assert!(
        fl.is_multiple_of(64),
        "fragment length {fl} is not a multiple of 64"
    );
    N.checked_mul(fl).is_some_and(|need| len >= need)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "need a larger buffer")]
    fn a_fragment_length_whose_total_overflows_is_refused() {
        // 64 * 2^58 wraps to 0 in release builds: the check must not.
        let _ = frag_ptrs::<64>(&[], 1 << 58);
    }

    #[test]
    #[should_panic(expected = "need a larger buffer")]
    fn a_buffer_one_byte_short_is_refused() {
        let mut buf = vec![0u8; 4 * 128 - 1];
        let _ = frag_ptrs_mut::<4>(&mut buf, 128);
    }
}
