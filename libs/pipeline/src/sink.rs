//! Where fragments go and where they come from. The same pipeline writes to
//! local directories now and to remote suppliers later.

use std::io::Read;

use bitdust_block::{BackupId, SealedBlock};

/// Writing fragments failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Reading fragments failed in a way that is not "this fragment is missing".
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Receives the sealed blocks and the manifest of one backup version.
pub trait FragmentSink {
    /// Stores every fragment of `block` at its position. Returns the positions
    /// that could not take their fragments (the backup goes on while the ECC
    /// code still tolerates them), or an error that ends the backup. A
    /// sink may take the fragments out ([`SealedBlock::take_fragments`])
    /// to send them on after it returns.
    fn put_block(&mut self, block: &mut SealedBlock) -> Result<Vec<usize>, SinkError>;

    /// Makes everything written so far durable at every position, and only
    /// then stores the signed manifest at every position. Called once, last.
    /// Returns the positions where that failed (their fragments may not be
    /// durable); the caller decides whether the code survives without them.
    fn commit(&mut self, manifest: &[u8]) -> Result<Vec<usize>, SinkError>;

    /// Makes everything written so far durable at every position, without
    /// a manifest (packs, before a snapshot root names them). Returns the
    /// positions where that failed.
    fn sync(&mut self) -> Result<Vec<usize>, SinkError>;

    /// Why `position` failed, if it did.
    fn failure(&self, position: usize) -> Option<String> {
        let _ = position;
        None
    }
}

/// Gives back the fragments and manifest of one backup version. A source
/// may be handed to a thread that fetches ahead of a restore.
pub trait FragmentSource: Send {
    /// Copy number `attempt` (0, 1, ...) of the manifest, or `None` when there
    /// are no more copies. The caller verifies each and asks for the next copy
    /// when one does not verify.
    fn manifest(&mut self, attempt: usize) -> Result<Option<Vec<u8>>, SourceError>;

    /// The positions that currently can be asked for fragments.
    fn positions(&self) -> Vec<usize>;

    /// Positions left out of [`FragmentSource::positions`] because they
    /// answered late, asked only when a block cannot be decoded without
    /// them.
    fn wary_positions(&self) -> Vec<usize> {
        Vec::new()
    }

    /// Fragment `fragment` of `block`, held at `position`; `None` when missing.
    fn fragment(
        &mut self,
        position: usize,
        block: u64,
        fragment: usize,
    ) -> Result<Option<Box<dyn Read + '_>>, SourceError>;

    /// The first `len` bytes (fewer if it is shorter) of fragment
    /// `fragment` of `block` held at `position`; `None` when missing. A
    /// ranged read: nothing checks the bytes, the caller authenticates what
    /// it uses. By default the fragment is read and cut.
    fn fragment_prefix(
        &mut self,
        position: usize,
        block: u64,
        fragment: usize,
        len: usize,
    ) -> Result<Option<Vec<u8>>, SourceError> {
        let Some(r) = self.fragment(position, block, fragment)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        r.take(len as u64)
            .read_to_end(&mut out)
            .map_err(|e| SourceError(format!("reading the start of a fragment: {e}")))?;
        Ok(Some(out))
    }

    /// A hint that `fragments` ((position, fragment) pairs) of `block` will
    /// be asked for next, so a source may start fetching them together.
    fn prefetch(&mut self, _block: u64, _fragments: &[(usize, usize)]) {}

    /// A short description of where fragment `fragment` of `block` lives, for messages.
    fn describe(&self, position: usize, block: u64, fragment: usize) -> String;

    /// The backup this source reads.
    fn backup_id(&self) -> BackupId;

    /// The version this source reads.
    fn version(&self) -> u64;
}

/// Told about progress, from the pipeline's threads.
pub trait Progress: Send + Sync {
    /// `bytes` more of input were archived (backup) or extracted (restore).
    fn advance(&self, bytes: u64);
}

/// Progress that is not shown.
impl Progress for () {
    fn advance(&self, _: u64) {}
}
