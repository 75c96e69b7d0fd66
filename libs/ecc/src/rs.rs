//! The Reed-Solomon scheme over `reed-solomon-simd`.
//!
//! Position `p` holds shard `p`: original shard `p` for `p < k`, recovery
//! shard `p - k` otherwise, with `k = ceil(N/2)`. For `N = 2` that is one
//! original and one recovery shard, which the library supports directly
//! (the recovery shard is then an encoding of the single original).
//! The library allocates its work space on every call; a block is a few MiB
//! and the FFT work dominates, so that is not worth caching.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use crate::{EccError, lost_positions};

/// Reed-Solomon geometry for one supplier count.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RsCode {
    suppliers: usize,
    originals: usize,
}

/// Maps a library error; the codec validates sizes first, so these only
/// report broken invariants, as buffer errors.
fn lib_error(e: reed_solomon_simd::Error) -> EccError {
    EccError::BadBuffer(format!("reed-solomon: {e}"))
}

impl RsCode {
    pub(crate) fn new(suppliers: usize) -> RsCode {
        RsCode {
            suppliers,
            originals: suppliers.div_ceil(2),
        }
    }

    /// `k`: original shards, any `k` shards restore the block.
    pub(crate) fn original_count(&self) -> usize {
        self.originals
    }

    /// `N - k`.
    pub(crate) fn recovery_count(&self) -> usize {
        self.suppliers - self.originals
    }

    pub(crate) fn encode(&self, fragments: &mut [u8], fragment_len: usize) -> Result<(), EccError> {
        let k = self.originals;
        let (originals, recovery) = fragments.split_at_mut(k * fragment_len);
        let mut encoder =
            ReedSolomonEncoder::new(k, self.recovery_count(), fragment_len).map_err(lib_error)?;
        for shard in originals.chunks_exact(fragment_len) {
            encoder.add_original_shard(shard).map_err(lib_error)?;
        }
        let result = encoder.encode().map_err(lib_error)?;
        for (out, shard) in recovery
            .chunks_exact_mut(fragment_len)
            .zip(result.recovery_iter())
        {
            out.copy_from_slice(shard);
        }
        Ok(())
    }

    pub(crate) fn reconstruct_data(
        &self,
        fragments: &mut [u8],
        fragment_len: usize,
        present: &mut [bool],
    ) -> Result<(), EccError> {
        let k = self.originals;
        let missing: Vec<usize> = (0..k).filter(|&i| !present[i]).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let have = present.iter().filter(|ok| **ok).count();
        if have < k {
            return Err(EccError::Unrecoverable {
                missing_data: missing,
                lost_positions: lost_positions(present, self.suppliers),
            });
        }
        let mut decoder =
            ReedSolomonDecoder::new(k, self.recovery_count(), fragment_len).map_err(lib_error)?;
        for (f, shard) in fragments.chunks_exact(fragment_len).enumerate() {
            if !present[f] {
                continue;
            }
            if f < k {
                decoder.add_original_shard(f, shard).map_err(lib_error)?;
            } else {
                decoder
                    .add_recovery_shard(f - k, shard)
                    .map_err(lib_error)?;
            }
        }
        let result = decoder.decode().map_err(lib_error)?;
        for (i, shard) in result.restored_original_iter() {
            fragments[i * fragment_len..(i + 1) * fragment_len].copy_from_slice(shard);
            present[i] = true;
        }
        Ok(())
    }

    pub(crate) fn reconstruct_position(
        &self,
        position: usize,
        fragments: &mut [u8],
        fragment_len: usize,
        present: &mut [bool],
    ) -> Result<(), EccError> {
        if present[position] {
            return Ok(());
        }
        self.reconstruct_data(fragments, fragment_len, present)?;
        if position >= self.originals {
            // A recovery shard is only defined through a full encode; take
            // just the one shard so present recovery shards stay untouched.
            let k = self.originals;
            let (originals, recovery) = fragments.split_at_mut(k * fragment_len);
            let mut encoder = ReedSolomonEncoder::new(k, self.recovery_count(), fragment_len)
                .map_err(lib_error)?;
            for shard in originals.chunks_exact(fragment_len) {
                encoder.add_original_shard(shard).map_err(lib_error)?;
            }
            let result = encoder.encode().map_err(lib_error)?;
            let shard = result.recovery(position - k).ok_or_else(|| {
                EccError::BadBuffer(format!("reed-solomon: no recovery shard {}", position - k))
            })?;
            let start = (position - k) * fragment_len;
            recovery[start..start + fragment_len].copy_from_slice(shard);
            present[position] = true;
        }
        Ok(())
    }

    pub(crate) fn rebuild_plan(
        &self,
        position: usize,
        available: &[bool],
    ) -> Result<Vec<usize>, EccError> {
        let usable: Vec<usize> = (0..self.suppliers)
            .filter(|&f| f != position && available[f])
            .collect();
        if usable.len() < self.originals {
            let mut flags = available.to_vec();
            flags[position] = false;
            return Err(EccError::Unrecoverable {
                missing_data: (0..self.originals).filter(|&i| !flags[i]).collect(),
                lost_positions: lost_positions(&flags, self.suppliers),
            });
        }
        Ok(usable[..self.originals].to_vec())
    }
}
