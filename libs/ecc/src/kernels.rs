//! Helpers of the generated encode kernels in `kernels_gen.rs` (see
//! [`crate::kernelgen`]): 64-byte chunks, which LLVM turns into one AVX-512
//! register (two AVX2 ones) per chunk. Everything is
//! `#[inline(always)]` so each run-time dispatch target of [`crate::xor`]
//! compiles its own copy.
//!
//! The kernels address fragments through raw pointers: with 2N slices the
//! bounds checks (a compare and branch per fragment per column, against
//! lengths LLVM keeps on the stack) cost N = 64 a fifth of its speed. The
//! one check that makes every access sound is [`frag_ptrs`]'s.

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
/// If `buf` is shorter than `N * fl` bytes: this is the check the kernels'
/// unchecked accesses rely on.
#[inline(always)]
pub(crate) fn frag_ptrs<const N: usize>(buf: &[u8], fl: usize) -> [*const u8; N] {
    assert!(
        buf.len() >= N * fl,
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
        buf.len() >= N * fl,
        "{N} fragments of {fl} bytes need a larger buffer"
    );
    let base = buf.as_mut_ptr();
    std::array::from_fn(|k| base.wrapping_add(k * fl))
}
