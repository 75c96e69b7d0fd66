//! Prune (docs/snapshots.md, "Forget and prune"): deletes the packs that
//! no kept snapshot references. Record, then act: the packs are first
//! condemned and their chunks leave the index (so no later backup can
//! reference them), then their objects are deleted at every position; a
//! position that cannot be reached now stays recorded and is asked again by
//! the next prune. The caller holds the backup's lock, so no backup runs
//! meanwhile. Needs no secret: whole packs are deleted by number.

use bitdust_block::BackupId;

use crate::repo::{PackSet, PackState, Repo, RepoError};

/// Deletes pack objects at positions.
pub trait PackDeleter {
    /// Deletes pack `pack` of `backup` at `position`: `true` when it is gone
    /// there (or was never there), `false` when the position cannot be
    /// reached now.
    fn delete(&mut self, backup: BackupId, pack: u64, position: usize) -> bool;
}

/// What a prune did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Packs newly condemned.
    pub packs_condemned: u64,
    /// Chunks that left the index.
    pub chunks_dropped: u64,
    /// Packs deleted at every position (including earlier prunes' leftovers).
    pub packs_deleted: u64,
    /// Their bodies' bytes (before the erasure code).
    pub bytes_freed: u64,
    /// Condemned packs some position still holds (asked again next time).
    pub packs_pending: u64,
    /// Packs no kept snapshot references, kept because they are younger
    /// than the grace period.
    pub packs_young: u64,
}

/// Prunes `backup`: keeps the packs of `kept` and those stored at or after
/// `before` (unix seconds: the grace period), deletes the rest at the
/// `positions` positions through `deleter`.
pub fn prune(
    repo: &Repo,
    backup: BackupId,
    kept: &PackSet,
    before: u64,
    positions: usize,
    deleter: &mut dyn PackDeleter,
) -> Result<PruneReport, RepoError> {
    let all = if positions >= 64 {
        u64::MAX
    } else {
        (1u64 << positions) - 1
    };
    let mut packs_young = 0;
    repo.for_each_pack(backup, |n, rec| {
        if rec.state == PackState::Live && !kept.contains(n) && rec.time >= before {
            packs_young += 1;
        }
        Ok(())
    })?;
    let (packs_condemned, chunks_dropped) = repo.condemn(backup, kept, before, all)?;
    let mut report = PruneReport {
        packs_condemned,
        chunks_dropped,
        packs_young,
        ..PruneReport::default()
    };
    // The condemned packs, with what is left to do (a few words each).
    let mut todo = Vec::new();
    repo.for_each_pack(backup, |n, rec| {
        if rec.state == PackState::Condemned {
            todo.push((n, rec.pending, rec.body_len));
        }
        Ok(())
    })?;
    for (pack, pending, body_len) in todo {
        let mut done = 0u64;
        for p in (0..positions.min(64)).filter(|p| pending & (1 << p) != 0) {
            if deleter.delete(backup, pack, p) {
                done |= 1 << p;
            }
        }
        repo.settle(backup, pack, done)?;
        if done == pending {
            report.packs_deleted += 1;
            report.bytes_freed += body_len;
        } else {
            report.packs_pending += 1;
        }
    }
    Ok(report)
}
