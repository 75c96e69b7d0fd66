//! Helpers of the generated encode kernels in `kernels_gen.rs` (see
//! [`crate::kernelgen`]): 64-byte chunks, which LLVM turns into one AVX-512
//! register (two AVX2 ones) per chunk. Everything is
//! `#[inline(always)]` so each run-time dispatch target of [`crate::xor`]
//! compiles its own copy.

/// One 64-byte column chunk of a fragment. Plain bytes rather than `u64`
/// lanes: LLVM turns byte arrays into whole-register loads, XORs (merged
/// into three-way `vpternlogq`) and stores, where eight `u64` lanes built
/// with `from_ne_bytes` stayed scalar in kernels this large.
pub(crate) type V = [u8; 64];

/// The chunk of `s` at byte `at`.
#[inline(always)]
pub(crate) fn ld(s: &[u8], at: usize) -> V {
    let mut out = [0u8; 64];
    out.copy_from_slice(&s[at..at + 64]);
    out
}

/// Stores chunk `v` into `s` at byte `at`.
#[inline(always)]
pub(crate) fn st(s: &mut [u8], at: usize, v: V) {
    s[at..at + 64].copy_from_slice(&v);
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

/// The `N` fragments of `fl` bytes at the start of `buf`.
#[inline(always)]
pub(crate) fn frags<const N: usize>(buf: &[u8], fl: usize) -> [&[u8]; N] {
    std::array::from_fn(|k| &buf[k * fl..(k + 1) * fl])
}

/// The `N` fragments of `fl` bytes at the start of `buf`, mutable.
#[inline(always)]
pub(crate) fn frags_mut<const N: usize>(buf: &mut [u8], fl: usize) -> [&mut [u8]; N] {
    let mut rest = buf;
    std::array::from_fn(|_| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(fl);
        rest = tail;
        head
    })
}
