//! Content-defined chunking (docs/snapshots.md, "Chunking").
//!
//! The cut points are FastCDC 2020's, from the `fastcdc` crate, pinned to
//! one exact version in the workspace manifest because cut points changed
//! between its releases: the tests below compare every cut with the
//! crate's own `StreamCDC` and pin the cut points of a fixed input, so a
//! change of crate version that moves them fails a test.
//!
//! [`Chunker`] only keeps one buffer of the largest chunk for a whole
//! backup and lends each chunk out of it, where `StreamCDC` allocates a
//! buffer per source and a vector per chunk: a tree of many files costs no
//! allocation per file.

use std::borrow::Cow;
use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};

/// Chunk size bounds, in bytes (each even; `min < avg < max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSizes {
    /// No chunk is shorter, but the last one of a source.
    pub min: usize,
    /// The size chunks tend to.
    pub avg: usize,
    /// No chunk is longer.
    pub max: usize,
}

/// File contents: about 1 MiB.
pub const FILE_CHUNKS: ChunkSizes = ChunkSizes {
    min: 256 << 10,
    avg: 1 << 20,
    max: 4 << 20,
};

/// A snapshot's metadata stream: about 64 KiB, so that a change in one
/// directory rewrites tens of KiB.
pub const META_CHUNKS: ChunkSizes = ChunkSizes {
    min: 16 << 10,
    avg: 64 << 10,
    max: 256 << 10,
};

/// Normalization level 1, as `StreamCDC::new`.
const LEVEL: Normalization = Normalization::Level1;

/// Cuts sources into content-defined chunks, one source after another.
pub struct Chunker {
    sizes: ChunkSizes,
    masks: [u64; 4],
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
    buf: Vec<u8>,
    /// Bytes of the current source in `buf`.
    len: usize,
    /// The length of the chunk last lent out, dropped at the next call.
    lent: usize,
    eof: bool,
}

impl Chunker {
    /// A chunker cutting chunks of `sizes`, its gear table seeded with
    /// `seed` (the backup's, [`bitdust_crypto::DedupKeys::gear_seed`]).
    pub fn new(sizes: ChunkSizes, seed: u64) -> Chunker {
        debug_assert!(sizes.min.is_multiple_of(2) && sizes.avg.is_multiple_of(2));
        debug_assert!(sizes.min < sizes.avg && sizes.avg < sizes.max);
        let (mask_s, mask_l) = select_masks(sizes.avg, LEVEL);
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker {
            sizes,
            masks: [mask_s, mask_l, mask_s << 1, mask_l << 1],
            gear,
            gear_ls,
            buf: Vec::new(),
            len: 0,
            lent: 0,
            eof: false,
        }
    }

    /// The sizes it cuts.
    pub fn sizes(&self) -> ChunkSizes {
        self.sizes
    }

    /// The length of the first chunk of `data`, which holds at least the
    /// largest chunk's worth of bytes or is the end of its source: the cut
    /// [`Chunker::next_chunk`] would make there, for a stream built in
    /// memory (a snapshot's metadata).
    pub fn cut(&self, data: &[u8]) -> usize {
        let window = &data[..data.len().min(self.sizes.max)];
        if window.is_empty() {
            return 0;
        }
        let [mask_s, mask_l, mask_s_ls, mask_l_ls] = self.masks;
        let (_, cut) = cut_gear(
            window,
            self.sizes.min,
            self.sizes.avg,
            self.sizes.max,
            mask_s,
            mask_l,
            mask_s_ls,
            mask_l_ls,
            &self.gear,
            &self.gear_ls,
        );
        cut.clamp(1, window.len())
    }

    /// Forgets the current source (what is left of it is not chunked):
    /// the next call to [`Chunker::next_chunk`] reads a new one.
    pub fn reset(&mut self) {
        self.len = 0;
        self.lent = 0;
        self.eof = false;
    }

    /// The next chunk of `source`, or `None` at its end (then the chunker is
    /// ready for the next source). Pass the same source until it ends, or
    /// call [`Chunker::reset`] first.
    pub fn next_chunk<R: Read + ?Sized>(&mut self, source: &mut R) -> io::Result<Option<&[u8]>> {
        if self.lent > 0 {
            self.buf.copy_within(self.lent..self.len, 0);
            self.len -= self.lent;
            self.lent = 0;
        }
        if self.buf.len() < self.sizes.max {
            self.buf.resize(self.sizes.max, 0);
        }
        while !self.eof && self.len < self.sizes.max {
            match source.read(&mut self.buf[self.len..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            }
        }
        if self.len == 0 {
            self.reset();
            return Ok(None);
        }
        // cut_gear returns the whole input when it is shorter than the
        // minimum, and never more than the maximum.
        let cut = self.cut(&self.buf[..self.len]);
        self.lent = cut;
        Ok(Some(&self.buf[..cut]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastcdc::v2020::StreamCDC;

    /// `len` pseudo-random bytes that are the same on every machine.
    fn fixed_input(len: usize, key: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new_keyed(&[key; 32])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn cuts(chunker: &mut Chunker, mut source: impl Read) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(c) = chunker.next_chunk(&mut source).unwrap() {
            out.push(c.len());
        }
        out
    }

    fn stream_cdc(data: &[u8], sizes: ChunkSizes, seed: u64) -> Vec<usize> {
        StreamCDC::with_level_and_seed(data, sizes.min, sizes.avg, sizes.max, LEVEL, seed)
            .map(|c| c.unwrap().length)
            .collect()
    }

    /// Hands out at most `n` bytes per read, as pipes and sockets do.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn cuts_are_the_crates_own_for_every_source_seed_and_read_size() {
        let data = fixed_input(23 << 20, 1);
        for (sizes, seed) in [
            (FILE_CHUNKS, 0),
            (FILE_CHUNKS, 0x5eed),
            (META_CHUNKS, 0x5eed),
            (META_CHUNKS, u64::MAX),
        ] {
            let mut c = Chunker::new(sizes, seed);
            // Several sources in a row through one chunker, some of them
            // read a little at a time.
            for (len, trickle) in [(data.len(), usize::MAX), (3 << 20, 4093), (0, 1), (100, 7)] {
                let src = &data[data.len() - len..];
                let want = stream_cdc(src, sizes, seed);
                let got = cuts(&mut c, Trickle(src, trickle));
                assert_eq!(got, want, "{sizes:?} seed {seed} len {len}");
                assert_eq!(got.iter().sum::<usize>(), len);
            }
        }
    }

    #[test]
    fn chunks_are_bounded_small_sources_are_one_chunk_and_empty_none() {
        let data = fixed_input(40 << 20, 2);
        let mut c = Chunker::new(FILE_CHUNKS, 9);
        let all = cuts(&mut c, &data[..]);
        let (last, body) = all.split_last().unwrap();
        assert!(
            body.iter()
                .all(|&l| (FILE_CHUNKS.min..=FILE_CHUNKS.max).contains(&l))
        );
        assert!(*last <= FILE_CHUNKS.max);
        let mean = data.len() / all.len();
        assert!((700 << 10..1400 << 10).contains(&mean), "mean chunk {mean}");
        // A zero-filled file has no content-defined cut: maximum chunks.
        let zeros = vec![0u8; 9 << 20];
        assert_eq!(cuts(&mut c, &zeros[..]), [4 << 20, 4 << 20, 1 << 20]);
        // Not padded: a small file is one chunk of its own length.
        assert_eq!(cuts(&mut c, &data[..1000]), [1000]);
        assert_eq!(cuts(&mut c, &data[..0]), Vec::<usize>::new());
    }

    #[test]
    fn an_insertion_moves_only_the_chunks_around_it() {
        let data = fixed_input(24 << 20, 3);
        let mut edited = data[..12 << 20].to_vec();
        edited.extend_from_slice(&[0xAB; 4096]);
        edited.extend_from_slice(&data[12 << 20..]);
        let mut c = Chunker::new(FILE_CHUNKS, 77);
        let chunks = |c: &mut Chunker, d: &[u8]| {
            let mut out = std::collections::HashSet::new();
            let mut src = d;
            while let Some(x) = c.next_chunk(&mut src).unwrap() {
                out.insert(blake3::hash(x));
            }
            out
        };
        let before = chunks(&mut c, &data);
        let after = chunks(&mut c, &edited);
        let new = after.difference(&before).count();
        assert!(new <= 2, "{new} of {} chunks changed", after.len());
    }

    #[test]
    fn cutting_a_buffer_is_cutting_the_stream() {
        let data = fixed_input(3 << 20, 6);
        let mut c = Chunker::new(META_CHUNKS, 11);
        let streamed = cuts(&mut c, &data[..]);
        let mut rest = &data[..];
        let mut cut = Vec::new();
        while !rest.is_empty() {
            let n = c.cut(rest);
            cut.push(n);
            rest = &rest[n..];
        }
        assert_eq!(cut, streamed);
    }

    #[test]
    fn another_seed_cuts_elsewhere() {
        let data = fixed_input(16 << 20, 4);
        let a = cuts(&mut Chunker::new(FILE_CHUNKS, 1), &data[..]);
        let b = cuts(&mut Chunker::new(FILE_CHUNKS, 2), &data[..]);
        assert_ne!(a, b);
    }

    #[test]
    fn golden_cut_points() {
        // The cut points of a fixed input, pinned: they depend on the
        // fastcdc version (pinned exactly in Cargo.toml). If this fails
        // after a change of that version, every backup re-uploads its data
        // once: change it deliberately or not at all.
        let data = fixed_input(8 << 20, 5);
        let file = cuts(
            &mut Chunker::new(FILE_CHUNKS, 0x0123_4567_89ab_cdef),
            &data[..],
        );
        let meta = cuts(
            &mut Chunker::new(META_CHUNKS, 0x0123_4567_89ab_cdef),
            &data[..1 << 20],
        );
        assert_eq!(file, GOLDEN_FILE, "{file:?}");
        assert_eq!(meta, GOLDEN_META, "{meta:?}");
    }

    const GOLDEN_FILE: &[usize] = &[607722, 1486375, 2280639, 1129606, 2093173, 791093];
    const GOLDEN_META: &[usize] = &[
        146455, 21890, 95304, 105233, 90505, 139393, 67702, 110926, 153273, 93109, 24786,
    ];
}
