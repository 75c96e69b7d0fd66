//! Making one backup version.

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use bitdust_block::{
    BackupId, BackupInfo, BlockError, BlockSealer, MAX_BLOCK_LEN, Manifest, SealedBlock,
};
use bitdust_crypto::{BackupKey, Identity, MasterRecipient};
use bitdust_ecc::{Code, EccError, Scheme};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::archive::{ArchiveSummary, write_archive};
use crate::restore::decodable;
use crate::{
    DEFAULT_BLOCK_SIZE, DEFAULT_MAX_BLOCK_SIZE, DEFAULT_ZSTD_LEVEL, FragmentSink, Progress,
    SinkError,
};

/// How to make a backup.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// ECC scheme.
    pub scheme: Scheme,
    /// Number of suppliers (positions).
    pub suppliers: usize,
    /// zstd level (1..=22; negative levels are faster still).
    pub zstd_level: i32,
    /// Desired block size: the compressed stream is cut into blocks of this size.
    pub block_size: usize,
    /// Maximum block size: the desired size may not exceed it, and restores
    /// refuse blocks claiming more.
    pub max_block_size: usize,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            scheme: Scheme::Xor,
            suppliers: 7,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            block_size: DEFAULT_BLOCK_SIZE,
            max_block_size: DEFAULT_MAX_BLOCK_SIZE,
        }
    }
}

/// The result of a backup.
#[derive(Debug)]
pub struct BackupReport {
    /// The signed manifest that was committed.
    pub manifest: Manifest,
    /// Regular files, directories and symlinks archived.
    pub files: u64,
    /// Directories archived.
    pub directories: u64,
    /// Symlinks archived.
    pub symlinks: u64,
    /// Bytes of file content read.
    pub content_bytes: u64,
    /// Entries not archived, with reasons.
    pub skipped: Vec<String>,
    /// Positions that failed to take some fragments (to repair later).
    pub degraded_positions: Vec<usize>,
}

/// A backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Options out of range.
    #[error("invalid backup options: {0}")]
    Options(String),
    /// A source path is unusable.
    #[error("cannot back up {path}: {source}")]
    Source {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading or archiving the sources failed.
    #[error("archiving failed: {0}")]
    Archive(io::Error),
    /// Sealing a block failed.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The sink failed.
    #[error("storing fragments failed: {0}")]
    Sink(#[from] SinkError),
    /// Too many positions failed to take a block's fragments.
    #[error(
        "block {block} could not be stored at enough positions to be restorable ({reasons}); the backup was not committed: fix those positions (space, permissions, mounts) and run it again"
    )]
    TooManyFailures {
        /// Block number.
        block: u64,
        /// Positions that failed.
        positions: Vec<usize>,
        /// Why, per position.
        reasons: String,
    },
    /// Bad ECC parameters.
    #[error(transparent)]
    Ecc(#[from] EccError),
}

/// The per-backup key material a backup is made with: public only.
pub struct BackupKeyMaterial {
    /// Recipient the blocks are encrypted to.
    pub recipient: age::x25519::Recipient,
    /// The backup key's secret, wrapped to the master recipient.
    pub wrapped: Vec<u8>,
}

impl BackupKeyMaterial {
    /// A fresh backup key, wrapped to `master` and then forgotten.
    pub fn generate(master: &MasterRecipient) -> Result<Self, BackupError> {
        let key = BackupKey::generate();
        let wrapped = key
            .wrap(master.age_recipient())
            .map_err(|e| BackupError::Block(BlockError::Seal(e)))?;
        Ok(BackupKeyMaterial {
            recipient: key.recipient(),
            wrapped,
        })
    }

    /// The key material of an earlier version of the same backup.
    pub fn from_manifest(m: &Manifest) -> Option<Self> {
        Some(BackupKeyMaterial {
            recipient: m.backup_recipient.parse().ok()?,
            wrapped: m.wrapped_backup_key.clone(),
        })
    }
}

enum Msg {
    Block(Vec<u8>),
    End,
}

/// Where the tar archive of a backup comes from.
pub trait ArchiveInput: Send {
    /// The source paths the archive holds, absolute, as raw bytes.
    fn source_paths(&self) -> Vec<Vec<u8>>;
    /// Writes the whole archive to `out` and says what went into it. An
    /// error means the archive is incomplete: the backup is not committed.
    /// `cancel` is set when the backup failed on the other side; stop then.
    fn write_to(
        &mut self,
        out: &mut dyn Write,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> io::Result<ArchiveSummary>;
}

/// The archive of local paths, read by this process with its own rights.
pub struct LocalPaths<'a>(&'a [PathBuf]);

impl<'a> LocalPaths<'a> {
    /// `sources` must be absolute and exist.
    pub fn new(sources: &'a [PathBuf]) -> Result<Self, BackupError> {
        for s in sources {
            std::fs::symlink_metadata(s).map_err(|source| BackupError::Source {
                path: s.clone(),
                source,
            })?;
        }
        Ok(LocalPaths(sources))
    }
}

impl ArchiveInput for LocalPaths<'_> {
    fn source_paths(&self) -> Vec<Vec<u8>> {
        self.0
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect()
    }

    fn write_to(
        &mut self,
        out: &mut dyn Write,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> io::Result<ArchiveSummary> {
        write_archive(self.0, out, progress, cancel).map(|(_, s)| s)
    }
}

/// Backs up the archive `input` gives as version `version` of `backup_id`,
/// writing fragments to `sink`. Needs the signing identity and public key
/// material only.
#[allow(clippy::too_many_arguments)]
pub fn backup(
    identity: Arc<Identity>,
    key: &BackupKeyMaterial,
    backup_id: BackupId,
    version: u64,
    input: &mut dyn ArchiveInput,
    opts: &BackupOptions,
    sink: &mut dyn FragmentSink,
    progress: &dyn Progress,
) -> Result<BackupReport, BackupError> {
    if opts.block_size == 0 || opts.block_size > opts.max_block_size {
        return Err(BackupError::Options(format!(
            "block size {} must be between 1 and the maximum block size {}",
            opts.block_size, opts.max_block_size
        )));
    }
    if opts.max_block_size as u64 > MAX_BLOCK_LEN {
        return Err(BackupError::Options(format!(
            "maximum block size {} is over the {MAX_BLOCK_LEN} bytes this version supports",
            opts.max_block_size
        )));
    }
    if !(-7..=22).contains(&opts.zstd_level) {
        return Err(BackupError::Options(format!(
            "zstd level {} is outside -7..=22",
            opts.zstd_level
        )));
    }
    let source_paths = input.source_paths();
    let code = Code::new(opts.scheme, opts.suppliers)?;
    let sealer = BlockSealer::new(
        identity.clone(),
        backup_id,
        version,
        code.clone(),
        key.recipient.clone(),
    );

    // Two blocks queued plus one being cut and one being sealed bound memory.
    let (tx, rx) = bounded::<Msg>(2);
    let (recycle_tx, recycle_rx) = bounded::<Vec<u8>>(4);
    let level = opts.zstd_level;
    let block_size = opts.block_size;

    // Set when the sealer side fails, so the archiver stops reading files at
    // once instead of when zstd next emits output.
    let cancel = AtomicBool::new(false);
    let (stats, archive_bytes, outcome) = std::thread::scope(|scope| {
        let cancel = &cancel;
        let producer = scope
            .spawn(move || produce(input, level, block_size, tx, recycle_rx, progress, cancel));
        let outcome = consume(&sealer, &code, rx, recycle_tx, sink);
        if outcome.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the archiver thread panicked")));
        match (outcome, produced) {
            (Ok(c), Ok(Some((stats, bytes)))) => (Some(stats), bytes, Ok(c)),
            (Ok(_), Ok(None)) => (
                None,
                0,
                Err(BackupError::Archive(io::Error::other(
                    "the archiver stopped without saying why (a bug: please report it)",
                ))),
            ),
            (Ok(_), Err(e)) => (None, 0, Err(BackupError::Archive(e))),
            (Err(e), _) => (None, 0, Err(e)),
        }
    });
    let consumed = outcome?;
    let stats = stats.unwrap_or_default();

    let info = BackupInfo {
        source_paths,
        files: stats.files,
        directories: stats.directories,
        symlinks: stats.symlinks,
        skipped: stats.skipped.clone(),
    };
    let manifest = Manifest {
        customer: identity.node_id(),
        backup_id,
        version,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        scheme: opts.scheme,
        suppliers: opts.suppliers,
        blocks: consumed.blocks,
        archive_bytes,
        compressed_bytes: consumed.compressed_bytes,
        stored_bytes: consumed.stored_bytes,
        backup_recipient: key.recipient.to_string(),
        wrapped_backup_key: key.wrapped.clone(),
        sealed_info: Manifest::seal_info(&info, &key.recipient).map_err(|e| match e {
            bitdust_block::ManifestError::Seal(e) => BackupError::Block(BlockError::Seal(e)),
            other => BackupError::Archive(io::Error::other(other.to_string())),
        })?,
        zstd_level: level,
        block_headers: consumed.headers,
    };
    let mut degraded = consumed.degraded;
    let failed_at_commit = sink.commit(&manifest.to_signed_bytes(&identity))?;
    for p in failed_at_commit {
        if !degraded.contains(&p) {
            degraded.push(p);
        }
    }
    degraded.sort_unstable();
    // A position that failed at commit may not hold durable fragments of any
    // block, so the version only counts as made if the code survives losing
    // every degraded position at once.
    if !decodable(&code, &degraded) {
        return Err(BackupError::TooManyFailures {
            block: consumed.blocks.saturating_sub(1),
            reasons: failure_reasons(sink, &degraded),
            positions: degraded,
        });
    }
    Ok(BackupReport {
        manifest,
        files: stats.files,
        directories: stats.directories,
        symlinks: stats.symlinks,
        content_bytes: stats.content_bytes,
        skipped: stats.skipped,
        degraded_positions: degraded,
    })
}

fn failure_reasons(sink: &dyn FragmentSink, positions: &[usize]) -> String {
    positions
        .iter()
        .map(|p| match sink.failure(*p) {
            Some(why) => format!("position {p}: {why}"),
            None => format!("position {p}: failed"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Archiver thread: tar -> zstd -> blocks on the channel. `Ok(None)` means the
/// consumer stopped early (its error is the one reported).
fn produce(
    input: &mut dyn ArchiveInput,
    level: i32,
    block_size: usize,
    tx: Sender<Msg>,
    recycle: Receiver<Vec<u8>>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> io::Result<Option<(ArchiveSummary, u64)>> {
    let cutter = BlockCutter {
        tx: tx.clone(),
        recycle,
        block_size,
        current: Vec::with_capacity(block_size),
        closed: false,
    };
    let encoder = zstd::stream::write::Encoder::new(cutter, level)?;
    let mut counting = CountingWriter {
        inner: encoder,
        bytes: 0,
    };
    let stats = match input.write_to(&mut counting, progress, cancel) {
        Ok(v) => v,
        Err(e) => return if is_closed(&e) { Ok(None) } else { Err(e) },
    };
    let archive_bytes = counting.bytes;
    let mut cutter = match counting.inner.finish() {
        Ok(c) => c,
        Err(e) => return if is_closed(&e) { Ok(None) } else { Err(e) },
    };
    if cutter.flush_block().is_err() || tx.send(Msg::End).is_err() {
        return Ok(None);
    }
    Ok(Some((stats, archive_bytes)))
}

fn is_closed(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Cuts the compressed stream into blocks of `block_size` bytes.
struct BlockCutter {
    tx: Sender<Msg>,
    recycle: Receiver<Vec<u8>>,
    block_size: usize,
    current: Vec<u8>,
    closed: bool,
}

impl BlockCutter {
    fn flush_block(&mut self) -> io::Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        let next = self
            .recycle
            .try_recv()
            .map(|mut v| {
                v.clear();
                v
            })
            .unwrap_or_else(|_| Vec::with_capacity(self.block_size));
        let full = std::mem::replace(&mut self.current, next);
        if self.tx.send(Msg::Block(full)).is_err() {
            self.closed = true;
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        Ok(())
    }
}

impl Write for BlockCutter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        let room = self.block_size - self.current.len();
        let n = buf.len().min(room);
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == self.block_size {
            self.flush_block()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Consumed {
    blocks: u64,
    compressed_bytes: u64,
    stored_bytes: u64,
    degraded: Vec<usize>,
    /// Each block's header commitment, for the manifest.
    headers: Vec<[u8; 32]>,
}

/// Sealer side: holds one block back so it knows which block is the last.
fn consume(
    sealer: &BlockSealer,
    code: &Code,
    rx: Receiver<Msg>,
    recycle: Sender<Vec<u8>>,
    sink: &mut dyn FragmentSink,
) -> Result<Consumed, BackupError> {
    let mut sealed = SealedBlock::default();
    let mut pending: Option<Vec<u8>> = None;
    let mut c = Consumed {
        blocks: 0,
        compressed_bytes: 0,
        stored_bytes: 0,
        degraded: Vec::new(),
        headers: Vec::new(),
    };
    let mut seal_one = |plain: Vec<u8>, last: bool, c: &mut Consumed| -> Result<(), BackupError> {
        let block = c.blocks;
        sealer.seal(block, last, &plain, &mut sealed)?;
        let failed = sink.put_block(&mut sealed)?;
        if !failed.is_empty() {
            if !decodable(code, &failed) {
                return Err(BackupError::TooManyFailures {
                    block,
                    reasons: failure_reasons(&*sink, &failed),
                    positions: failed,
                });
            }
            for p in failed {
                if !c.degraded.contains(&p) {
                    c.degraded.push(p);
                }
            }
        }
        c.blocks += 1;
        c.compressed_bytes += plain.len() as u64;
        if let Some(h) = sealed.header() {
            c.stored_bytes += h.header.fragment_len * code.fragment_count() as u64;
            c.headers.push(h.commitment());
        }
        let _ = recycle.try_send(plain);
        Ok(())
    };
    loop {
        match rx.recv() {
            Ok(Msg::Block(b)) => {
                if let Some(prev) = pending.replace(b) {
                    seal_one(prev, false, &mut c)?;
                }
            }
            Ok(Msg::End) => {
                let last = pending.take().unwrap_or_default();
                seal_one(last, true, &mut c)?;
                c.degraded.sort_unstable();
                return Ok(c);
            }
            // The archiver failed; its error is reported by the caller.
            Err(_) => return Ok(c),
        }
    }
}
