//! [`AlignedBuf`]: a byte buffer whose contents start on a cache line.

use std::ops::{Deref, DerefMut};

/// The alignment of an [`AlignedBuf`]'s contents: one cache line, and one
/// 64-byte chunk of the encode kernels.
pub const ALIGN: usize = 64;

/// A growable byte buffer whose first byte sits on a 64-byte boundary
/// (whenever the platform can say where that is; otherwise it is merely a
/// buffer).
///
/// The buffer a block is encoded in should be one: [`crate::Code::fragment_len`]
/// is a multiple of 64, so every fragment then starts on a cache line and
/// the encoder's 64-byte loads and stores never straddle two. With the
/// 16-byte offset a large `Vec<u8>` gets from the allocator, XOR encode at
/// N = 64 measured a third slower (see `docs/performance.md`). It derefs to
/// `[u8]` and appends through [`std::io::Write`], like a `Vec<u8>`.
#[derive(Default)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// An empty buffer; nothing is allocated until it grows.
    pub fn new() -> Self {
        Self::default()
    }

    /// `len` zero bytes. The new allocation is zeroed already (a large one
    /// by fresh pages from the allocator) and is not written again, so a
    /// block opener's room for every fragment costs nothing for the parity
    /// fragments it never reads.
    pub fn zeroed(len: usize) -> Self {
        let mut buf = Self::new();
        buf.reserve(len);
        buf.len = len;
        buf
    }

    /// Empties the buffer, keeping its memory for reuse.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Grows or shrinks the contents to `len` bytes, new bytes set to `value`.
    pub fn resize(&mut self, len: usize, value: u8) {
        if len > self.len {
            self.reserve(len);
            let at = self.start;
            self.raw[at + self.len..at + len].fill(value);
        }
        self.len = len;
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        self.reserve(end);
        let at = self.start;
        self.raw[at + self.len..at + end].copy_from_slice(bytes);
        self.len = end;
    }

    /// Makes room for `len` bytes of contents in all (not `len` more), so
    /// that growing to that length later moves nothing.
    pub fn make_room(&mut self, len: usize) {
        self.reserve(len);
    }

    /// Makes room for `len` bytes of contents, moving them to a new, aligned
    /// allocation (of at least twice the current contents) when there is not.
    fn reserve(&mut self, len: usize) {
        if self.start + len <= self.raw.len() {
            return;
        }
        let room = len.max(self.len.saturating_mul(2));
        if self.len == 0 {
            // Nothing to move: the old allocation goes before the new one
            // is made, not after.
            self.raw = Vec::new();
            self.start = 0;
        }
        let mut raw = vec![0u8; room + ALIGN - 1];
        // `align_offset` may decline (usize::MAX); the contents are then
        // merely unaligned, which costs speed, not correctness.
        let start = match raw.as_ptr().align_offset(ALIGN) {
            s if s < ALIGN => s,
            _ => 0,
        };
        raw[start..start + self.len].copy_from_slice(&self.raw[self.start..self.start + self.len]);
        self.raw = raw;
        self.start = start;
    }
}

impl Clone for AlignedBuf {
    /// A new aligned buffer with the same contents (not the spare room).
    fn clone(&self) -> Self {
        let mut copy = Self::new();
        copy.extend_from_slice(self);
        copy
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

impl std::io::Write for AlignedBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn contents_stay_aligned_and_intact_as_the_buffer_grows() {
        let mut buf = AlignedBuf::new();
        let mut want = Vec::new();
        for round in 0..200u32 {
            let piece: Vec<u8> = (0..round * 37 % 5000).map(|i| (i ^ round) as u8).collect();
            buf.write_all(&piece).unwrap();
            want.extend_from_slice(&piece);
            assert_eq!(&buf[..], &want[..]);
            if !buf.is_empty() {
                assert_eq!(buf.as_ptr() as usize % ALIGN, 0, "round {round}");
            }
        }
        buf.resize(want.len() + 100, 7);
        assert!(buf[want.len()..].iter().all(|&b| b == 7));
        buf.resize(10, 0);
        assert_eq!(&buf[..], &want[..10]);
        buf.clear();
        assert!(buf.is_empty());
        buf.resize(64, 0);
        assert!(
            buf.iter().all(|&b| b == 0),
            "bytes regrown after a shrink are reset"
        );
        for len in [0, 100, 8 << 20] {
            let z = AlignedBuf::zeroed(len);
            assert_eq!(z.len(), len);
            assert!(z.iter().all(|&b| b == 0), "zeroed({len})");
            assert!(len == 0 || (z.as_ptr() as usize).is_multiple_of(ALIGN));
        }
        buf.extend_from_slice(b"abc");
        let copy = buf.clone();
        assert_eq!(&copy[..], &buf[..]);
        assert_eq!(copy.as_ptr() as usize % ALIGN, 0);
    }
}
