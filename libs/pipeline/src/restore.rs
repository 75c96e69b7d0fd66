//! Restoring and verifying one backup version.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bitdust_block::{BlockError, BlockOpener, Manifest, ManifestError};
use bitdust_crypto::{BackupKey, NodeId};
use bitdust_ecc::{Code, Scheme};
use crossbeam_channel::bounded;

use crate::extract::{ExtractError, extract};
use crate::{FragmentSource, Progress, SourceError};

/// How to restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Blocks claiming more plaintext than this are refused before any memory
    /// is allocated for them (default: the largest block any backup may have).
    pub max_block_size: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            max_block_size: bitdust_block::MAX_BLOCK_LEN as usize,
        }
    }
}

/// What a restore did.
#[derive(Debug, Default, Clone)]
pub struct RestoreReport {
    /// Blocks restored.
    pub blocks: u64,
    /// Blocks that needed the ECC decoder (some data fragment was missing or bad).
    pub decoded_blocks: u64,
    /// Regular files restored.
    pub files: u64,
    /// Directories restored.
    pub directories: u64,
    /// Symlinks restored.
    pub symlinks: u64,
    /// Bytes of file content restored.
    pub bytes: u64,
    /// Fragments rejected (missing ones are not listed), one line each.
    pub rejected_fragments: Vec<String>,
    /// Fragments whose validly signed header is not the one the manifest
    /// commits to (left over from a failed attempt): erasures, counted.
    pub stale_fragments: u64,
    /// Entries not restored, with reasons.
    pub skipped: Vec<String>,
}

/// A restore or verify failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// No manifest at any position.
    #[error(
        "no position holds a manifest of backup {0}; check the path, or that the backup finished"
    )]
    NoManifest(String),
    /// The manifest is bad.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Blocks could not be recovered.
    #[error("{} of {total} blocks cannot be recovered: {}", failures.len(), summarize(failures))]
    Blocks {
        /// Blocks in the version.
        total: u64,
        /// Each failed block's error.
        failures: Vec<BlockError>,
    },
    /// The archive in the blocks is bad.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// The target cannot be used.
    #[error("cannot restore into {path}: {reason}")]
    Target {
        /// The target.
        path: String,
        /// Why.
        reason: String,
    },
    /// The decompressed stream is bad.
    #[error("the restored archive is damaged: {0}")]
    Stream(io::Error),
}

fn summarize(failures: &[BlockError]) -> String {
    let mut s: Vec<String> = failures.iter().take(5).map(|f| f.to_string()).collect();
    if failures.len() > 5 {
        s.push(format!("and {} more", failures.len() - 5));
    }
    s.join("; ")
}

/// The ECC code the manifest names; a manifest naming none is malformed.
fn code_of(manifest: &Manifest) -> Result<Code, RestoreError> {
    Code::new(manifest.scheme, manifest.suppliers)
        .map_err(|e| ManifestError::Malformed(e.to_string()).into())
}

/// Reads and verifies the manifest from `source`.
pub fn load_manifest(
    source: &mut dyn FragmentSource,
    customer: &NodeId,
) -> Result<Manifest, RestoreError> {
    let mut last_err = None;
    for attempt in 0.. {
        let Some(bytes) = source.manifest(attempt)? else {
            break;
        };
        match Manifest::from_signed_bytes(&bytes, customer) {
            Ok(m) if m.backup_id == source.backup_id() && m.version == source.version() => {
                return Ok(m);
            }
            Ok(m) => {
                last_err = Some(ManifestError::Malformed(format!(
                    "a manifest of {}@{} was found where {}@{} was expected",
                    m.backup_id,
                    m.version,
                    source.backup_id(),
                    source.version()
                )))
            }
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) => Err(e.into()),
        None => Err(RestoreError::NoManifest(format!(
            "{}@{}",
            source.backup_id(),
            source.version()
        ))),
    }
}

/// Whether a block survives losing every fragment of `lost_positions`.
pub(crate) fn decodable(code: &Code, lost_positions: &[usize]) -> bool {
    let mut present = vec![true; code.fragment_count()];
    for &p in lost_positions {
        for f in code.position_fragments(p) {
            present[f] = false;
        }
    }
    decodable_fragments(code, &present)
}

/// Whether the data of a block can be decoded from the `present` fragments.
pub(crate) fn decodable_fragments(code: &Code, present: &[bool]) -> bool {
    const FL: usize = 64;
    let mut buf = vec![0u8; code.fragment_count() * FL];
    let mut p = present.to_vec();
    code.reconstruct_data(&mut buf, FL, &mut p).is_ok()
}

/// Stored bytes a restore asks for ahead of the block it decodes.
const LOOKAHEAD_BYTES: u64 = 32 << 20;

/// How many blocks after the current one a restore prefetches: about
/// [`LOOKAHEAD_BYTES`] of stored data, 1 to 8 blocks.
fn lookahead(manifest: &Manifest) -> usize {
    let per_block = manifest.stored_bytes / manifest.blocks.max(1);
    (LOOKAHEAD_BYTES / per_block.max(1)).clamp(1, 8) as usize
}

/// Reads block `block` from `source`: the data fragments first, then, only
/// when a data fragment is missing or bad, just the parity the decoder needs
/// ([`Code::data_plan`]). The source is told what comes next
/// ([`FragmentSource::prefetch`]): this block's and the next blocks' data
/// fragments ([`lookahead`]), then the planned parity, so a network source
/// can fetch them in parallel. `all` fetches every fragment (verification).
fn collect_block(
    source: &mut dyn FragmentSource,
    manifest: &Manifest,
    code: &Code,
    block: u64,
    all: bool,
    max_block_len: u64,
) -> Result<BlockOpener, SourceError> {
    let mut opener = BlockOpener::new(
        manifest.customer,
        manifest.backup_id,
        manifest.version,
        block,
    )
    .expect_code(manifest.scheme, manifest.suppliers)
    .max_block_len(max_block_len);
    // The manifest, not the first fragment seen, says which header counts.
    if let Some(h) = manifest.block_header(block) {
        opener = opener.expect_header(*h);
    }
    let next = block + 1..manifest.blocks;
    collect_into(
        source,
        opener,
        code,
        block,
        next.take(lookahead(manifest)),
        all,
    )
}

/// Fills `opener` with fragments of `block` from `source` (see
/// [`collect_block`]); `next` are the blocks read after it, whose data
/// fragments are prefetched.
pub(crate) fn collect_into(
    source: &mut dyn FragmentSource,
    mut opener: BlockOpener,
    code: &Code,
    block: u64,
    next: impl Iterator<Item = u64>,
    all: bool,
) -> Result<BlockOpener, SourceError> {
    let count = code.fragment_count();
    let positions = source.positions();
    let mut usable: Vec<bool> = (0..count)
        .map(|f| positions.contains(&code.fragment_position(f)))
        .collect();
    // Positions that answered late are asked only when the block cannot be
    // decoded without them, or to verify every fragment.
    let all_needed = all || !decodable_fragments(code, &usable);
    if all_needed {
        let wary = source.wary_positions();
        for (f, u) in usable.iter_mut().enumerate() {
            *u |= wary.contains(&code.fragment_position(f));
        }
    }
    let data: Vec<usize> = (0..code.data_fragments()).filter(|&f| usable[f]).collect();
    // The parity that stands in for the data fragments of positions left
    // out is asked for with them, for this block and the next ones.
    let assumed: Vec<bool> = (0..count)
        .map(|f| f < code.data_fragments() && usable[f])
        .collect();
    let excluded: Vec<bool> = usable.iter().map(|u| !u).collect();
    let stand_ins = if all || data.len() == code.data_fragments() {
        Vec::new()
    } else {
        code.data_plan(&assumed, &excluded).unwrap_or_default()
    };
    let wanted: Vec<(usize, usize)> = data
        .iter()
        .chain(&stand_ins)
        .map(|&f| (code.fragment_position(f), f))
        .collect();
    source.prefetch(block, &wanted);
    // The next blocks' fragments come while this one decrypts.
    for n in next {
        source.prefetch(n, &wanted);
    }
    let mut undelivered = vec![false; count];
    fetch(source, code, block, &data, &mut opener, &mut undelivered)?;
    if all {
        let rest: Vec<usize> = (code.data_fragments()..count)
            .filter(|&f| usable[f])
            .collect();
        fetch(source, code, block, &rest, &mut opener, &mut undelivered)?;
        // Verifying, a fragment read around for being late is asked again
        // and waited for: slow is not lost.
        ask_again(source, code, block, &undelivered, &mut opener)?;
        return Ok(opener);
    }
    // Planned around what is missing: first from the positions answering;
    // once nothing more can be planned from them, the fragments read
    // around for being late are asked for again and waited for, and the
    // positions left out for being late are planned on too. A fragment
    // skipped because its position was late is not "tried": it may be
    // the parity the block needs once that position answers again (it was
    // counted as tried, and a degraded restore failed on a block whose one
    // late position came back: issue 19, session 23).
    let mut asked: Vec<bool> = (0..count).map(|f| data.contains(&f)).collect();
    let mut patient = all_needed;
    let mut asked_again = false;
    loop {
        let present = present_in(&opener, count);
        if decodable_fragments(code, &present) {
            break;
        }
        // The positions answering first; those left out for being late
        // only when nothing can be planned without them. Planning on both
        // at once could pick a fragment of a dead position (left out as
        // late, as a supplier that answers nothing is) where one answering
        // held a stand-in, and wait for it as long as a source may: 2.4 s
        // in a degraded bench run (issue 19, session 24).
        let now = source.positions();
        let mut plan = plan_from(code, block, &present, &asked, &now)?;
        if plan.is_empty() && patient {
            let mut any = now;
            any.extend(source.wary_positions());
            plan = plan_from(code, block, &present, &asked, &any)?;
        }
        if !plan.is_empty() {
            for &f in &plan {
                asked[f] = true;
            }
            let wanted: Vec<(usize, usize)> = plan
                .iter()
                .map(|&f| (code.fragment_position(f), f))
                .collect();
            source.prefetch(block, &wanted);
            fetch(source, code, block, &plan, &mut opener, &mut undelivered)?;
            // A planned fragment that was missing or bad leaves data
            // unknown: plan again around it.
            continue;
        }
        if asked_again {
            break;
        }
        ask_again(source, code, block, &undelivered, &mut opener)?;
        asked_again = true;
        patient = true;
    }
    Ok(opener)
}

/// The fragments to ask for next to decode a block that holds `present`,
/// from the fragments not `asked` for yet that `positions` hold.
fn plan_from(
    code: &Code,
    block: u64,
    present: &[bool],
    asked: &[bool],
    positions: &[usize],
) -> Result<Vec<usize>, SourceError> {
    let unavailable: Vec<bool> = (0..present.len())
        .map(|f| asked[f] || !positions.contains(&code.fragment_position(f)))
        .collect();
    code.data_plan(present, &unavailable)
        .map_err(|e| SourceError(format!("planning the fetch of block {block}: {e}")))
}

/// Which fragments `opener` holds.
fn present_in(opener: &BlockOpener, count: usize) -> Vec<bool> {
    (0..count)
        .map(|f| opener.present().get(f).copied().unwrap_or(false))
        .collect()
}

/// Asks again for the fragments of `block` the source did not give
/// (`undelivered`) that a position answering or left out for being late
/// holds (a source waits for those of a left-out position as long as it
/// may).
fn ask_again(
    source: &mut dyn FragmentSource,
    code: &Code,
    block: u64,
    undelivered: &[bool],
    opener: &mut BlockOpener,
) -> Result<(), SourceError> {
    let asked: Vec<usize> = source
        .positions()
        .into_iter()
        .chain(source.wary_positions())
        .collect();
    let again: Vec<usize> = (0..undelivered.len())
        .filter(|&f| undelivered[f] && asked.contains(&code.fragment_position(f)))
        .collect();
    let mut still = vec![false; undelivered.len()];
    fetch(source, code, block, &again, opener, &mut still)
}

/// Asks `source` for `frags` of `block` and hands each to `opener`.
/// Those the source did not give (missing, failed, or read around for
/// being late) are marked in `undelivered`; a fragment given and rejected
/// is not.
fn fetch(
    source: &mut dyn FragmentSource,
    code: &Code,
    block: u64,
    frags: &[usize],
    opener: &mut BlockOpener,
    undelivered: &mut [bool],
) -> Result<(), SourceError> {
    for &f in frags {
        let pos = code.fragment_position(f);
        let what = source.describe(pos, block, f);
        match source.fragment(pos, block, f)? {
            Some(mut r) => {
                let _ = opener.add(f, &mut r, &what);
                undelivered[f] = false;
            }
            None => undelivered[f] = true,
        }
    }
    Ok(())
}

/// Restores the version `source` reads into `target`, which must not exist or
/// be empty. The restore is staged and moved into place only
/// when every block decoded and the archive ended cleanly; on failure the
/// staging directory is removed, so nothing partial looks like a good restore.
pub fn restore(
    source: &mut dyn FragmentSource,
    manifest: &Manifest,
    key: &BackupKey,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    staged(target, |stage| {
        restore_into(source, manifest, key, stage, opts, progress)
    })
}

/// Extracts `input`, the zstd-compressed tar stream [`restore_blocks`] hands
/// out (its pieces in order), into `target` with the same guarantees as
/// [`restore`]: `target` must not exist or be empty, and nothing shows there
/// unless the whole archive extracted cleanly. A read error from `input`
/// (the far end failed) fails the extraction. The report counts entries and
/// bytes; the block counts are left zero.
pub fn extract_archive(
    input: impl Read,
    target: &Path,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    staged(target, |stage| {
        let decoder = zstd::stream::read::Decoder::new(input).map_err(RestoreError::Stream)?;
        let stats = extract(decoder, stage, progress)?;
        Ok(RestoreReport {
            files: stats.files,
            directories: stats.directories,
            symlinks: stats.symlinks,
            bytes: stats.bytes,
            skipped: stats.skipped,
            ..RestoreReport::default()
        })
    })
}

/// Runs `fill` on a fresh staging directory and moves what it wrote to
/// `target` (new, or an existing empty directory) only when it succeeded; on
/// failure the staging directory is removed.
pub(crate) fn staged<T, E: From<RestoreError>>(
    target: &Path,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let target_err = |reason: String| {
        E::from(RestoreError::Target {
            path: target.display().to_string(),
            reason,
        })
    };
    // An existing empty target (perhaps a mount point) is restored into via a
    // staging directory inside it; a new target is staged beside it and
    // renamed into place. Either way nothing shows at the target until every
    // block decoded and the archive ended cleanly.
    let existed = match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {
            let mut d = fs::read_dir(target).map_err(|e| target_err(e.to_string()))?;
            if d.next().is_some() {
                return Err(target_err(
                    "it is not empty; restore into a new or empty directory".into(),
                ));
            }
            true
        }
        Ok(_) => return Err(target_err("it exists and is not a directory".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(target_err(e.to_string())),
    };
    let stage = if existed {
        make_stage(target, ".bitdust-restore")
    } else {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "restore".into());
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        make_stage(parent, &format!(".{name}.bitdust-restore"))
    }
    .map_err(|e| target_err(format!("cannot create a staging directory: {e}")))?;
    let finished = fill(&stage).and_then(|report| {
        let moved = if existed {
            fs::read_dir(&stage).and_then(|entries| {
                for e in entries {
                    let e = e?;
                    fs::rename(e.path(), target.join(e.file_name()))?;
                }
                fs::remove_dir(&stage)
            })
        } else {
            fs::rename(&stage, target)
        };
        moved
            .map(|()| report)
            .map_err(|e| target_err(format!("moving the restored files into place failed: {e}")))
    });
    if finished.is_err() {
        let _ = fs::remove_dir_all(&stage);
    }
    finished
}

/// Creates a new directory `prefix-…` in `parent`, mode 0700. `create_dir`
/// fails on anything already there (a planted symlink included), so the
/// staging directory is always our own.
fn make_stage(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for i in 0..1000u32 {
        let p = parent.join(format!("{prefix}-{}-{nanos:08x}-{i}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free staging directory name"))
}

/// What [`restore_blocks`] did.
#[derive(Debug, Default, Clone)]
pub struct BlocksReport {
    /// Blocks decoded and handed out.
    pub blocks: u64,
    /// Blocks that needed the ECC decoder.
    pub decoded_blocks: u64,
    /// Fragments rejected (missing ones are not listed), one line each.
    pub rejected_fragments: Vec<String>,
    /// Stale fragments among them ([`RestoreReport::stale_fragments`]).
    pub stale_fragments: u64,
}

impl From<BlocksReport> for RestoreReport {
    /// The block half of a restore report; the entry counts are left zero.
    fn from(b: BlocksReport) -> Self {
        RestoreReport {
            blocks: b.blocks,
            decoded_blocks: b.decoded_blocks,
            rejected_fragments: b.rejected_fragments,
            stale_fragments: b.stale_fragments,
            ..RestoreReport::default()
        }
    }
}

/// Decodes, verifies and decrypts every block of the version in order and
/// hands each block's plaintext (the next piece of the version's
/// zstd-compressed tar stream) to `emit`. After a block fails nothing more is
/// handed out, but the remaining blocks are still checked so every failure is
/// named in the error. `emit` returning `false` (its reader is gone) stops
/// the restore early with what was done so far.
pub fn restore_blocks(
    source: &mut dyn FragmentSource,
    manifest: &Manifest,
    key: &BackupKey,
    opts: &RestoreOptions,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<BlocksReport, RestoreError> {
    let code = code_of(manifest)?;
    let mut report = BlocksReport::default();
    let mut failures = Vec::new();
    for block in 0..manifest.blocks {
        let opener = collect_block(
            source,
            manifest,
            &code,
            block,
            false,
            opts.max_block_size as u64,
        )?;
        note_rejections(&mut report.rejected_fragments, opener.rejections());
        report.stale_fragments += opener.stale();
        if let Some(h) = opener.header()
            && h.last != (block + 1 == manifest.blocks)
        {
            failures.push(BlockError::Sequence {
                block,
                reason: format!(
                    "is {}marked last, but the manifest says the version has {} blocks",
                    if h.last { "" } else { "not " },
                    manifest.blocks
                ),
            });
            continue;
        }
        let needed_decode = !opener.has_all_data();
        match opener.open(key) {
            Ok(plain) => {
                report.blocks += 1;
                report.decoded_blocks += needed_decode as u64;
                if failures.is_empty() && !emit(plain) {
                    break;
                }
            }
            Err(e) => failures.push(e),
        }
    }
    if !failures.is_empty() {
        return Err(RestoreError::Blocks {
            total: manifest.blocks,
            failures,
        });
    }
    Ok(report)
}

fn restore_into(
    source: &mut dyn FragmentSource,
    manifest: &Manifest,
    key: &BackupKey,
    stage: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    let (tx, rx) = bounded::<Vec<u8>>(2);
    std::thread::scope(|scope| {
        let extractor = scope.spawn(move || {
            let reader = chunk_reader(move || rx.recv().ok().map(Ok));
            let decoder = zstd::stream::read::Decoder::new(reader).map_err(RestoreError::Stream)?;
            let stats = extract(decoder, stage, progress)?;
            Ok::<_, RestoreError>(stats)
        });
        let blocks = restore_blocks(source, manifest, key, opts, &mut |plain| {
            tx.send(plain).is_ok()
        });
        drop(tx);
        let extracted = extractor.join().unwrap_or_else(|_| {
            Err(RestoreError::Stream(io::Error::other(
                "the extractor thread panicked",
            )))
        });
        let blocks = blocks?;
        let stats = extracted?;
        Ok(RestoreReport {
            files: stats.files,
            directories: stats.directories,
            symlinks: stats.symlinks,
            bytes: stats.bytes,
            skipped: stats.skipped,
            ..blocks.into()
        })
    })
}

/// At most this many rejected fragments are named in a report.
const MAX_REJECTIONS_NAMED: usize = 1000;

pub(crate) fn note_rejections(into: &mut Vec<String>, new: &[String]) {
    for r in new {
        if into.len() < MAX_REJECTIONS_NAMED {
            into.push(r.clone());
        } else if into.len() == MAX_REJECTIONS_NAMED {
            into.push("(more fragments rejected; only the first 1000 are named)".into());
        }
    }
}

/// A [`Read`] over a sequence of byte chunks: `next` gives the next chunk,
/// an error (which the reader returns), or `None` at the end. Chunks come
/// from another thread through a channel, so whole buffers change hands
/// with at most the channel's depth in flight.
pub fn chunk_reader<F>(next: F) -> ChunkReader<F>
where
    F: FnMut() -> Option<io::Result<Vec<u8>>>,
{
    ChunkReader {
        next,
        buf: Vec::new(),
        pos: 0,
    }
}

/// See [`chunk_reader`].
pub struct ChunkReader<F> {
    next: F,
    buf: Vec<u8>,
    pos: usize,
}

impl<F> Read for ChunkReader<F>
where
    F: FnMut() -> Option<io::Result<Vec<u8>>>,
{
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match (self.next)() {
                Some(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The health of one block.
#[derive(Debug, Clone)]
pub struct BlockHealth {
    /// Block number.
    pub block: u64,
    /// Fragments present and verified.
    pub valid_fragments: usize,
    /// Fragments in the block.
    pub total_fragments: usize,
    /// Positions with a missing or bad fragment.
    pub damaged_positions: Vec<usize>,
    /// How many more positions may be lost with the block still decodable;
    /// `None` when it cannot be decoded now.
    pub margin: Option<usize>,
    /// Whether `margin` is exact (else it is a proven lower bound).
    pub margin_exact: bool,
}

/// What `verify` found.
#[derive(Debug)]
pub struct VerifyReport {
    /// The verified manifest.
    pub manifest: Manifest,
    /// Per block.
    pub blocks: Vec<BlockHealth>,
    /// Fragments rejected, one line each.
    pub rejected_fragments: Vec<String>,
}

impl VerifyReport {
    /// Blocks that cannot be decoded.
    pub fn unrecoverable(&self) -> Vec<u64> {
        self.blocks
            .iter()
            .filter(|b| b.margin.is_none())
            .map(|b| b.block)
            .collect()
    }

    /// The smallest margin over all blocks (`None` if any block is lost).
    pub fn min_margin(&self) -> Option<usize> {
        self.blocks
            .iter()
            .map(|b| b.margin)
            .try_fold(usize::MAX, |acc, m| m.map(|m| acc.min(m)))
    }
}

/// Reads every fragment of the version, checks hashes and signatures, and
/// reports per block how many more positions may be lost.
pub fn verify(
    source: &mut dyn FragmentSource,
    manifest: &Manifest,
) -> Result<VerifyReport, RestoreError> {
    let code = code_of(manifest)?;
    let mut blocks = Vec::new();
    let mut health = HealthOf::default();
    let mut rejected = Vec::new();
    for block in 0..manifest.blocks {
        let opener = collect_block(
            source,
            manifest,
            &code,
            block,
            true,
            bitdust_block::MAX_BLOCK_LEN,
        )?;
        note_rejections(&mut rejected, opener.rejections());
        blocks.push(health.of(&code, block, &opener));
    }
    Ok(VerifyReport {
        manifest: manifest.clone(),
        blocks,
        rejected_fragments: rejected,
    })
}

/// The health of blocks, the margin searched once per pattern of present
/// fragments (most blocks of a version or backup share one).
#[derive(Default, Debug)]
pub struct HealthOf {
    margins: std::collections::HashMap<Vec<bool>, (Option<usize>, bool)>,
}

impl HealthOf {
    /// The health of `block` from the fragments `opener` holds.
    pub(crate) fn of(&mut self, code: &Code, block: u64, opener: &BlockOpener) -> BlockHealth {
        let present: Vec<bool> = if opener.present().is_empty() {
            vec![false; code.fragment_count()]
        } else {
            opener.present().to_vec()
        };
        self.of_present(code, block, present)
    }

    /// The health of `block` whose fragments `present` (by fragment
    /// number) are there.
    pub fn of_present(&mut self, code: &Code, block: u64, present: Vec<bool>) -> BlockHealth {
        let mut damaged: Vec<usize> = (0..code.fragment_count())
            .filter(|&f| !present[f])
            .map(|f| code.fragment_position(f))
            .collect();
        damaged.sort_unstable();
        damaged.dedup();
        let (margin, exact) = *self
            .margins
            .entry(present.clone())
            .or_insert_with(|| margin(code, &present, &damaged));
        BlockHealth {
            block,
            valid_fragments: present.iter().filter(|p| **p).count(),
            total_fragments: code.fragment_count(),
            damaged_positions: damaged,
            margin,
            margin_exact: exact,
        }
    }
}

/// Patterns tried per loss count before settling for the proven lower bound.
const MARGIN_BUDGET: u64 = 50_000;

fn margin(code: &Code, present: &[bool], damaged: &[usize]) -> (Option<usize>, bool) {
    if !decodable_fragments(code, present) {
        return (None, true);
    }
    let healthy: Vec<usize> = (0..code.suppliers())
        .filter(|p| !damaged.contains(p))
        .collect();
    if code.scheme() == Scheme::ReedSolomon {
        let valid = present.iter().filter(|p| **p).count();
        return (Some(valid - code.data_fragments()), true);
    }
    // Any pattern of `tolerance` whole-position losses decodes, and the damaged
    // positions count as lost, so this much is proven without a search.
    let mut proven = code.tolerance().saturating_sub(damaged.len());
    loop {
        let m = proven + 1;
        if m > healthy.len() {
            return (Some(proven), true);
        }
        if binomial(healthy.len() as u64, m as u64) > MARGIN_BUDGET {
            return (Some(proven), false);
        }
        let mut all_ok = true;
        for_each_combination(healthy.len(), m, &mut |idx| {
            let mut p = present.to_vec();
            for &i in idx {
                for f in code.position_fragments(healthy[i]) {
                    p[f] = false;
                }
            }
            if !decodable_fragments(code, &p) {
                all_ok = false;
            }
            all_ok
        });
        if !all_ok {
            return (Some(proven), true);
        }
        proven = m;
    }
}

fn binomial(n: u64, k: u64) -> u64 {
    let k = k.min(n - k.min(n));
    (0..k).fold(1u64, |acc, i| acc.saturating_mul(n - i) / (i + 1))
}

/// Calls `f` with each k-subset of 0..n until it returns false.
fn for_each_combination(n: usize, k: usize, f: &mut dyn FnMut(&[usize]) -> bool) {
    let mut idx: Vec<usize> = (0..k).collect();
    if k > n {
        return;
    }
    loop {
        if !f(&idx) {
            return;
        }
        let mut i = k;
        while i > 0 && idx[i - 1] == n - k + i - 1 {
            i -= 1;
        }
        if i == 0 {
            return;
        }
        idx[i - 1] += 1;
        for j in i..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_are_counted_right() {
        let mut n = 0;
        for_each_combination(7, 3, &mut |_| {
            n += 1;
            true
        });
        assert_eq!(n, 35);
        assert_eq!(binomial(7, 3), 35);
        assert_eq!(binomial(64, 10), 151_473_214_816);
    }

    /// A zstd-compressed tar of `a/b.txt` (`content`) and an empty `e/`.
    fn small_archive(content: &[u8]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        t.append_data(&mut h, "e/", io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        t.append_data(&mut h, "a/b.txt", content).unwrap();
        zstd::encode_all(&t.into_inner().unwrap()[..], 3).unwrap()
    }

    /// Entries of `dir` whose names contain `bitdust-restore`.
    fn stages_in(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("bitdust-restore"))
            .collect()
    }

    #[test]
    fn an_archive_streamed_in_pieces_extracts_and_a_cut_stream_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"hello from the agent".repeat(1000);
        let archive = small_archive(&content);
        // Whole, in 7-byte pieces: extracted into a new directory.
        let mut pieces = archive.chunks(7).map(|c| Ok(c.to_vec()));
        let out = dir.path().join("out");
        let r = extract_archive(chunk_reader(|| pieces.next()), &out, &()).unwrap();
        assert_eq!(
            (r.files, r.directories, r.bytes),
            (1, 1, content.len() as u64)
        );
        assert_eq!(fs::read(out.join("a/b.txt")).unwrap(), content);
        assert!(out.join("e").is_dir());
        assert!(stages_in(dir.path()).is_empty());
        // Into it again: refused, it is not empty.
        let mut again = archive.chunks(7).map(|c| Ok(c.to_vec()));
        let e = extract_archive(chunk_reader(|| again.next()), &out, &()).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        // Cut halfway with an error: nothing at the target, no staging left,
        // and the error is the stream's.
        let half = archive.len() / 2;
        let mut cut = vec![
            Ok(archive[..half].to_vec()),
            Err(io::Error::other("the agent went away")),
        ]
        .into_iter();
        let out2 = dir.path().join("out2");
        let e = extract_archive(chunk_reader(|| cut.next()), &out2, &()).unwrap_err();
        assert!(e.to_string().contains("the agent went away"), "{e}");
        assert!(!out2.exists());
        assert!(stages_in(dir.path()).is_empty());
        // Cut without an error (the stream just ends): refused as damaged.
        let mut short = std::iter::once(Ok(archive[..half].to_vec()));
        let e = extract_archive(chunk_reader(|| short.next()), &out2, &()).unwrap_err();
        assert!(!out2.exists(), "{e}");
        assert!(stages_in(dir.path()).is_empty());
    }
}
