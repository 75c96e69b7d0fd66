//! Deduplicated snapshots (docs/snapshots.md): writing one from an
//! [`EntrySource`], and reading one back.
//!
//! Writing: each entry becomes a [`pb::Node`] of the metadata stream; a
//! file's content is cut into chunks ([`Chunker`]), each chunk looked up by
//! its keyed id in the index ([`Repo`]) and, when new, compressed into the
//! open data pack. A file the files cache vouches for is not read at all.
//! The metadata stream is cut and deduplicated the same way into metadata
//! packs. Full packs are sealed ([`BlockSealer::seal_pack`]), handed to the
//! pack sink, and indexed once stored. At the end the packs are made
//! durable, then the signed root goes to the snapshot's sink.

pub use prost::bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bitdust_block::pack::{self, PackKind, PackWriter};
use bitdust_block::root::{self, Root, SnapshotRoot};
use bitdust_block::{BackupId, BackupInfo, BlockOpener, BlockSealer, Manifest};
use bitdust_crypto::{BackupKey, ChunkId, DedupKeys, Identity};
use bitdust_ecc::{Code, Scheme};
use bitdust_proto::format::v1 as pb;
use prost::Message;

use crate::chunker::{Chunker, FILE_CHUNKS, META_CHUNKS};
pub use crate::extract::Owners;
use crate::extract::{Attrs, ExtractError, Extractor, Special};
use crate::repo::{CachedFile, ChunkLoc, PackRecord, PackSet, PackState, Repo, RepoError, Time};
use crate::restore::{collect_into, decodable};
use crate::stages::{Compressors, PackStore, Reply, Stored};
use crate::{BackupKeyMaterial, FragmentSink, FragmentSource, SinkError, SourceError};

mod dirs;
mod load;

/// What kind of entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    #[default]
    File,
    /// A directory.
    Directory,
    /// A symlink and its target.
    Symlink(Vec<u8>),
    /// A named pipe.
    Fifo,
    /// A character (`block` false) or block device and its number.
    Device {
        /// A block device.
        block: bool,
        /// Its device number.
        rdev: u64,
    },
}

/// One entry of a tree being backed up, as `lstat` saw it.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    /// The absolute path without its leading `/`.
    pub path: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Its permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: Time,
    /// Status change time.
    pub ctime: Time,
    /// Size in bytes.
    pub size: u64,
    /// Inode.
    pub ino: u64,
    /// Device.
    pub dev: u64,
    /// Access time (none from a caller that did not send one).
    pub atime: Option<Time>,
    /// Owner and group (none from a caller that did not send them).
    pub owner: Option<crate::meta::Owner>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<pb::Xattr>,
    /// Links to the inode.
    pub nlink: u64,
    /// A sparse file's holes; its content is the bytes outside them.
    pub holes: Vec<pb::Extent>,
}

impl Entry {
    /// The bytes of content a file entry has (outside its holes).
    pub fn data_len(&self) -> u64 {
        crate::meta::data_len(self.size, &self.holes)
    }
}

/// Where a snapshot's entries come from, in snapshot order (depth-first,
/// each directory's children sorted by name bytes).
pub trait EntrySource {
    /// The next entry, or `None` at the end.
    fn next_entry(&mut self) -> io::Result<Option<Entry>>;
    /// The content of the file entry returned last.
    fn content(&mut self) -> io::Result<Box<dyn Read + '_>>;
    /// Entries left out so far, with reasons (taken once).
    fn take_skipped(&mut self) -> Vec<String>;
    /// Whether the file whose content was read last had another size or
    /// mtime once read (asked after reading it).
    fn changed(&mut self) -> bool {
        false
    }
    /// The extended attributes of the entry returned last, for a source
    /// that reads them only when asked (its entries carry none); `None`
    /// when the entry carries them. Asked only for an entry whose node is
    /// built, not taken from its directory's record. The flag says whether
    /// every attribute was read (a failure is named in the skipped list).
    fn xattrs(&mut self) -> Option<(Vec<pb::Xattr>, bool)> {
        None
    }
}

/// A snapshot could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The index or files cache failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Reading an entry failed in a way that ends the snapshot.
    #[error("reading {path}: {source}")]
    Source {
        /// The entry.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Too many positions failed to take fragments.
    #[error("{0}")]
    Sink(String),
    /// A pack or root is malformed or does not open.
    #[error("{0}")]
    Format(String),
    /// Fetching fragments failed.
    #[error(transparent)]
    Fetch(#[from] SourceError),
    /// Writing the restored tree failed.
    #[error(transparent)]
    Extract(#[from] ExtractError),
}

impl From<SinkError> for SnapshotError {
    fn from(e: SinkError) -> Self {
        SnapshotError::Sink(e.0)
    }
}

/// How snapshots are cut, packed and coded.
#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    /// ECC scheme.
    pub scheme: Scheme,
    /// Positions.
    pub suppliers: usize,
    /// zstd level for chunks.
    pub zstd_level: i32,
    /// A pack is sealed when its chunk data reaches this size.
    pub pack_size: usize,
    /// Threads compressing chunks; 0 for one per core.
    pub workers: usize,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            scheme: Scheme::Xor,
            suppliers: 7,
            zstd_level: crate::DEFAULT_ZSTD_LEVEL,
            pack_size: crate::DEFAULT_BLOCK_SIZE,
            workers: 0,
        }
    }
}

/// What a snapshot run made.
#[derive(Debug)]
pub struct SnapshotReport {
    /// The signed root, as stored.
    pub root: Vec<u8>,
    /// Counts.
    pub stats: pb::SnapshotStats,
    /// The packs it references.
    pub packs: PackSet,
    /// Positions that failed to take some fragments (to repair).
    pub degraded_positions: Vec<usize>,
    /// Entries left out, with reasons.
    pub skipped: Vec<String>,
    /// Where the time went.
    pub times: crate::stages::StageTimes,
}

/// An open pack: its writer and its (reserved) number.
struct OpenPack {
    writer: PackWriter,
    number: Option<u64>,
}

/// Writes one snapshot of one backup.
pub struct SnapshotWriter<'a> {
    repo: &'a Repo,
    identity: Arc<Identity>,
    backup: BackupId,
    snapshot: u64,
    parent: u64,
    keys: DedupKeys,
    key: &'a BackupKeyMaterial,
    opts: SnapshotOptions,
    code: Code,
    /// Taken by the pack store's thread while [`SnapshotWriter::write_all`] runs.
    packs_sink: Option<&'a mut (dyn FragmentSink + Send)>,
    /// The stages (while `write_all` runs).
    compress: Option<Compressors>,
    store: Option<PackStore>,
    /// New data chunks given to the compressors and not packed yet.
    inflight: HashSet<ChunkId>,
    /// Pack writers back from the store, for their buffers.
    spare_writers: Vec<PackWriter>,
    /// Why positions failed, as the sink said.
    failures: HashMap<usize, String>,
    /// The run failed: what is stored is kept where it can be.
    salvaging: bool,
    /// Each stage's time, and when the run began.
    clocks: Arc<crate::stages::Clocks>,
    began: std::time::Instant,
    data: OpenPack,
    meta: OpenPack,
    /// Chunks in packs not in the index yet: the open packs, and packs
    /// stored but not yet made durable.
    pending: HashMap<ChunkId, ChunkLoc>,
    /// Packs stored but not yet durable: recorded in the index only once
    /// the sink has made them durable, so that no later run can reuse a
    /// chunk a power loss took away.
    unsynced: Batch,
    /// Chunks in `unsynced`.
    unsynced_chunks: usize,
    /// Batches the store is making durable (at most one), recorded once
    /// it answers.
    syncing: std::collections::VecDeque<Batch>,
    /// Taken out while a file is read (its chunks are lent from it).
    chunker: Option<Chunker>,
    meta_chunker: Chunker,
    meta_buf: Vec<u8>,
    meta_refs: Vec<pb::ChunkRef>,
    referenced: PackSet,
    /// Compresses metadata chunks (on the caller's thread).
    zstd: zstd::bulk::Compressor<'static>,
    zbuf: Vec<u8>,
    stats: pb::SnapshotStats,
    degraded: Vec<usize>,
    cache_batch: Vec<(Vec<u8>, CachedFile)>,
    /// First names of inodes with several links, not yet in the index's
    /// scratch table.
    links: HashMap<(u64, u64), crate::repo::FirstLink>,
    started: Time,
    paths: Vec<Vec<u8>>,
    /// Files that changed while being read.
    warnings: Vec<String>,
    /// Told the bytes of content backed up (read, or vouched for).
    progress: &'a dyn crate::Progress,
    /// The directories on the path to the entry being added, outermost
    /// first, with their stored records and the ones being built.
    dirs: Vec<dirs::OpenDir>,
    /// The index's epoch when the run began.
    epoch: u64,
    /// Packs of stored records checked this run, and those found live
    /// (bitmaps: two bits a pack number, however many are checked).
    packs_checked: PackSet,
    packs_live: PackSet,
    status_buf: Vec<u8>,
    /// Directory records to write (or drop), and their bytes.
    dir_batch: Vec<(Vec<u8>, u32, Option<Vec<u8>>)>,
    dir_batch_len: usize,
}

/// Packs stored, with their records and chunks, to index once durable.
type Batch = Vec<(u64, PackRecord, Vec<bitdust_block::pack::PackEntry>)>;

/// A file's chunks, size, holes, whether it changed while read, and
/// whether its content may be trusted next time.
type FileChunks = (Vec<ChunkId>, u64, Vec<pb::Extent>, bool, bool);

/// Files-cache records written per transaction.
const CACHE_BATCH: usize = 512;
/// Stored packs made durable (then indexed) together: at 4 MiB packs,
/// every 128 MiB.
const SYNC_PACKS: usize = 32;
/// ... or once they hold this many chunks (the pending map's bound).
const SYNC_CHUNKS: usize = 65_536;

impl<'a> SnapshotWriter<'a> {
    /// A writer of snapshot `snapshot` (after `parent`, 0 for none) of
    /// `backup`, of the source paths `paths`; packs go to `packs_sink` (a
    /// sink of version 0).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        repo: &'a Repo,
        identity: Arc<Identity>,
        backup: BackupId,
        snapshot: u64,
        parent: u64,
        paths: Vec<Vec<u8>>,
        key: &'a BackupKeyMaterial,
        opts: SnapshotOptions,
        packs_sink: &'a mut (dyn FragmentSink + Send),
        started: Time,
    ) -> Result<SnapshotWriter<'a>, SnapshotError> {
        let code = Code::new(opts.scheme, opts.suppliers)
            .map_err(|e| SnapshotError::Format(e.to_string()))?;
        // Chunks are reused from any earlier pack, so every pack of a
        // backup is in one code.
        repo.record_code(backup, opts.scheme, opts.suppliers)?;
        let keys = DedupKeys::derive(&identity, &backup.0);
        let seed = keys.gear_seed();
        let zstd = zstd::bulk::Compressor::new(opts.zstd_level)
            .map_err(|e| SnapshotError::Format(format!("zstd: {e}")))?;
        Ok(SnapshotWriter {
            repo,
            identity,
            backup,
            snapshot,
            parent,
            keys,
            key,
            opts,
            code,
            packs_sink: Some(packs_sink),
            compress: None,
            store: None,
            inflight: HashSet::new(),
            spare_writers: Vec::new(),
            failures: HashMap::new(),
            salvaging: false,
            clocks: Arc::default(),
            began: std::time::Instant::now(),
            data: OpenPack {
                writer: PackWriter::new(PackKind::Data),
                number: None,
            },
            meta: OpenPack {
                writer: PackWriter::new(PackKind::Meta),
                number: None,
            },
            pending: HashMap::new(),
            unsynced: Vec::new(),
            unsynced_chunks: 0,
            syncing: Default::default(),
            chunker: Some(Chunker::new(FILE_CHUNKS, seed)),
            meta_chunker: Chunker::new(META_CHUNKS, seed),
            meta_buf: Vec::new(),
            meta_refs: Vec::new(),
            referenced: PackSet::default(),
            zstd,
            zbuf: Vec::new(),
            stats: pb::SnapshotStats::default(),
            degraded: Vec::new(),
            cache_batch: Vec::new(),
            links: HashMap::new(),
            started,
            paths,
            warnings: Vec::new(),
            progress: &(),
            dirs: Vec::new(),
            epoch: repo.epoch(backup)?,
            packs_checked: PackSet::default(),
            packs_live: PackSet::default(),
            status_buf: Vec::new(),
            dir_batch: Vec::new(),
            dir_batch_len: 0,
        })
    }

    /// Reports progress (bytes of content backed up) to `progress`.
    pub fn with_progress(mut self, progress: &'a dyn crate::Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Adds every entry of `source`, then finishes (as `SnapshotWriter::finish`).
    /// New chunks are compressed, and packs sealed and stored, on worker
    /// threads ([`crate::stages`]) that end with the call.
    pub fn write_all(
        mut self,
        source: &mut dyn EntrySource,
        snapshot_sink: &mut dyn FragmentSink,
    ) -> Result<SnapshotReport, SnapshotError> {
        let sink = self
            .packs_sink
            .take()
            .ok_or_else(|| SnapshotError::Format("the pack sink is in use".into()))?;
        let sealer = BlockSealer::new(
            self.identity.clone(),
            self.backup,
            0,
            self.code.clone(),
            self.key.recipient.clone(),
        );
        let keys = DedupKeys::derive(&self.identity, &self.backup.0);
        let workers = crate::stages::worker_count(self.opts.workers);
        std::thread::scope(|scope| {
            self.began = std::time::Instant::now();
            self.compress = Some(Compressors::spawn(
                scope,
                workers,
                self.opts.zstd_level,
                self.clocks.clone(),
            )?);
            self.store = Some(PackStore::spawn(
                scope,
                sink,
                sealer,
                keys,
                self.clocks.clone(),
            ));
            // The stages hang up when `self` goes, with the call.
            self.run(source, snapshot_sink)
        })
    }

    fn run(
        mut self,
        source: &mut dyn EntrySource,
        snapshot_sink: &mut dyn FragmentSink,
    ) -> Result<SnapshotReport, SnapshotError> {
        // The hard-link table is this run's alone (a run that crashed may
        // have left one).
        self.repo.links_clear(self.backup)?;
        loop {
            let entry = match source.next_entry() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    self.salvage();
                    return Err(SnapshotError::Source {
                        path: "the tree".into(),
                        source: e,
                    });
                }
            };
            if let Err(e) = self.add(&entry, source) {
                self.salvage();
                return Err(e);
            }
        }
        if let Err(e) = self.close_dirs(None) {
            self.salvage();
            return Err(e);
        }
        let skipped = source.take_skipped();
        self.finish(snapshot_sink, skipped)
    }

    /// Adds one entry (a file's content read from `source` unless the
    /// files cache vouches for it).
    fn add(&mut self, e: &Entry, source: &mut dyn EntrySource) -> Result<(), SnapshotError> {
        let (parent, name) = dirs::split(&e.path);
        self.open_dir(parent)?;
        let mut status = std::mem::take(&mut self.status_buf);
        dirs::status_of(e, &mut status);
        let result = self.add_in_dir(e, name, &status, source);
        self.status_buf = status;
        result
    }

    /// Adds entry `e`, named `name` in the innermost open directory, whose
    /// status is `status`: its stored node when the directory's record
    /// vouches for it, else built (reading the file unless a record or the
    /// files cache vouches for its content).
    fn add_in_dir(
        &mut self,
        e: &Entry,
        name: &[u8],
        status: &[u8],
        source: &mut dyn EntrySource,
    ) -> Result<(), SnapshotError> {
        let linked = e.kind == EntryKind::File && e.nlink > 1;
        let mut from_dir = None;
        let found = self.find_child(name)?;
        if let Some(i) = found {
            let whole = self
                .dirs
                .last()
                .and_then(|d| d.old.as_ref())
                .is_some_and(|old| {
                    old.status(i) == status
                        && !linked
                        && old.vouched(i)
                        && old.whole(i)
                        && old.resolved(i)
                });
            if whole && self.packs_live(i)? {
                return self.add_kept(e, i);
            }
        }
        if let Some(i) = found
            && let Some(old) = self.dirs.last().and_then(|d| d.old.as_ref())
            && e.kind == EntryKind::File
        {
            // Its content may still be the same (an atime or mode moved):
            // its chunks, checked one by one in the index.
            from_dir = dirs::cached_of(old.status(i), old.node(i), old.vouched(i));
        }
        let over = self.dirs.last().is_none_or(|d| d.over);
        let mut node = node_of(e);
        // Taken whole next time only if nothing here may be missing or
        // change unseen: every extended attribute was read, and the status
        // did not change within a second of the run's start (an attribute
        // set in the same clock tick as the lstat leaves the ctime as it
        // was, as a write may leave the mtime).
        let mut whole = e.ctime.secs < self.started.secs - 1;
        if let Some((xattrs, complete)) = source.xattrs() {
            node.xattrs = xattrs;
            whole &= complete;
        }
        let mut vouched = true;
        self.count_kind(&e.kind);
        match &e.kind {
            EntryKind::Directory
            | EntryKind::Symlink(_)
            | EntryKind::Fifo
            | EntryKind::Device { .. } => {}
            EntryKind::File => {
                if let Some(first) = self.first_link(e)? {
                    // A later name of an inode already stored: a link, its
                    // content not read again.
                    node.link = first.path;
                    node.size = first.size;
                    node.chunks = first.chunks.iter().map(|c| c.0.to_vec()).collect();
                    self.stats.hard_links += 1;
                    // Its chunks are the first name's, read before this
                    // name's lstat: not vouched for under this status.
                    vouched = false;
                } else {
                    let (chunks, size, holes, changed, trusted) =
                        self.file_chunks(e, source, from_dir, over)?;
                    vouched = trusted;
                    node.size = size;
                    node.holes = holes;
                    node.changed = changed;
                    if changed {
                        self.stats.changed_while_read += 1;
                    }
                    self.stats.content_bytes += size;
                    if e.nlink > 1 {
                        self.links.insert(
                            (e.dev, e.ino),
                            crate::repo::FirstLink {
                                path: e.path.clone(),
                                size,
                                chunks: chunks.clone(),
                            },
                        );
                        if self.links.len() >= CACHE_BATCH {
                            self.flush_cache()?;
                        }
                    }
                    node.chunks = chunks.iter().map(|c| c.0.to_vec()).collect();
                }
            }
        }
        let len = node.encoded_len();
        prost::encoding::encode_varint(len as u64, &mut self.meta_buf);
        let at = self.meta_buf.len();
        node.encode(&mut self.meta_buf)
            .map_err(|e| SnapshotError::Format(e.to_string()))?;
        if !over {
            let fresh = dirs::NewChild::Fresh {
                name: name.to_vec(),
                status: status.to_vec(),
                node: self.meta_buf[at..].to_vec(),
                vouched,
                whole,
                chunks: node
                    .chunks
                    .iter()
                    .filter_map(|c| c.as_slice().try_into().ok().map(ChunkId))
                    .collect(),
            };
            if let Some(d) = self.dirs.last_mut() {
                d.add_fresh(fresh);
            }
            self.after_child(name)?;
        }
        while self.meta_buf.len() >= META_CHUNKS.max {
            self.cut_meta()?;
        }
        Ok(())
    }

    /// Adds child `i` of the innermost open directory's record as stored:
    /// its node, its packs referenced, its counts.
    fn add_kept(&mut self, e: &Entry, i: usize) -> Result<(), SnapshotError> {
        let Some(old) = self.dirs.last().and_then(|d| d.old.as_ref()) else {
            return Err(SnapshotError::Format("no directory record is open".into()));
        };
        let node = old.node(i);
        prost::encoding::encode_varint(node.len() as u64, &mut self.meta_buf);
        self.meta_buf.extend_from_slice(node);
        for p in old.packs(i) {
            self.referenced.insert(p);
        }
        self.count_kind(&e.kind);
        if e.kind == EntryKind::File {
            self.stats.files_unchanged += 1;
            self.stats.content_bytes += e.size;
            self.progress.advance(e.size);
        }
        self.stats.entries_reused += 1;
        if let Some(d) = self.dirs.last_mut() {
            d.keep(i);
        }
        let name = dirs::split(&e.path).1;
        self.after_child(name)?;
        while self.meta_buf.len() >= META_CHUNKS.max {
            self.cut_meta()?;
        }
        Ok(())
    }

    /// Counts an entry of kind `kind` in the snapshot's totals.
    fn count_kind(&mut self, kind: &EntryKind) {
        match kind {
            EntryKind::Directory => self.stats.directories += 1,
            EntryKind::Symlink(_) => self.stats.symlinks += 1,
            EntryKind::Fifo | EntryKind::Device { .. } => self.stats.specials += 1,
            EntryKind::File => self.stats.files += 1,
        }
    }

    /// Whether every pack child `i` of the innermost open directory's
    /// record names is live, in the epoch the record was written in.
    fn packs_live(&mut self, i: usize) -> Result<bool, SnapshotError> {
        let Some(old) = self.dirs.last().and_then(|d| d.old.as_ref()) else {
            return Ok(false);
        };
        let mut packs = old.packs(i).peekable();
        if packs.peek().is_none() {
            return Ok(true);
        }
        if old.epoch != self.epoch {
            return Ok(false);
        }
        for p in packs {
            if !self.packs_checked.contains(p) {
                if self.repo.pack_live(self.backup, p)? {
                    self.packs_live.insert(p);
                }
                self.packs_checked.insert(p);
            }
            if !self.packs_live.contains(p) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The stored child named `name` of the innermost open directory, if
    /// any, reading its record's next segments as the names pass them.
    fn find_child(&mut self, name: &[u8]) -> Result<Option<usize>, SnapshotError> {
        loop {
            let Some(d) = self.dirs.last_mut() else {
                return Ok(None);
            };
            match d.find(name) {
                Ok(found) => return Ok(found),
                Err(next) => {
                    let record = {
                        let txn = self.repo.read()?;
                        self.repo.dir_record(&txn, self.backup, &d.path, next)?
                    };
                    d.next_segment(next, record.and_then(dirs::Record::decode));
                }
            }
        }
    }

    /// Ends the innermost open directory's segment after child `name` when
    /// its cut says so.
    fn after_child(&mut self, name: &[u8]) -> Result<(), SnapshotError> {
        let Some(d) = self.dirs.last_mut() else {
            return Ok(());
        };
        if !d.cut_after(name) {
            return Ok(());
        }
        let mut d = self
            .dirs
            .pop()
            .ok_or_else(|| SnapshotError::Format("no directory is open".into()))?;
        let written = self.write_segment(&mut d, true);
        d.next_new_segment();
        self.dirs.push(d);
        written
    }

    /// Makes `parent` the innermost open directory: the ones not on its
    /// path are finished (their records written), and it is opened with
    /// its stored record if it is not open.
    fn open_dir(&mut self, parent: &[u8]) -> Result<(), SnapshotError> {
        if self.dirs.last().is_some_and(|d| d.path == parent) {
            return Ok(());
        }
        self.close_dirs(Some(parent))?;
        if self.dirs.last().is_some_and(|d| d.path == parent) {
            return Ok(());
        }
        let held: usize = self.dirs.iter().map(dirs::OpenDir::held).sum();
        let over = held > dirs::MAX_OPEN;
        let old = if over {
            None
        } else {
            let txn = self.repo.read()?;
            self.repo.dir_record(&txn, self.backup, parent, 0)?
        };
        let old = old.and_then(dirs::Record::decode);
        self.dirs
            .push(dirs::OpenDir::new(parent.to_vec(), old, over));
        Ok(())
    }

    /// Finishes the open directories that `parent` is not inside (all of
    /// them for `None`, at the end of a run).
    fn close_dirs(&mut self, parent: Option<&[u8]>) -> Result<(), SnapshotError> {
        while let Some(d) = self.dirs.last() {
            if parent.is_some_and(|p| dirs::within(p, &d.path)) {
                break;
            }
            let Some(mut d) = self.dirs.pop() else { break };
            if d.over {
                continue;
            }
            self.write_segment(&mut d, false)?;
            // Segments stored past the last one written are stale: those
            // read, and those after the last one read if it said more
            // followed.
            let known = d.old_segments.len() as u32;
            for stale in d.segment + 1..known {
                self.queue_dir(d.path.clone(), stale, None)?;
            }
            let mut next = known.max(d.segment + 1);
            let mut more = d.old_segments.last().is_some_and(|s| s.2);
            while more {
                let stored = {
                    let txn = self.repo.read()?;
                    self.repo.dir_record(&txn, self.backup, &d.path, next)?
                };
                let Some(stored) = stored else { break };
                more = dirs::Record::decode(stored).is_some_and(|r| r.more);
                self.queue_dir(d.path.clone(), next, None)?;
                next += 1;
            }
        }
        Ok(())
    }

    /// Writes the segment of `d` being built (`more`: another follows),
    /// unless it is the stored one and its stamp is not due. A fresh
    /// child's packs are those of its chunks, in a pack of this run or in
    /// the index; one still being compressed leaves it unresolved (its
    /// chunks are looked up one by one next time).
    fn write_segment(&mut self, d: &mut dirs::OpenDir, more: bool) -> Result<(), SnapshotError> {
        if let Some(seen) = d.unchanged(more)
            && !dirs::stamp_due(&d.path, d.segment, seen, self.snapshot)
        {
            return Ok(());
        }
        let mut out = Vec::with_capacity(d.new_len + 24);
        dirs::encode_head(&mut out, self.snapshot, self.epoch, more, d.new.len());
        let txn = self.repo.read()?;
        for c in &d.new {
            match c {
                dirs::NewChild::Kept(range) => out.extend_from_slice(&d.kept[range.clone()]),
                dirs::NewChild::Fresh {
                    name,
                    status,
                    node,
                    vouched,
                    whole,
                    chunks,
                } => {
                    let mut packs = Vec::with_capacity(chunks.len());
                    let mut resolved = true;
                    for id in chunks {
                        if self.inflight.contains(id) {
                            resolved = false;
                            break;
                        }
                        match self.locate(&txn, id)? {
                            Some(loc) => packs.push(loc.pack),
                            None => {
                                resolved = false;
                                break;
                            }
                        }
                    }
                    packs.sort_unstable();
                    packs.dedup();
                    dirs::encode_fresh(
                        &mut out,
                        name,
                        status,
                        node,
                        (*vouched, *whole),
                        resolved.then_some(packs.as_slice()),
                    );
                }
            }
        }
        drop(txn);
        self.queue_dir(d.path.clone(), d.segment, Some(out))
    }

    fn queue_dir(
        &mut self,
        path: Vec<u8>,
        segment: u32,
        record: Option<Vec<u8>>,
    ) -> Result<(), SnapshotError> {
        self.dir_batch_len += path.len() + record.as_ref().map_or(0, Vec::len);
        self.dir_batch.push((path, segment, record));
        if self.dir_batch.len() >= CACHE_BATCH || self.dir_batch_len >= 4 << 20 {
            self.flush_cache()?;
        }
        Ok(())
    }

    /// The first name this run stored of file `e`'s inode, if it has
    /// several links and one came before.
    fn first_link(&self, e: &Entry) -> Result<Option<crate::repo::FirstLink>, SnapshotError> {
        if e.nlink < 2 {
            return Ok(None);
        }
        if let Some(f) = self.links.get(&(e.dev, e.ino)) {
            return Ok(Some(f.clone()));
        }
        let txn = self.repo.read()?;
        Ok(self.repo.first_link(&txn, self.backup, e.dev, e.ino)?)
    }

    /// The chunk ids and length of file `e`: from the files cache when it
    /// vouches for the file and every chunk is still stored, else by
    /// reading at most the `lstat` size (what was read is what is stored: a
    /// file that shrank while being read is stored as read, named in the
    /// warnings, and not vouched for next time).
    ///
    /// `from_dir` is what the directory's record knew of the file (the
    /// files cache is asked only without it), and `cache` says whether the
    /// files cache keeps the file (its directory keeps no record). The last
    /// value says whether its content may be trusted next time.
    fn file_chunks(
        &mut self,
        e: &Entry,
        source: &mut dyn EntrySource,
        from_dir: Option<CachedFile>,
        cache: bool,
    ) -> Result<FileChunks, SnapshotError> {
        let data_len = e.data_len();
        let fresh = CachedFile {
            size: e.size,
            mtime: e.mtime,
            ctime: e.ctime,
            ino: e.ino,
            dev: e.dev,
            seen: self.snapshot,
            chunks: Vec::new(),
        };
        let cached = match from_dir {
            Some(c) => Some(c),
            None => {
                let txn = self.repo.read()?;
                self.repo.file(&txn, self.backup, &e.path)?
            }
        };
        if let Some(c) = &cached
            && c.unchanged(&fresh)
        {
            // Each chunk's pack, or none for a chunk being compressed (its
            // pack is referenced once it is packed).
            let mut packs = Vec::with_capacity(c.chunks.len());
            {
                let txn = self.repo.read()?;
                for id in &c.chunks {
                    if self.inflight.contains(id) {
                        packs.push(None);
                        continue;
                    }
                    match self.locate(&txn, id)? {
                        Some(loc) => packs.push(Some(loc.pack)),
                        None => break,
                    }
                }
            }
            if packs.len() == c.chunks.len() {
                for p in packs.into_iter().flatten() {
                    self.referenced.insert(p);
                }
                self.stats.files_unchanged += 1;
                self.progress.advance(e.size);
                // The record is written again only in its turn: rewriting
                // every record made an unchanged backup of many files
                // spend half its time in LMDB's commit.
                if cache && c.stamp_due(self.snapshot) {
                    let mut seen = c.clone();
                    seen.seen = self.snapshot;
                    self.cache(e, seen)?;
                }
                return Ok((c.chunks.clone(), e.size, e.holes.clone(), false, true));
            }
        }
        let path = String::from_utf8_lossy(&e.path).into_owned();
        let read_err = |source| SnapshotError::Source {
            path: path.clone(),
            source,
        };
        let mut reader = source.content().map_err(read_err)?.take(data_len);
        let mut ids = Vec::new();
        let mut read = 0u64;
        // The chunker is taken out while the file is read, so its chunks
        // are stored straight from its buffer, never copied.
        let mut chunker = self
            .chunker
            .take()
            .ok_or_else(|| SnapshotError::Format("the chunker is in use".into()))?;
        chunker.reset();
        let result = (|| {
            while let Some(chunk) =
                crate::stages::Clocks::time(&self.clocks.read, || chunker.next_chunk(&mut reader))
                    .map_err(read_err)?
            {
                self.stats.bytes_read += chunk.len() as u64;
                read += chunk.len() as u64;
                self.progress.advance(chunk.len() as u64);
                ids.push(self.store_data(chunk)?);
            }
            Ok::<(), SnapshotError>(())
        })();
        self.chunker = Some(chunker);
        result?;
        drop(reader);
        let changed = source.changed();
        // New: the cache never saw the path; unchanged: read again (its
        // status changed, or it was not vouched for) and found the same.
        match &cached {
            None => self.stats.files_new += 1,
            Some(c) if c.chunks == ids => self.stats.files_unchanged += 1,
            Some(_) => self.stats.files_changed += 1,
        }
        let mut f = fresh;
        f.chunks = ids.clone();
        // A file that shrank ends after what was read.
        let (size, holes) = if read == data_len {
            (e.size, e.holes.clone())
        } else {
            crate::meta::cut_to_data(&e.holes, read)
        };
        if read != data_len {
            self.warnings.push(format!(
                "{path}: changed while being read ({read} of the {data_len} bytes it had); stored as read"
            ));
            f.not_vouched();
        } else if changed {
            self.warnings.push(format!(
                "{path}: changed while being read (its size or mtime differ after reading); stored as read"
            ));
            f.not_vouched();
        } else if e.mtime.secs >= self.started.secs - 1 {
            // A file changed within a second of the scan's start may change
            // again unseen in the same second: recorded, not vouched for.
            f.not_vouched();
        }
        let trusted = f.ctime.nanos != u32::MAX;
        if cache {
            self.cache(e, f)?;
        }
        Ok((ids, size, holes, changed || read != data_len, trusted))
    }

    fn cache(&mut self, e: &Entry, f: CachedFile) -> Result<(), SnapshotError> {
        self.cache_batch.push((e.path.clone(), f));
        if self.cache_batch.len() >= CACHE_BATCH {
            self.flush_cache()?;
        }
        Ok(())
    }

    fn flush_cache(&mut self) -> Result<(), SnapshotError> {
        if self.cache_batch.is_empty() && self.links.is_empty() && self.dir_batch.is_empty() {
            return Ok(());
        }
        let mut w = self.repo.write()?;
        for (path, f) in self.cache_batch.drain(..) {
            self.repo.put_file(&mut w, self.backup, &path, &f)?;
        }
        for (path, segment, record) in self.dir_batch.drain(..) {
            self.repo
                .put_dir_record(&mut w, self.backup, &path, segment, record.as_deref())?;
        }
        self.dir_batch_len = 0;
        for ((dev, ino), first) in self.links.drain() {
            self.repo
                .put_first_link(&mut w, self.backup, dev, ino, &first)?;
        }
        w.commit().map_err(RepoError::from)?;
        Ok(())
    }

    /// Where chunk `id` is: in the index, or in an open pack.
    fn locate(
        &self,
        txn: &heed::RoTxn<'_>,
        id: &ChunkId,
    ) -> Result<Option<ChunkLoc>, SnapshotError> {
        if let Some(l) = self.pending.get(id) {
            return Ok(Some(*l));
        }
        Ok(self.repo.chunk(txn, self.backup, id)?)
    }

    /// Stores `plain` as a data chunk unless it is stored already (or on
    /// its way): a new chunk goes to the compressors, and the oldest
    /// compressed chunks are packed once too many are out.
    fn store_data(&mut self, plain: &[u8]) -> Result<ChunkId, SnapshotError> {
        let id = self.keys.chunk_id(plain);
        if self.inflight.contains(&id) {
            return Ok(id);
        }
        let known = {
            let txn = self.repo.read()?;
            self.locate(&txn, &id)?
        };
        if let Some(loc) = known {
            self.referenced.insert(loc.pack);
            return Ok(id);
        }
        while stage(&mut self.compress)?.full_for(plain.len()) {
            self.pack_next()?;
        }
        stage(&mut self.compress)?.submit(id, plain)?;
        self.inflight.insert(id);
        Ok(id)
    }

    /// Packs the oldest chunk the compressors hold; false when they hold none.
    fn pack_next(&mut self) -> Result<bool, SnapshotError> {
        let Some(c) = stage(&mut self.compress)?.next_done()? else {
            return Ok(false);
        };
        let packed = self.pack(PackKind::Data, c.id, &c.data, c.plain_len);
        self.inflight.remove(&c.id);
        stage(&mut self.compress)?.recycle(c.data);
        packed.map(|_| true)
    }

    /// Packs every chunk the compressors hold.
    fn drain_compressors(&mut self) -> Result<(), SnapshotError> {
        while self.pack_next()? {}
        Ok(())
    }

    /// Stores `plain` as a metadata chunk unless it is stored already,
    /// compressed on this thread (its location goes into the root).
    fn store_meta(&mut self, plain: &[u8]) -> Result<(ChunkId, ChunkLoc), SnapshotError> {
        let id = self.keys.chunk_id(plain);
        if self.inflight.contains(&id) {
            // The same bytes as a data chunk still being compressed.
            self.drain_compressors()?;
        }
        let known = {
            let txn = self.repo.read()?;
            self.locate(&txn, &id)?
        };
        if let Some(loc) = known {
            self.referenced.insert(loc.pack);
            return Ok((id, loc));
        }
        // Compressed into one buffer kept for the whole run.
        let mut zbuf = std::mem::take(&mut self.zbuf);
        zbuf.clear();
        zbuf.reserve(zstd::zstd_safe::compress_bound(plain.len()));
        let packed = self
            .zstd
            .compress_to_buffer(plain, &mut zbuf)
            .map_err(|e| SnapshotError::Format(format!("zstd: {e}")))
            .and_then(|_| self.pack(PackKind::Meta, id, &zbuf, plain.len() as u32));
        self.zbuf = zbuf;
        Ok((id, packed?))
    }

    /// Adds chunk `id`, compressed to `stored`, to the open pack of `kind`.
    fn pack(
        &mut self,
        kind: PackKind,
        id: ChunkId,
        stored: &[u8],
        plain_len: u32,
    ) -> Result<ChunkLoc, SnapshotError> {
        // A pack is closed before a chunk would take it past the pack size
        // (a chunk alone may fill one), so no pack is more than the pack
        // size or one chunk.
        let open = match kind {
            PackKind::Data => &self.data,
            PackKind::Meta => &self.meta,
        };
        if !open.writer.is_empty()
            && (open.writer.data_len() + stored.len() > self.opts.pack_size
                || open.writer.is_full())
        {
            self.seal(kind)?;
        }
        let open = match kind {
            PackKind::Data => &mut self.data,
            PackKind::Meta => &mut self.meta,
        };
        let number = match open.number {
            Some(n) => n,
            None => {
                let n = self.repo.reserve_packs(self.backup, 1)?;
                open.number = Some(n);
                n
            }
        };
        if open.writer.is_empty() {
            // Its buffer (kept for the next packs) at the pack size, or one
            // chunk's if larger: the most a pack holds.
            open.writer
                .reserve_exact(self.opts.pack_size.max(stored.len()));
        }
        let loc = ChunkLoc {
            pack: number,
            offset: open.writer.data_len() as u32,
            stored_len: stored.len() as u32,
            plain_len,
        };
        open.writer.push(id, stored, plain_len);
        self.pending.insert(id, loc);
        self.referenced.insert(number);
        self.stats.chunks_added += 1;
        self.stats.added_plain += u64::from(plain_len);
        Ok(loc)
    }

    /// Hands the open pack of `kind` to the store (sealed and stored on
    /// its thread), takes the answers that are ready, and asks for the
    /// stored packs to be made durable every [`SYNC_PACKS`].
    fn seal(&mut self, kind: PackKind) -> Result<(), SnapshotError> {
        let open = match kind {
            PackKind::Data => &mut self.data,
            PackKind::Meta => &mut self.meta,
        };
        let Some(number) = open.number.take() else {
            return Ok(());
        };
        // The store answers for the pack before this one as it takes this
        // one, so its writer is back before a fresh one is needed: two
        // writers' buffers in all, not three (issue 19: peak memory).
        let writer = std::mem::replace(&mut open.writer, PackWriter::new(kind));
        stage(&mut self.store)?.put(number, writer)?;
        while self.take_reply(false)? {}
        let fresh = crate::stages::fresh_writer(&mut self.spare_writers, kind);
        match kind {
            PackKind::Data => self.data.writer = fresh,
            PackKind::Meta => self.meta.writer = fresh,
        }
        if self.unsynced.len() >= SYNC_PACKS || self.unsynced_chunks >= SYNC_CHUNKS {
            self.start_sync()?;
        }
        Ok(())
    }

    /// Takes the store's next answer (waiting for it when `wait`); false
    /// when there was none.
    fn take_reply(&mut self, wait: bool) -> Result<bool, SnapshotError> {
        match stage(&mut self.store)?.reply(wait)? {
            None => Ok(false),
            Some(Reply::Stored(s)) => self.stored(s).map(|_| true),
            Some(Reply::Synced(r)) => self.synced(r).map(|_| true),
        }
    }

    /// Takes every answer the store still owes.
    fn take_all_replies(&mut self) -> Result<(), SnapshotError> {
        while self.take_reply(true)? {}
        Ok(())
    }

    /// A pack stored: it joins those waiting to be made durable, or the
    /// run fails when the positions failed so far are more than the code
    /// tolerates.
    fn stored(&mut self, s: Stored) -> Result<(), SnapshotError> {
        let Stored {
            number,
            mut writer,
            result,
        } = s;
        let stored = result?;
        let mut missing = 0u64;
        for (p, why) in stored.failed {
            if p < 64 {
                missing |= 1 << p;
            }
            if !self.degraded.contains(&p) {
                self.degraded.push(p);
            }
            if let Some(why) = why {
                self.failures.entry(p).or_insert(why);
            }
        }
        let fragments = stored.fragment_len * self.code.fragment_count() as u64;
        let rec = PackRecord {
            kind: writer.kind(),
            state: PackState::Live,
            chunks: writer.entries().len() as u32,
            data_len: writer.data_len() as u64,
            body_len: stored.body_len,
            time: self.started.secs.max(0) as u64,
            pending: 0,
            missing,
            header: Some(stored.header),
        };
        self.unsynced_chunks += writer.entries().len();
        self.unsynced.push((number, rec, writer.entries().to_vec()));
        writer.clear();
        self.spare_writers.push(writer);
        self.stats.packs_added += 1;
        self.stats.added_packed += stored.body_len;
        self.stats.added_stored += fragments;
        if !decodable(&self.code, &self.degraded) {
            let why = self
                .degraded
                .iter()
                .find_map(|p| self.failures.get(p).cloned())
                .unwrap_or_default();
            return Err(SnapshotError::Sink(format!(
                "positions {:?} failed, more than the code tolerates ({why})",
                self.degraded
            )));
        }
        Ok(())
    }

    /// Asks the store to make the packs stored so far durable: they are
    /// indexed when it answers ([`SnapshotWriter::synced`]). One batch is
    /// made durable at a time, so the chunks waiting to be indexed stay
    /// bounded.
    fn start_sync(&mut self) -> Result<(), SnapshotError> {
        // Every pack given so far is in the batch, and the batch before
        // it is indexed.
        self.take_all_replies()?;
        if self.unsynced.is_empty() {
            return Ok(());
        }
        stage(&mut self.store)?.sync()?;
        self.syncing.push_back(std::mem::take(&mut self.unsynced));
        self.unsynced_chunks = 0;
        Ok(())
    }

    /// The store made the oldest batch durable (but at the positions that
    /// failed): its packs and chunks enter the index, each pack that the
    /// code can decode without the positions failed so far. The run fails
    /// when those are more than the code tolerates.
    fn synced(&mut self, r: Result<Vec<usize>, SinkError>) -> Result<(), SnapshotError> {
        let batch = self.syncing.pop_front().unwrap_or_default();
        let not_durable = r?;
        for &p in &not_durable {
            if !self.degraded.contains(&p) {
                self.degraded.push(p);
            }
        }
        // A position that failed may lack any of these packs. After a
        // failure, only where the sink says so (the run's own failures may
        // be a later pack's).
        let failed = if self.salvaging {
            &not_durable
        } else {
            &self.degraded
        }
        .iter()
        .filter(|p| **p < 64)
        .fold(0u64, |m, p| m | (1 << p));
        for (number, mut rec, entries) in batch {
            rec.missing |= failed;
            let gone: Vec<usize> = (0..64).filter(|p| rec.missing & (1 << p) != 0).collect();
            if decodable(&self.code, &gone) {
                self.repo.record_pack(self.backup, number, &rec, &entries)?;
                for e in &entries {
                    self.pending.remove(&e.id);
                }
            }
        }
        if !decodable(&self.code, &self.degraded) {
            return Err(SnapshotError::Sink(format!(
                "positions {:?} failed to make their fragments durable, more than the code tolerates",
                self.degraded
            )));
        }
        Ok(())
    }

    /// After a failure: makes the packs stored before it durable and
    /// records those that every position but a tolerable few took, so that
    /// the next run reuses them instead of storing them again. Best effort.
    fn salvage(&mut self) {
        if self.store.is_none() {
            return;
        }
        self.salvaging = true;
        // Every answer, then a last batch: a pack that failed is not
        // recorded, nor one missing more positions than the code tolerates.
        for last in [false, true] {
            loop {
                match self.take_reply(true) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(SnapshotError::Sink(_)) => {}
                    Err(_) => return,
                }
            }
            if !last && !self.unsynced.is_empty() {
                let Some(store) = self.store.as_mut() else {
                    return;
                };
                if store.sync().is_err() {
                    return;
                }
                self.syncing.push_back(std::mem::take(&mut self.unsynced));
            }
        }
    }

    /// Makes every stored pack durable at every position and indexes it.
    fn make_durable(&mut self) -> Result<(), SnapshotError> {
        self.start_sync()?;
        self.take_all_replies()
    }

    /// Cuts the first chunk off the metadata stream and stores it.
    fn cut_meta(&mut self) -> Result<(), SnapshotError> {
        let n = self.meta_chunker.cut(&self.meta_buf);
        let chunk: Vec<u8> = self.meta_buf.drain(..n).collect();
        let (id, loc) = self.store_meta(&chunk)?;
        self.meta_refs.push(pb::ChunkRef {
            id: id.0.to_vec(),
            pack: loc.pack,
            offset: loc.offset,
            stored_len: loc.stored_len,
            plain_len: loc.plain_len,
        });
        Ok(())
    }

    /// Packs what the compressors hold, stores the open packs and the rest
    /// of the metadata stream, and makes every pack durable.
    fn close_packs(&mut self) -> Result<(), SnapshotError> {
        self.drain_compressors()?;
        while !self.meta_buf.is_empty() {
            self.cut_meta()?;
        }
        self.seal(PackKind::Data)?;
        self.seal(PackKind::Meta)?;
        self.make_durable()?;
        self.flush_cache()
    }

    /// Stores what is left, makes the packs durable, then signs the root
    /// and stores it through `snapshot_sink` (the snapshot's own sink).
    fn finish(
        mut self,
        snapshot_sink: &mut dyn FragmentSink,
        mut skipped: Vec<String>,
    ) -> Result<SnapshotReport, SnapshotError> {
        skipped.append(&mut self.warnings);
        if let Err(e) = self.close_packs() {
            self.salvage();
            return Err(e);
        }
        // No root names packs the code cannot decode.
        if !decodable(&self.code, &self.degraded) {
            return Err(SnapshotError::Sink(format!(
                "positions {:?} failed to make their fragments durable, more than the code tolerates",
                self.degraded
            )));
        }
        let customer = self.identity.node_id();
        let meta = pb::MetaChunks {
            chunks: std::mem::take(&mut self.meta_refs),
        };
        let sealed_meta = self.keys.seal_list(
            &root::meta_aad(&customer, self.backup, self.snapshot),
            &meta.encode_to_vec(),
        );
        let info = BackupInfo {
            source_paths: self.paths.clone(),
            files: self.stats.files,
            directories: self.stats.directories,
            symlinks: self.stats.symlinks,
            skipped: skipped.clone(),
        };
        let sealed_info = Manifest::seal_info(&info, &self.key.recipient)
            .map_err(|e| SnapshotError::Format(e.to_string()))?;
        let root = SnapshotRoot {
            customer: customer.as_bytes().to_vec(),
            backup_id: self.backup.0.to_vec(),
            snapshot: self.snapshot,
            parent: self.parent,
            created_unix: self.started.secs,
            scheme: root::scheme_value(self.opts.scheme),
            suppliers: self.opts.suppliers as u32,
            zstd_level: self.opts.zstd_level,
            backup_recipient: self.key.recipient.to_string(),
            wrapped_backup_key: self.key.wrapped.clone(),
            sealed_info,
            sealed_meta,
            pack_ranges: self.referenced.to_ranges(),
            stats: Some(self.stats),
            revision: 0,
        };
        let bytes = root::sign_root(&self.identity, &root);
        for p in snapshot_sink.commit(&bytes)? {
            if !self.degraded.contains(&p) {
                self.degraded.push(p);
            }
        }
        if !decodable(&self.code, &self.degraded) {
            return Err(SnapshotError::Sink(format!(
                "positions {:?} failed, more than the code tolerates",
                self.degraded
            )));
        }
        // The snapshot is committed: what follows only keeps the caches
        // small, and its failure is a warning, not a failed snapshot (the
        // next run sweeps again and clears the links table first).
        // The files cache forgets what the last snapshots did not see; the
        // files this one saw have stamps at most SEEN_REFRESH - 1 old.
        let oldest = self.snapshot.saturating_sub(crate::repo::SEEN_REFRESH - 1);
        self.links.clear();
        let housekeeping = [
            (
                "the files cache",
                self.repo.sweep_files(self.backup, oldest).err(),
            ),
            (
                "the directory records",
                self.repo.sweep_dirs(self.backup, oldest).err(),
            ),
            (
                "the hard-link table",
                self.repo.links_clear(self.backup).err(),
            ),
        ];
        for (what, e) in housekeeping {
            if let Some(e) = e {
                skipped.push(format!(
                    "the snapshot is committed, but {what} was not cleaned up: {e}; the next backup tries again"
                ));
            }
        }
        self.degraded.sort_unstable();
        Ok(SnapshotReport {
            root: bytes,
            stats: self.stats,
            packs: self.referenced,
            degraded_positions: self.degraded,
            skipped,
            times: self.clocks.times(self.began.elapsed()),
        })
    }
}

/// A stage of the running writer.
fn stage<T>(s: &mut Option<T>) -> Result<&mut T, SnapshotError> {
    s.as_mut()
        .ok_or_else(|| SnapshotError::Format("the writer's stages are not running".into()))
}

/// The root of snapshot `snapshot` of `id` among the copies `source`
/// holds (its manifest objects): every copy is read, and the highest
/// revision that verifies wins (a prune that repacked rewrote the root
/// with a higher revision; a position that was away holds an older one).
/// The error says why the last copy did not verify, or that none is held.
pub fn best_root(
    source: &mut dyn FragmentSource,
    customer: &bitdust_crypto::NodeId,
    id: BackupId,
    snapshot: u64,
) -> Result<Root, String> {
    let mut why = String::from("no position holds it");
    let mut best: Option<Root> = None;
    for attempt in 0.. {
        let bytes = match source.manifest(attempt) {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                why = e.to_string();
                break;
            }
        };
        match root::verify_root(&bytes, customer, id, snapshot) {
            Ok(r) => {
                if best
                    .as_ref()
                    .is_none_or(|b| r.root.revision > b.root.revision)
                {
                    best = Some(r);
                }
            }
            Err(e) => why = e.to_string(),
        }
    }
    best.ok_or(why)
}

/// The `Node` of entry `e` as a snapshot keeps it, all but what reading a
/// file decides (its chunks, and its size, holes and `changed` flag once
/// read, or its `link`): a file's size and holes are the entry's.
pub fn node_of(e: &Entry) -> pb::Node {
    let owner = e.owner.clone().unwrap_or_default();
    let mut node = pb::Node {
        path: e.path.clone(),
        mode: e.mode,
        mtime: e.mtime.secs,
        mtime_nanos: e.mtime.nanos,
        atime: e.atime.map(|t| t.secs),
        atime_nanos: e.atime.map_or(0, |t| t.nanos),
        uid: e.owner.as_ref().map(|o| o.uid),
        gid: e.owner.as_ref().map(|o| o.gid),
        user: owner.user,
        group: owner.group,
        xattrs: e.xattrs.clone(),
        ..Default::default()
    };
    node.kind = match &e.kind {
        EntryKind::Directory => pb::NodeKind::Directory,
        EntryKind::Symlink(target) => {
            node.target = target.clone();
            pb::NodeKind::Symlink
        }
        EntryKind::Fifo => pb::NodeKind::Fifo,
        EntryKind::Device { block, rdev } => {
            node.rdev = *rdev;
            if *block {
                pb::NodeKind::BlockDevice
            } else {
                pb::NodeKind::CharDevice
            }
        }
        EntryKind::File => {
            node.size = e.size;
            node.holes = e.holes.clone();
            pb::NodeKind::File
        }
    } as i32;
    node
}

/// Walks local source paths with the caller's rights, in snapshot order.
pub struct LocalWalk {
    sources: std::vec::IntoIter<PathBuf>,
    /// The directories being walked, deepest last: the names of each one's
    /// entries still to give, sorted, the next one last.
    stack: Vec<(PathBuf, Vec<std::ffi::OsString>)>,
    /// The deepest directory's path and descriptor, for looking its
    /// entries up by name: one descriptor open, however deep the walk.
    dir_fd: Option<(PathBuf, rustix::fd::OwnedFd)>,
    /// A directory given and not yet listed: it is listed when the walk
    /// goes on, after its own `lstat` (so its atime is the one before
    /// this walk read it).
    unlisted: Option<PathBuf>,
    current: Option<PathBuf>,
    /// The size, mtime and holes of the entry returned last.
    seen: (u64, Time, Vec<pb::Extent>),
    names: crate::meta::Names,
    skipped: Vec<String>,
    /// Extended attributes are read only when asked ([`EntrySource::xattrs`]).
    defer_xattrs: bool,
}

impl LocalWalk {
    /// Walks `sources` (absolute paths), each in turn, in snapshot order
    /// ([`cmp_paths`]); a source inside another is walked once, as part of
    /// it.
    pub fn new(mut sources: Vec<PathBuf>) -> LocalWalk {
        sources.sort_by(|a, b| cmp_paths(a.as_os_str().as_bytes(), b.as_os_str().as_bytes()));
        sources.dedup();
        let mut outer: Vec<PathBuf> = Vec::with_capacity(sources.len());
        for s in sources {
            if !outer.last().is_some_and(|o| s.starts_with(o)) {
                outer.push(s);
            }
        }
        let sources = outer;
        LocalWalk {
            sources: sources.into_iter(),
            stack: Vec::new(),
            dir_fd: None,
            unlisted: None,
            current: None,
            seen: Default::default(),
            names: Default::default(),
            skipped: Vec::new(),
            defer_xattrs: false,
        }
    }

    /// Reads an entry's extended attributes only when the writer asks
    /// ([`EntrySource::xattrs`]): an entry its directory's record gives
    /// whole needs none (a change to them moves its ctime).
    pub fn with_deferred_xattrs(mut self) -> Self {
        self.defer_xattrs = true;
        self
    }
}

fn time_of(secs: i64, nanos: i64) -> Time {
    Time {
        secs,
        nanos: nanos.clamp(0, 999_999_999) as u32,
    }
}

impl LocalWalk {
    /// The absolute path of the entry returned last.
    pub fn current_path(&self) -> Option<PathBuf> {
        self.current.clone()
    }
}

impl EntrySource for LocalWalk {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        loop {
            if let Some(dir) = self.unlisted.take() {
                match crate::meta::list_dir_open(&dir) {
                    Ok((mut names, fd)) => {
                        // Popped from the end: the smallest name last.
                        names.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
                        self.dir_fd = Some((dir.clone(), fd));
                        self.stack.push((dir, names));
                    }
                    Err(e) => self.skipped.push(format!("{}: {e}", dir.display())),
                }
            }
            let (path, meta) = match self.stack.last_mut() {
                Some((dir, names)) => match names.pop() {
                    Some(name) => {
                        let path = dir.join(&name);
                        // By name in the directory's descriptor (opened
                        // again on the way back up from a subdirectory).
                        if self.dir_fd.as_ref().is_none_or(|(d, _)| d != dir) {
                            self.dir_fd =
                                crate::meta::open_dir(dir).ok().map(|fd| (dir.clone(), fd));
                        }
                        let meta = match &self.dir_fd {
                            Some((_, fd)) => crate::meta::Lstat::at(fd, &name),
                            None => crate::meta::Lstat::of(&path),
                        };
                        (path, meta)
                    }
                    None => {
                        self.stack.pop();
                        continue;
                    }
                },
                None => match self.sources.next() {
                    Some(s) => {
                        let meta = crate::meta::Lstat::of(&s);
                        (s, meta)
                    }
                    None => return Ok(None),
                },
            };
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    self.skipped.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            use rustix::fs::FileType;
            let ft = meta.file_type();
            if ft == FileType::Directory {
                self.unlisted = Some(path.clone());
            }
            let kind = match ft {
                FileType::Directory => EntryKind::Directory,
                FileType::RegularFile => EntryKind::File,
                FileType::Symlink => {
                    let dir = self
                        .dir_fd
                        .as_ref()
                        .filter(|(d, _)| path.parent() == Some(d.as_path()));
                    let name = path.file_name().unwrap_or_default();
                    match crate::meta::read_link_at(dir.map(|(_, fd)| fd), name, &path) {
                        Ok(t) => EntryKind::Symlink(t),
                        Err(e) => {
                            self.skipped.push(format!("{}: {e}", &path.display()));
                            continue;
                        }
                    }
                }
                FileType::Fifo => EntryKind::Fifo,
                FileType::CharacterDevice | FileType::BlockDevice => EntryKind::Device {
                    block: ft == FileType::BlockDevice,
                    rdev: meta.rdev(),
                },
                _ => {
                    self.skipped.push(format!(
                        "{}: a socket, which no restore could bring back (its program makes it)",
                        &path.display()
                    ));
                    continue;
                }
            };
            let xattrs = if self.defer_xattrs {
                Vec::new()
            } else {
                let (xattrs, warnings) = crate::meta::read_xattrs(&path);
                self.skipped.extend(warnings);
                xattrs
            };
            // Only a file on fewer blocks than its size is opened to look
            // for holes.
            let holes = if kind == EntryKind::File
                && crate::meta::may_be_sparse(meta.len(), meta.blocks())
            {
                crate::meta::open_for_reading(&path)
                    .map(|f| crate::meta::holes_of(&f, meta.len()))
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let raw = path.as_os_str().as_bytes();
            let raw = raw.strip_prefix(b"/").unwrap_or(raw).to_vec();
            self.current = Some(path);
            let mtime = time_of(meta.mtime().0, meta.mtime().1);
            self.seen = (meta.len(), mtime, holes.clone());
            let (uid, gid) = meta.owner();
            return Ok(Some(Entry {
                path: raw,
                kind,
                mode: meta.mode(),
                mtime,
                ctime: time_of(meta.ctime().0, meta.ctime().1),
                size: meta.len(),
                ino: meta.ino(),
                dev: meta.dev(),
                // A symlink's atime is not kept: reading its target (which
                // every backup must) moves it, so the value kept would change
                // every night and its metadata never deduplicate. Files and
                // directories are read with O_NOATIME, which keeps theirs.
                atime: (ft != FileType::Symlink).then(|| time_of(meta.atime().0, meta.atime().1)),
                owner: Some(self.names.owner(uid, gid)),
                xattrs,
                nlink: meta.nlink(),
                holes,
            }));
        }
    }

    fn content(&mut self) -> io::Result<Box<dyn Read + '_>> {
        let path = self
            .current
            .as_ref()
            .ok_or_else(|| io::Error::other("no current file"))?;
        let f = crate::meta::open_for_reading(path)?;
        let (size, _, holes) = &self.seen;
        Ok(Box::new(crate::meta::DataReader::new(
            f,
            *size,
            holes.clone(),
        )))
    }

    fn take_skipped(&mut self) -> Vec<String> {
        std::mem::take(&mut self.skipped)
    }

    fn xattrs(&mut self) -> Option<(Vec<pb::Xattr>, bool)> {
        if !self.defer_xattrs {
            return None;
        }
        let path = self.current.as_ref()?;
        let (xattrs, warnings) = crate::meta::read_xattrs(path);
        let complete = warnings.is_empty();
        self.skipped.extend(warnings);
        Some((xattrs, complete))
    }

    fn changed(&mut self) -> bool {
        let Some(path) = &self.current else {
            return false;
        };
        match path.symlink_metadata() {
            Ok(m) => m.len() != self.seen.0 || time_of(m.mtime(), m.mtime_nsec()) != self.seen.1,
            Err(_) => true,
        }
    }
}

/// Reads packs of one backup through a [`FragmentSource`] of version 0,
/// keeping the last few opened (decrypted) packs.
pub struct PackReader<'a> {
    /// `None` while the threads of a planned restore hold it.
    source: Option<&'a mut dyn FragmentSource>,
    root: &'a Root,
    code: Code,
    keys: Arc<DedupKeys>,
    key: BackupKey,
    cache: Vec<(u64, Arc<Vec<u8>>)>,
    /// The last metadata pack read, apart from `cache`, whose order a
    /// planned restore replays.
    meta: Option<(u64, Vec<u8>)>,
    /// In a planned restore: the threads fetching and opening packs.
    loader: Option<load::Loader>,
    /// The index, whose pack records name each pack's header.
    index: Option<&'a Repo>,
    /// Packs fetched (and opened).
    pub fetched: u64,
    /// Fragment bytes read.
    pub bytes_fetched: u64,
    /// The restore threads' clocks.
    pub(crate) clocks: Arc<crate::stages::RestoreClocks>,
    /// Chunk buffers back from the sink.
    spare: Spare,
    /// One decompression context for every chunk.
    zstd: zstd::bulk::Decompressor<'static>,
    /// Threads decompressing a planned restore's chunks; 0 for one per
    /// core, 1 for none besides the restoring thread.
    workers: usize,
}

/// Packs kept opened by a [`PackReader`]: chunks shared by files far apart
/// are fetched again rather than held (a restore reads packs mostly in order).
const PACK_CACHE: usize = 4;

impl<'a> PackReader<'a> {
    /// Reads the packs of `root`'s backup from `source`; `key` is the
    /// backup's age key (unwrapped with the master key).
    pub fn new(
        source: &'a mut dyn FragmentSource,
        root: &'a Root,
        identity_keys: DedupKeys,
        key: BackupKey,
    ) -> Result<PackReader<'a>, SnapshotError> {
        let code = Code::new(root.scheme, root.root.suppliers as usize)
            .map_err(|e| SnapshotError::Format(e.to_string()))?;
        Ok(PackReader {
            source: Some(source),
            root,
            code,
            keys: Arc::new(identity_keys),
            key,
            cache: Vec::new(),
            meta: None,
            loader: None,
            index: None,
            fetched: 0,
            bytes_fetched: 0,
            clocks: Default::default(),
            spare: Spare::default(),
            zstd: zstd::bulk::Decompressor::new()
                .map_err(|e| SnapshotError::Format(format!("zstd: {e}")))?,
            workers: 0,
        })
    }

    /// Decompresses a planned restore's chunks on `workers` threads (0:
    /// one per core; 1: on the restoring thread alone, none besides it).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Takes a pack's fragments only under the header `repo`'s record of
    /// the pack names, when it names one.
    pub fn with_index(mut self, repo: &'a Repo) -> Self {
        self.index = Some(repo);
        self
    }

    /// The chunk `id` stored at `loc`, decompressed and checked against its id.
    pub fn chunk(&mut self, id: &ChunkId, loc: &ChunkLoc) -> Result<Vec<u8>, SnapshotError> {
        self.load(loc.pack)?;
        let data = &self.cache[self.cache.len() - 1].1;
        plain_chunk(&self.keys, &mut self.zstd, data, id, loc)
    }

    /// Adds what this reader fetched, and its threads' times, to `report`.
    fn account(&self, report: &mut SnapshotRestoreReport) {
        report.packs_fetched = self.fetched;
        report.bytes_fetched = self.bytes_fetched;
        report.times = self.clocks.times();
    }

    /// [`Self::chunk`] as [`Bytes`] whose buffer comes back to this
    /// reader once the last of them is dropped, for the next chunk: a
    /// fresh buffer for every chunk cost a restore a page fault per 4 KiB
    /// restored (once large buffers go back to the kernel when freed).
    pub fn chunk_bytes(&mut self, id: &ChunkId, loc: &ChunkLoc) -> Result<Bytes, SnapshotError> {
        self.load(loc.pack)?;
        let data = &self.cache[self.cache.len() - 1].1;
        let mut buf = self.spare.take();
        buf.clear();
        buf.reserve_exact(loc.plain_len as usize);
        check_chunk(&self.keys, &mut self.zstd, data, id, loc, &mut buf)?;
        Ok(Bytes::from_owner(Pooled {
            buf,
            spare: self.spare.clone(),
        }))
    }

    /// [`Self::chunk`] for a chunk of the snapshot's metadata: read
    /// through a cache of its own (one pack), leaving the packs of file
    /// content cached as they were.
    pub fn meta_chunk(&mut self, id: &ChunkId, loc: &ChunkLoc) -> Result<Vec<u8>, SnapshotError> {
        if let Some((_, data)) = self.cache.iter().find(|(p, _)| *p == loc.pack) {
            return plain_chunk(&self.keys, &mut self.zstd, data, id, loc);
        }
        if self.meta.as_ref().is_none_or(|(p, _)| *p != loc.pack) {
            self.meta = Some((loc.pack, self.open_data(loc.pack)?));
        }
        let data = self
            .meta
            .as_ref()
            .map(|(_, d)| d.as_slice())
            .unwrap_or_default();
        plain_chunk(&self.keys, &mut self.zstd, data, id, loc)
    }

    /// Fetches and opens pack `pack` (bypassing the cache) and checks every
    /// chunk its sealed list names: it lies inside the pack, decompresses
    /// to its length and hashes to its id. Returns how many chunks.
    pub fn check_pack(&mut self, pack: u64) -> Result<u64, SnapshotError> {
        let (list, data) = self.open_pack(pack)?;
        for e in &list.entries {
            let loc = ChunkLoc {
                pack,
                offset: e.offset,
                stored_len: e.stored_len,
                plain_len: e.plain_len,
            };
            plain_chunk(&self.keys, &mut self.zstd, &data, &e.id, &loc)?;
        }
        Ok(list.entries.len() as u64)
    }

    /// Fetches and opens pack `pack` (bypassing the cache): its chunk list
    /// and its decrypted chunk data.
    pub fn open_pack(&mut self, pack: u64) -> Result<(pack::PackList, Vec<u8>), SnapshotError> {
        let opener = self.fetch(pack)?;
        self.fetched += 1;
        open_fetched(
            opener,
            self.identity_node(),
            self.root.backup_id,
            pack,
            &self.keys,
            &self.key,
        )
    }

    /// The fragment source, unless the threads of a planned restore hold it.
    fn source(&mut self) -> Result<&mut dyn FragmentSource, SnapshotError> {
        match self.source.as_deref_mut() {
            Some(s) => Ok(s),
            None => Err(SnapshotError::Format(
                "the pack reader has lost its fragment source".into(),
            )),
        }
    }

    /// Fetches the fragments of pack `pack`.
    fn fetch(&mut self, pack: u64) -> Result<BlockOpener, SnapshotError> {
        let customer = self.identity_node();
        let (root, code) = (self.root, self.code.clone());
        let header = pack_header(self.index, root.backup_id, pack)?;
        let opener = collect_pack(
            self.source()?,
            root,
            &code,
            customer,
            pack,
            header,
            false,
            Vec::new(),
        )?;
        if let Some(h) = opener.header() {
            let present = opener.present().iter().filter(|p| **p).count() as u64;
            self.bytes_fetched += present * h.fragment_len;
        }
        Ok(opener)
    }

    /// Pack `pack`'s chunk data: from the loading threads in a planned
    /// restore, else fetched and opened here.
    fn open_data(&mut self, pack: u64) -> Result<Vec<u8>, SnapshotError> {
        match self.loader.as_mut() {
            Some(loader) => {
                let loaded = loader.take(pack);
                self.fetched += 1;
                self.bytes_fetched += loaded.bytes;
                loaded.data
            }
            None => Ok(self.open_pack(pack)?.1),
        }
    }

    /// Makes pack `pack` the last of the cache.
    fn load(&mut self, pack: u64) -> Result<(), SnapshotError> {
        if let Some(i) = self.cache.iter().position(|(p, _)| *p == pack) {
            let hit = self.cache.remove(i);
            self.cache.push(hit);
            return Ok(());
        }
        let data = self.open_data(pack)?;
        if self.cache.len() >= PACK_CACHE {
            self.cache.remove(0);
        }
        self.cache.push((pack, Arc::new(data)));
        Ok(())
    }

    /// Whether pack `pack` is cached, or opened by a planned restore's
    /// threads and waiting.
    fn at_hand(&mut self, pack: u64) -> bool {
        self.cache.iter().any(|(p, _)| *p == pack)
            || self.loader.as_mut().is_some_and(|l| l.ready(pack))
    }

    /// Pack `pack`'s chunk data, made the last of the cache.
    fn pack_data(&mut self, pack: u64) -> Result<Arc<Vec<u8>>, SnapshotError> {
        self.load(pack)?;
        Ok(self.cache[self.cache.len() - 1].1.clone())
    }

    fn identity_node(&self) -> bitdust_crypto::NodeId {
        // Verified when the root was.
        bitdust_crypto::NodeId::try_from(self.root.root.customer.as_slice())
            .expect("a verified root names a 32-byte customer")
    }

    /// The metadata stream's chunk list, from the root.
    pub fn meta_chunks(&self) -> Result<Vec<pb::ChunkRef>, SnapshotError> {
        let aad = root::meta_aad(
            &self.identity_node(),
            self.root.backup_id,
            self.root.root.snapshot,
        );
        let bytes = self
            .keys
            .open_list(&aad, &self.root.root.sealed_meta)
            .map_err(|e| SnapshotError::Format(e.to_string()))?;
        Ok(pb::MetaChunks::decode(bytes.as_slice())
            .map_err(|e| SnapshotError::Format(format!("the snapshot's metadata list: {e}")))?
            .chunks)
    }
}

/// Opens pack `pack` from its fetched fragments: decodes the body, opens
/// its chunk list and decrypts its chunk data.
fn open_fetched(
    mut opener: BlockOpener,
    customer: bitdust_crypto::NodeId,
    backup: BackupId,
    pack: u64,
    keys: &DedupKeys,
    key: &BackupKey,
) -> Result<(pack::PackList, Vec<u8>), SnapshotError> {
    // Read in the decoder's buffer: a copy of the body was a fresh 4 MiB
    // mapping per pack, a page fault per 4 KiB (issue 19, session 24).
    let body = opener.body().map_err(|e| pack_error(pack, e))?;
    let aad = pack::list_aad(&customer, backup, pack);
    let list = pack::read_list(body, keys, &aad, FILE_CHUNKS.max as u32)
        .map_err(|e| SnapshotError::Format(format!("pack {pack}: {e}")))?;
    let data = pack::open_data(body, &list, key)
        .map_err(|e| SnapshotError::Format(format!("pack {pack}: {e}")))?;
    Ok((list, data))
}

/// Chunk `id` at `loc` in the opened pack data `data`, decompressed and
/// checked against its id.
fn plain_chunk(
    keys: &DedupKeys,
    zstd: &mut zstd::bulk::Decompressor<'static>,
    data: &[u8],
    id: &ChunkId,
    loc: &ChunkLoc,
) -> Result<Vec<u8>, SnapshotError> {
    let mut plain = Vec::with_capacity(loc.plain_len as usize);
    check_chunk(keys, zstd, data, id, loc, &mut plain)?;
    Ok(plain)
}

/// Decompresses chunk `id` at `loc` of the opened pack `data` into `out`
/// (with room for its plain length) and checks it is the chunk its id
/// names.
fn check_chunk(
    keys: &DedupKeys,
    zstd: &mut zstd::bulk::Decompressor<'static>,
    data: &[u8],
    id: &ChunkId,
    loc: &ChunkLoc,
    out: &mut Vec<u8>,
) -> Result<(), SnapshotError> {
    let start = loc.offset as usize;
    let end = start + loc.stored_len as usize;
    let stored = data.get(start..end).ok_or_else(|| {
        SnapshotError::Format(format!("chunk {id} lies outside pack {}", loc.pack))
    })?;
    zstd.decompress_to_buffer(stored, out)
        .map_err(|e| SnapshotError::Format(format!("chunk {id} does not decompress: {e}")))?;
    if out.len() != loc.plain_len as usize || keys.chunk_id(out) != *id {
        return Err(SnapshotError::Format(format!(
            "chunk {id} in pack {} is not the chunk its id names",
            loc.pack
        )));
    }
    Ok(())
}

/// A restore's spare chunk buffers: at most [`SPARE_CHUNKS`] (and one
/// per chunk its decompressing threads may hold), each kept only up to the
/// largest chunk.
#[derive(Clone)]
pub(crate) struct Spare(Arc<std::sync::Mutex<Vec<Vec<u8>>>>, usize);

/// Chunk buffers a restore keeps for reuse: the chunk being handed on and
/// the one before it are all a sink holds at once.
const SPARE_CHUNKS: usize = 2;

impl Default for Spare {
    fn default() -> Self {
        Spare(Default::default(), SPARE_CHUNKS)
    }
}

impl Spare {
    /// Keeping also `more` buffers (the chunks a restore's decompressing
    /// threads may hold at once).
    fn keeping_more(&self, more: usize) -> Spare {
        Spare(self.0.clone(), SPARE_CHUNKS + more)
    }

    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default()
    }

    fn give(&self, buf: Vec<u8>) {
        if let Ok(mut s) = self.0.lock()
            && s.len() < self.1
            && buf.capacity() <= crate::chunker::FILE_CHUNKS.max
        {
            s.push(buf);
        }
    }
}

/// A chunk's buffer, given back to its restore's [`Spare`] when the last
/// [`Bytes`] of it is dropped.
struct Pooled {
    buf: Vec<u8>,
    spare: Spare,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.spare.give(std::mem::take(&mut self.buf));
    }
}

fn chunk_id_of(bytes: &[u8]) -> Result<ChunkId, SnapshotError> {
    <[u8; 32]>::try_from(bytes)
        .map(ChunkId)
        .map_err(|_| SnapshotError::Format("a chunk id that is not 32 bytes".into()))
}

/// The entries of a snapshot, one at a time: decodes the metadata stream
/// chunk by chunk (never whole).
pub struct NodeStream {
    refs: std::vec::IntoIter<pb::ChunkRef>,
    buf: Vec<u8>,
}

/// The largest node accepted (a file of 1 TiB has 32 MiB of chunk ids).
const MAX_NODE: u64 = 64 << 20;

impl NodeStream {
    /// The nodes of the chunks `refs`.
    pub fn new(refs: Vec<pb::ChunkRef>) -> NodeStream {
        NodeStream {
            refs: refs.into_iter(),
            buf: Vec::new(),
        }
    }

    /// The next node, reading chunks through `packs`.
    pub fn next(&mut self, packs: &mut PackReader<'_>) -> Result<Option<pb::Node>, SnapshotError> {
        loop {
            let mut slice = self.buf.as_slice();
            if let Ok(len) = prost::encoding::decode_varint(&mut slice) {
                if len > MAX_NODE {
                    return Err(SnapshotError::Format(format!("a node of {len} bytes")));
                }
                let head = self.buf.len() - slice.len();
                if slice.len() as u64 >= len {
                    let node = pb::Node::decode(&slice[..len as usize])
                        .map_err(|e| SnapshotError::Format(format!("a node: {e}")))?;
                    self.buf.drain(..head + len as usize);
                    return Ok(Some(node));
                }
            }
            match self.refs.next() {
                Some(r) => {
                    let id = chunk_id_of(&r.id)?;
                    let loc = ChunkLoc {
                        pack: r.pack,
                        offset: r.offset,
                        stored_len: r.stored_len,
                        plain_len: r.plain_len,
                    };
                    let plain = packs.meta_chunk(&id, &loc)?;
                    self.buf.extend_from_slice(&plain);
                }
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(SnapshotError::Format(
                        "the metadata stream ends inside a node".into(),
                    ));
                }
            }
        }
    }
}

/// What a snapshot restore did.
#[derive(Debug, Default)]
pub struct SnapshotRestoreReport {
    /// Files, directories, symlinks and bytes written.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Packs fetched.
    pub packs_fetched: u64,
    /// Fragment bytes fetched.
    pub bytes_fetched: u64,
    /// FIFOs and device nodes.
    pub specials: u64,
    /// Names restored as hard links to an earlier one (counted in `files`).
    pub hard_links: u64,
    /// What was restored only in part (owners, attributes), once each.
    pub warnings: Vec<String>,
    /// Where the time went.
    pub times: crate::stages::RestoreTimes,
}

/// The largest part of a restored file written at once.
const WRITE_PART: usize = 4 << 20;

/// Where the entries of a snapshot being restored go: a directory
/// ([`DirOut`]), or a stream to the process that writes them.
pub trait NodeSink {
    /// One entry, in snapshot order; a file's content comes from `content`
    /// ([`content_len`] bytes if the snapshot is sound; empty for other
    /// kinds and hard links).
    fn node(&mut self, node: &pb::Node, content: &mut dyn Content) -> Result<(), SnapshotError>;
}

/// A restored file's content, taken in shared parts (slices of whole
/// chunks, or of the messages they arrived in, never copies).
pub trait Content {
    /// The next part of at most `max` bytes (`max` > 0), or `None` at the
    /// end.
    fn next_part(&mut self, max: usize) -> io::Result<Option<Bytes>>;

    /// Writes the whole content into `w`, which writes into `file` (around
    /// its holes), and says how many bytes: part by part, unless the
    /// content is written into `file` some other way (by the process the
    /// stream comes from, given the file's descriptor).
    fn write_into(&mut self, w: &mut dyn io::Write, _file: BorrowedFd<'_>) -> io::Result<u64> {
        write_parts(self, w)
    }
}

/// Writes `content`'s parts into `w`, each (a whole chunk when it can be)
/// in one write; the bytes written.
fn write_parts<C: Content + ?Sized>(content: &mut C, w: &mut dyn io::Write) -> io::Result<u64> {
    let mut n = 0;
    while let Some(part) = content.next_part(WRITE_PART)? {
        w.write_all(&part)?;
        n += part.len() as u64;
    }
    Ok(n)
}

/// Writes `content` into `file`, a new and empty regular file another
/// process made and passed to this one, from its start, leaving `holes`
/// unwritten (the file's owner sets its size after); the bytes written.
pub fn write_content(
    file: &std::fs::File,
    holes: &[pb::Extent],
    content: &mut dyn Content,
) -> io::Result<u64> {
    if holes.is_empty() {
        write_parts(content, &mut &*file)
    } else {
        write_parts(content, &mut crate::extract::HoleWriter::new(file, holes))
    }
}

impl Content for io::Empty {
    fn next_part(&mut self, _max: usize) -> io::Result<Option<Bytes>> {
        Ok(None)
    }
}

/// Writes a restored snapshot's entries into an existing empty directory,
/// under the restore safety rules (never outside it, never through a
/// symlink, no setuid unless the owner is given back).
pub struct DirOut<'a> {
    out: Extractor<'a>,
    progress: &'a dyn crate::Progress,
}

impl<'a> DirOut<'a> {
    /// Writes into `target`, telling `progress` the content bytes written.
    pub fn new(target: &'a Path, progress: &'a dyn crate::Progress) -> DirOut<'a> {
        DirOut {
            out: Extractor::new(target),
            progress,
        }
    }

    /// Gives owners back by `owners` (when running as root; by name is the
    /// default).
    pub fn with_owners(mut self, owners: Owners) -> Self {
        self.out = self.out.with_owners(owners);
        self
    }

    /// Sets the directories' modes and mtimes; the counts of what was
    /// written (the fetch counts left zero).
    pub fn finish(self) -> Result<SnapshotRestoreReport, SnapshotError> {
        let stats = self.out.finish()?;
        Ok(SnapshotRestoreReport {
            files: stats.files,
            directories: stats.directories,
            symlinks: stats.symlinks,
            bytes: stats.bytes,
            packs_fetched: 0,
            bytes_fetched: 0,
            specials: stats.specials,
            hard_links: stats.hard_links,
            warnings: stats.warnings,
            times: Default::default(),
        })
    }
}

impl NodeSink for DirOut<'_> {
    fn node(&mut self, node: &pb::Node, content: &mut dyn Content) -> Result<(), SnapshotError> {
        let path = Path::new(std::ffi::OsStr::from_bytes(&node.path));
        let Some(rel) = self.out.prepare(path)? else {
            return Ok(());
        };
        check_node(node)
            .map_err(|why| SnapshotError::Format(format!("the entry {} {why}", rel.display())))?;
        let attrs = Attrs::of(node);
        match pb::NodeKind::try_from(node.kind) {
            Ok(pb::NodeKind::Directory) => self.out.dir(&rel, attrs)?,
            Ok(pb::NodeKind::Symlink) => {
                let target = Path::new(std::ffi::OsStr::from_bytes(&node.target));
                self.out.symlink(&rel, target, &attrs)?;
            }
            Ok(pb::NodeKind::Fifo) => self.out.special(&rel, Special::Fifo, &attrs)?,
            Ok(pb::NodeKind::CharDevice) => {
                self.out.special(&rel, Special::Char(node.rdev), &attrs)?
            }
            Ok(pb::NodeKind::BlockDevice) => {
                self.out.special(&rel, Special::Block(node.rdev), &attrs)?
            }
            Ok(pb::NodeKind::File) if !node.link.is_empty() => {
                let first = Path::new(std::ffi::OsStr::from_bytes(&node.link));
                self.out.link(&rel, first)?;
            }
            Ok(pb::NodeKind::File) => {
                let n = self
                    .out
                    .file(&rel, &attrs, node.size, &node.holes, |f, fd| {
                        content.write_into(f, fd)
                    })?;
                self.progress.advance(n);
                let want = content_len(node);
                if n != want {
                    return Err(SnapshotError::Format(format!(
                        "{} restored {n} bytes where the snapshot says {want}",
                        rel.display(),
                    )));
                }
            }
            _ => {
                return Err(SnapshotError::Format(format!(
                    "{}: an entry of unknown kind {}",
                    rel.display(),
                    node.kind
                )));
            }
        }
        Ok(())
    }
}

/// What a restore of a backup one user made may give back (the agent's
/// backups of a member of group bitdust, issue 14): only what that user
/// could have made. Its entries came from its own `bitdustctl` and may be
/// made up, so a restore run as root must not turn them into setuid or
/// setgid files of someone else, device nodes or file capabilities.
#[derive(Clone, Debug)]
pub struct Confine {
    /// The user.
    pub uid: u32,
    /// Its groups (primary and supplementary) on this system.
    pub gids: Vec<u32>,
}

impl Confine {
    /// The rules for user `uid`, its groups looked up on this system.
    pub fn user(uid: u32) -> Confine {
        let mut gids = Vec::new();
        if let Some(u) = uzers::get_user_by_uid(uid) {
            gids.push(u.primary_group_id());
            if let Some(groups) = uzers::get_user_groups(u.name(), u.primary_group_id()) {
                gids.extend(groups.iter().map(|g| g.gid()));
            }
        }
        Confine { uid, gids }
    }

    /// Strips from `node` what the user could not have made: a setuid bit
    /// on another user's file, a setgid bit for a group it is not in,
    /// `security.*` and `trusted.*` attributes (capabilities among them).
    /// A device node is not given back at all: `false`. Returns whether
    /// the entry is kept, and counts what was stripped in `stripped`.
    pub fn apply(&self, node: &mut pb::Node, stripped: &mut u64) -> bool {
        let kind = pb::NodeKind::try_from(node.kind);
        if matches!(
            kind,
            Ok(pb::NodeKind::CharDevice) | Ok(pb::NodeKind::BlockDevice)
        ) {
            *stripped += 1;
            return false;
        }
        if node.mode & 0o4000 != 0 && node.uid != Some(self.uid) {
            node.mode &= !0o4000;
            *stripped += 1;
        }
        if node.mode & 0o2000 != 0 && !node.gid.is_some_and(|g| self.gids.contains(&g)) {
            node.mode &= !0o2000;
            *stripped += 1;
        }
        let before = node.xattrs.len();
        node.xattrs
            .retain(|x| !x.name.starts_with(b"security.") && !x.name.starts_with(b"trusted."));
        *stripped += (before - node.xattrs.len()) as u64;
        true
    }
}

/// A [`NodeSink`] that passes on a user's backup confined by [`Confine`].
pub struct Confined<'s> {
    inner: &'s mut dyn NodeSink,
    rules: Confine,
    /// Bits, attributes and device nodes left out.
    pub stripped: u64,
}

impl<'s> Confined<'s> {
    /// Entries for `inner`, under `rules`.
    pub fn new(inner: &'s mut dyn NodeSink, rules: Confine) -> Self {
        Confined {
            inner,
            rules,
            stripped: 0,
        }
    }

    /// The warning to give once, if anything was left out.
    pub fn warning(&self) -> Option<String> {
        (self.stripped > 0).then(|| {
            format!(
                "{} setuid/setgid bits, security or trusted attributes and device nodes were left out: this backup was made by uid {}, and restores give back only what that user could have made",
                self.stripped, self.rules.uid
            )
        })
    }
}

impl NodeSink for Confined<'_> {
    fn node(&mut self, node: &pb::Node, content: &mut dyn Content) -> Result<(), SnapshotError> {
        let mut node = node.clone();
        if !self.rules.apply(&mut node, &mut self.stripped) {
            return Ok(());
        }
        self.inner.node(&node, content)
    }
}

/// The bytes of content that follow entry `node` in a restore: a file's
/// data outside its holes; nothing for a hard link or another kind.
pub fn content_len(node: &pb::Node) -> u64 {
    if node.kind == pb::NodeKind::File as i32 && node.link.is_empty() {
        crate::meta::data_len(node.size, &node.holes)
    } else {
        0
    }
}

/// Refuses what no sound snapshot holds: holes out of order or past the
/// size, malformed attribute names, a link from an entry that is not a
/// file.
pub fn check_node(node: &pb::Node) -> Result<(), String> {
    crate::meta::check_holes(node.size, &node.holes)?;
    crate::meta::check_xattrs(&node.xattrs)?;
    if !node.link.is_empty() && node.kind != pb::NodeKind::File as i32 {
        return Err("is a hard link but not a file".into());
    }
    if node.link.contains(&0) {
        return Err("is a hard link to a path with a NUL".into());
    }
    Ok(())
}

/// Restores the snapshot `root` (verified) into the existing empty
/// directory `target`: every entry whose path is `include` or under it
/// (all of them when `include` is empty). Chunks are found through the
/// index `repo`.
pub fn restore_snapshot(
    repo: &Repo,
    packs: &mut PackReader<'_>,
    target: &Path,
    include: &[Vec<u8>],
) -> Result<SnapshotRestoreReport, SnapshotError> {
    restore_snapshot_owned(repo, packs, target, include, Owners::ByName)
}

/// [`restore_snapshot`], giving owners back by `owners` (when root).
pub fn restore_snapshot_owned(
    repo: &Repo,
    packs: &mut PackReader<'_>,
    target: &Path,
    include: &[Vec<u8>],
    owners: Owners,
) -> Result<SnapshotRestoreReport, SnapshotError> {
    let mut out = DirOut::new(target, &()).with_owners(owners);
    restore_snapshot_to(repo, packs, include, &mut out)?;
    let mut report = out.finish()?;
    packs.account(&mut report);
    Ok(report)
}

/// [`restore_snapshot`] into `target`, new or empty, through a staging
/// directory: nothing shows at `target` unless the whole restore succeeded.
pub fn restore_snapshot_staged(
    repo: &Repo,
    packs: &mut PackReader<'_>,
    target: &Path,
    include: &[Vec<u8>],
    owners: Owners,
) -> Result<SnapshotRestoreReport, crate::local::LocalError> {
    restore_snapshot_confined(repo, packs, target, include, owners, None)
}

/// [`restore_snapshot_staged`] of a user's backup, confined by `confine`
/// when it is one (its warning among the report's).
pub fn restore_snapshot_confined(
    repo: &Repo,
    packs: &mut PackReader<'_>,
    target: &Path,
    include: &[Vec<u8>],
    owners: Owners,
    confine: Option<Confine>,
) -> Result<SnapshotRestoreReport, crate::local::LocalError> {
    crate::restore::staged(target, |stage| {
        let mut out = DirOut::new(stage, &()).with_owners(owners);
        let warning = match confine {
            Some(rules) => {
                let mut confined = Confined::new(&mut out, rules);
                restore_snapshot_to(repo, packs, include, &mut confined)?;
                confined.warning()
            }
            None => {
                restore_snapshot_to(repo, packs, include, &mut out)?;
                None
            }
        };
        let mut report = out.finish()?;
        report.warnings.extend(warning);
        packs.account(&mut report);
        Ok::<_, crate::local::LocalError>(report)
    })
}

/// Sends the entries of the snapshot `packs` reads whose path is one of
/// `include` or under it (all when `include` is empty) to `out`, with the
/// content of the files.
pub fn restore_snapshot_to(
    repo: &Repo,
    packs: &mut PackReader<'_>,
    include: &[Vec<u8>],
    out: &mut dyn NodeSink,
) -> Result<(), SnapshotError> {
    load::restore_planned(repo, packs, include, out)
}

/// A restored snapshot's entries as another process streams them.
// Entries move one at a time; boxing each node would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Streamed {
    /// The next entry.
    Node(pb::Node),
    /// The next part of the last file entry's content (a slice of the
    /// message it arrived in, over gRPC).
    Content(Bytes),
    /// In place of the last file entry's content: the other process asks
    /// for the file's descriptor, to write the content into it itself
    /// (unless it is declined: then the content streams after all).
    WantFd,
    /// It wrote this many bytes of content into the file it was passed.
    Written(u64),
}

/// Writes the entries `next` gives (each file entry followed by exactly
/// its size in content parts, or by [`Streamed::WantFd`], the file's
/// descriptor given to `pass_fd`, and [`Streamed::Written`]; or, when
/// `pass_fd` declines by answering false, by [`Streamed::WantFd`] and the
/// content parts) into `target`,
/// new or empty, with the same guarantees as a local restore: nothing
/// shows there unless every entry arrived and was written (`next` gives
/// `None` only at a clean end).
pub fn extract_nodes(
    target: &Path,
    mut next: impl FnMut() -> io::Result<Option<Streamed>>,
    mut pass_fd: impl FnMut(BorrowedFd<'_>) -> io::Result<bool>,
    progress: &dyn crate::Progress,
    owners: Owners,
) -> Result<SnapshotRestoreReport, crate::RestoreError> {
    crate::restore::staged(target, |stage| {
        let mut out = DirOut::new(stage, progress).with_owners(owners);
        let fail = |e: SnapshotError| crate::RestoreError::Stream(io::Error::other(e.to_string()));
        loop {
            match next().map_err(crate::RestoreError::Stream)? {
                None => break,
                Some(Streamed::Content(_) | Streamed::WantFd | Streamed::Written(_)) => {
                    return Err(crate::RestoreError::Stream(io::Error::other(
                        "content arrived where an entry was due",
                    )));
                }
                Some(Streamed::Node(node)) => {
                    let mut parts = Parts {
                        next: &mut next,
                        pass_fd: &mut pass_fd,
                        left: content_len(&node),
                        buf: Default::default(),
                    };
                    out.node(&node, &mut parts).map_err(fail)?;
                }
            }
        }
        out.finish().map_err(fail)
    })
}

/// A file's content as streamed parts, exactly `left` bytes, or written
/// by the other process into the file passed to it.
struct Parts<'a, F, P> {
    next: &'a mut F,
    pass_fd: &'a mut P,
    left: u64,
    buf: Bytes,
}

impl<F, P> Parts<'_, F, P>
where
    F: FnMut() -> io::Result<Option<Streamed>>,
{
    /// Makes the next part current when this one is used up; false at the
    /// end of the file's content.
    fn fill(&mut self) -> io::Result<bool> {
        while self.buf.is_empty() {
            if self.left == 0 {
                return Ok(false);
            }
            let next = (self.next)()?;
            self.take(next)?;
        }
        Ok(true)
    }

    /// Makes `next`, which must be a part of the content, current.
    fn take(&mut self, next: Option<Streamed>) -> io::Result<()> {
        match next {
            Some(Streamed::Content(data)) if data.len() as u64 <= self.left => {
                self.left -= data.len() as u64;
                self.buf = data;
                Ok(())
            }
            Some(Streamed::Content(_)) => {
                Err(io::Error::other("a file's content ran past its size"))
            }
            _ => Err(io::Error::other(
                "the stream was cut in the middle of a file's content",
            )),
        }
    }
}

impl<F, P> Content for Parts<'_, F, P>
where
    F: FnMut() -> io::Result<Option<Streamed>>,
    P: FnMut(BorrowedFd<'_>) -> io::Result<bool>,
{
    fn next_part(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        if !self.fill()? {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(max.min(self.buf.len()))))
    }

    fn write_into(&mut self, w: &mut dyn io::Write, file: BorrowedFd<'_>) -> io::Result<u64> {
        if self.left > 0 && self.buf.is_empty() {
            match (self.next)()? {
                Some(Streamed::WantFd) => {
                    if !(self.pass_fd)(file)? {
                        // Declined: the content streams.
                        let next = (self.next)()?;
                        self.take(next)?;
                        return write_parts(self, w);
                    }
                    let want = std::mem::take(&mut self.left);
                    return match (self.next)()? {
                        Some(Streamed::Written(n)) if n == want => Ok(n),
                        Some(Streamed::Written(n)) => Err(io::Error::other(format!(
                            "the writer of the file's content wrote {n} bytes where it has {want}"
                        ))),
                        _ => Err(io::Error::other(
                            "the stream was cut while the file's content was being written",
                        )),
                    };
                }
                next => self.take(next)?,
            }
        }
        write_parts(self, w)
    }
}

/// The most packs a root may reference (a bitmap of 32 MiB; 1 PiB of 4 MiB
/// packs).
const MAX_PACKS: u64 = 1 << 28;

/// The customer, the code and the referenced packs of a verified root.
fn root_parts(root: &Root) -> Result<(bitdust_crypto::NodeId, Code, PackSet), SnapshotError> {
    let customer = bitdust_crypto::NodeId::try_from(root.root.customer.as_slice())
        .map_err(|_| SnapshotError::Format("the root's customer is not 32 bytes".into()))?;
    let code = Code::new(root.scheme, root.root.suppliers as usize)
        .map_err(|e| SnapshotError::Format(e.to_string()))?;
    let packs = PackSet::from_ranges(&root.root.pack_ranges, MAX_PACKS).ok_or_else(|| {
        SnapshotError::Format(format!(
            "the root references packs beyond the {MAX_PACKS} this version reads"
        ))
    })?;
    Ok((customer, code, packs))
}

/// The commitment to pack `pack`'s header that the index records, if any
/// (none without an index).
fn pack_header(
    index: Option<&Repo>,
    backup: BackupId,
    pack: u64,
) -> Result<Option<[u8; 32]>, SnapshotError> {
    let Some(repo) = index else {
        return Ok(None);
    };
    Ok(repo.pack(backup, pack)?.and_then(|r| r.header))
}

/// A pack opened without a header (cannot happen once it decoded).
fn pack_error_none(pack: u64) -> SnapshotError {
    SnapshotError::Format(format!("pack {pack} opened without a header"))
}

/// Why pack `pack` did not open, in one sentence.
fn pack_error(pack: u64, e: bitdust_block::BlockError) -> SnapshotError {
    SnapshotError::Format(match e {
        bitdust_block::BlockError::Unrecoverable { source, .. } => {
            format!("pack {pack} cannot be recovered: {source}")
        }
        other => format!("pack {pack}: {other}"),
    })
}

/// The fragments of pack `pack` of `root`'s backup from `source`: all of
/// them (`all`, to verify), or what decoding needs; the data fragments of
/// the packs `next` are asked for meanwhile.
#[allow(clippy::too_many_arguments)]
fn collect_pack(
    source: &mut dyn FragmentSource,
    root: &Root,
    code: &Code,
    customer: bitdust_crypto::NodeId,
    pack: u64,
    header: Option<[u8; 32]>,
    all: bool,
    next: Vec<u64>,
) -> Result<BlockOpener, SnapshotError> {
    let mut opener = BlockOpener::new(customer, root.backup_id, 0, pack)
        .expect_code(root.scheme, root.root.suppliers as usize);
    if let Some(h) = header {
        opener = opener.expect_header(h);
    }
    Ok(collect_into(
        source,
        opener,
        code,
        pack,
        next.into_iter(),
        all,
    )?)
}

/// What a ranged read of a fragment asks for first: the fragment's prefix,
/// its signed header (32 bytes per fragment of hashes) and the start of the
/// payload, where a pack's sealed chunk list of a few dozen chunks fits.
const HEAD_READ: usize = 64 << 10;

/// The chunk list and body length of pack `pack`, from the start of its
/// first data fragment alone (a ranged read, one position): the pack body
/// begins there, with its sealed list. The fragment's signed header names
/// the pack, and the list opens only with the dedup secrets and the pack's
/// name, so nothing unchecked is used. `None` when that cannot be done
/// (the position is away, the list does not fit in the fragment, anything
/// fails): the caller reads the whole pack.
fn list_from_head(
    source: &mut dyn FragmentSource,
    root: &Root,
    code: &Code,
    customer: bitdust_crypto::NodeId,
    pack: u64,
    keys: &DedupKeys,
) -> Option<(pack::PackList, u64, [u8; 32])> {
    let position = code.fragment_position(0);
    if !source.positions().contains(&position) {
        return None;
    }
    let opener = BlockOpener::new(customer, root.backup_id, 0, pack)
        .expect_code(root.scheme, root.root.suppliers as usize);
    let mut want = HEAD_READ;
    // A second read when the list is longer than the first one took.
    for _ in 0..2 {
        let head = source.fragment_prefix(position, pack, 0, want).ok()??;
        let (signed, at) = opener.check_head(0, &head).ok()?;
        let payload = &head[at..];
        let end = pack::list_end(payload).ok()?;
        let h = &signed.header;
        if end as u64 > h.fragment_len.min(h.cipher_len) {
            return None;
        }
        if payload.len() >= end {
            // A second data fragment's header must be the same: a stale
            // fragment under this pack's number (a failed run on a lost
            // machine) would otherwise give its list and header to the
            // index. The headers are the same length in every fragment.
            let positions = source.positions();
            let second = (1..code.data_fragments()).find(|f| {
                let p = code.fragment_position(*f);
                p != position && positions.contains(&p)
            });
            if let Some(f) = second {
                let other = source
                    .fragment_prefix(code.fragment_position(f), pack, f, at)
                    .ok()??;
                let (other, _) = opener.check_head(f, &other).ok()?;
                if other.commitment() != signed.commitment() {
                    return None;
                }
            }
            let aad = pack::list_aad(&customer, root.backup_id, pack);
            let list = pack::read_list(&payload[..end], keys, &aad, FILE_CHUNKS.max as u32).ok()?;
            return Some((list, h.cipher_len, signed.commitment()));
        }
        want = at + end;
    }
    None
}

/// The commitment of the signed header that most of pack `pack`'s
/// fragments carry (each fragment's head read and its header verified),
/// if any fragment's verifies. A stale fragment under the pack's number
/// is outvoted by the pack's own.
fn voted_header(
    source: &mut dyn FragmentSource,
    root: &Root,
    code: &Code,
    customer: bitdust_crypto::NodeId,
    pack: u64,
) -> Option<[u8; 32]> {
    let opener = BlockOpener::new(customer, root.backup_id, 0, pack)
        .expect_code(root.scheme, root.root.suppliers as usize);
    let positions = source.positions();
    let mut votes: Vec<([u8; 32], usize)> = Vec::new();
    for f in 0..code.fragment_count() {
        let position = code.fragment_position(f);
        if !positions.contains(&position) {
            continue;
        }
        let Ok(Some(head)) = source.fragment_prefix(position, pack, f, HEAD_READ) else {
            continue;
        };
        let Ok((signed, _)) = opener.check_head(f, &head) else {
            continue;
        };
        let c = signed.commitment();
        match votes.iter_mut().find(|(h, _)| *h == c) {
            Some((_, n)) => *n += 1,
            None => votes.push((c, 1)),
        }
    }
    // The first of the most voted, in fragment order.
    let most = votes.iter().map(|(_, n)| *n).max()?;
    votes.into_iter().find(|(_, n)| *n == most).map(|(h, _)| h)
}

/// Indexes the packs `root` references that the index does not know, from
/// their sealed chunk lists (no `master.key` needed): a repository state
/// that was lost, or a machine recovered from the key alone. Raises the
/// pack counter past them. Returns how many packs were indexed.
pub fn rebuild_index(
    repo: &Repo,
    source: &mut dyn FragmentSource,
    root: &Root,
    keys: &DedupKeys,
) -> Result<u64, SnapshotError> {
    let (customer, code, packs) = root_parts(root)?;
    repo.record_code(root.backup_id, root.scheme, code.suppliers())?;
    let mut indexed = 0;
    let mut next = 0;
    for pack in packs.iter() {
        next = next.max(pack + 1);
        if repo.pack(root.backup_id, pack)?.is_some() {
            continue;
        }
        let (list, body_len, header) =
            match list_from_head(source, root, &code, customer, pack, keys) {
                Some(x) => x,
                None => {
                    // The first data fragment's position is away, or what it
                    // holds did not do, or two data fragments disagree: the
                    // whole pack, decoded under the header most fragments
                    // carry.
                    let header = voted_header(source, root, &code, customer, pack);
                    let mut opener = collect_pack(
                        source,
                        root,
                        &code,
                        customer,
                        pack,
                        header,
                        false,
                        Vec::new(),
                    )?;
                    let header = opener.commitment().ok_or_else(|| pack_error_none(pack))?;
                    let body = opener.body().map_err(|e| pack_error(pack, e))?;
                    let aad = pack::list_aad(&customer, root.backup_id, pack);
                    let list = pack::read_list(body, keys, &aad, FILE_CHUNKS.max as u32)
                        .map_err(|e| SnapshotError::Format(format!("pack {pack}: {e}")))?;
                    (list, body.len() as u64, header)
                }
            };
        let rec = PackRecord {
            kind: list.kind,
            state: PackState::Live,
            chunks: list.entries.len() as u32,
            data_len: list.data_len(),
            body_len,
            time: root.root.created_unix.max(0) as u64,
            pending: 0,
            // What is missing now is for a verify to find.
            missing: 0,
            header: Some(header),
        };
        repo.record_pack(root.backup_id, pack, &rec, &list.entries)?;
        indexed += 1;
    }
    repo.raise_next_pack(root.backup_id, next)?;
    Ok(indexed)
}

/// What [`verify_packs`] found: the health of every pack a snapshot
/// references, `block` being the pack number.
#[derive(Debug)]
pub struct PackVerifyReport {
    /// Per pack, in number order.
    pub packs: Vec<crate::BlockHealth>,
    /// Fragments rejected, one line each.
    pub rejected_fragments: Vec<String>,
}

impl PackVerifyReport {
    /// Packs that cannot be decoded.
    pub fn unrecoverable(&self) -> Vec<u64> {
        self.packs
            .iter()
            .filter(|b| b.margin.is_none())
            .map(|b| b.block)
            .collect()
    }

    /// The smallest margin over all packs (`None` if any is lost).
    pub fn min_margin(&self) -> Option<usize> {
        self.packs
            .iter()
            .map(|b| b.margin)
            .try_fold(usize::MAX, |acc, m| m.map(|m| acc.min(m)))
    }
}

/// Reads every fragment of every pack `root` references, checks hashes and
/// signatures, and reports per pack how many more positions may be lost.
/// Needs no secret.
pub fn verify_packs(
    source: &mut dyn FragmentSource,
    root: &Root,
) -> Result<PackVerifyReport, SnapshotError> {
    let (_, _, packs) = root_parts(root)?;
    verify_pack_set(source, root, &packs, None)
}

/// The packs a snapshot root references.
pub fn root_packs(root: &Root) -> Result<PackSet, SnapshotError> {
    Ok(root_parts(root)?.2)
}

/// [`verify_packs`] of the packs `packs` of `root`'s backup (the union of
/// several snapshots', each pack read once). With `index`, a pack's
/// fragments count only under the header its record commits to, as a
/// restore takes them: a stale fragment under the pack's number is
/// rejected, not taken for the pack's header.
pub fn verify_pack_set(
    source: &mut dyn FragmentSource,
    root: &Root,
    packs: &PackSet,
    index: Option<&Repo>,
) -> Result<PackVerifyReport, SnapshotError> {
    let (customer, code, _) = root_parts(root)?;
    let mut health = crate::restore::HealthOf::default();
    let mut report = PackVerifyReport {
        packs: Vec::new(),
        rejected_fragments: Vec::new(),
    };
    for pack in packs.iter() {
        let header = pack_header(index, root.backup_id, pack)?;
        let opener = collect_pack(
            source,
            root,
            &code,
            customer,
            pack,
            header,
            true,
            Vec::new(),
        )?;
        crate::restore::note_rejections(&mut report.rejected_fragments, opener.rejections());
        report.packs.push(health.of(&code, pack, &opener));
    }
    Ok(report)
}

/// Orders paths as snapshots list them: component by component (a
/// directory's whole subtree before its next sibling), each component by
/// its bytes.
pub fn cmp_paths(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|c| *c == b'/').cmp(b.split(|c| *c == b'/'))
}

/// One difference between two snapshots.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Change {
    /// Only in the newer one.
    Added(pb::Node),
    /// Only in the older one.
    Removed(pb::Node),
    /// In both, with another kind, content, mode, mtime, target, owner or
    /// attribute (an atime alone is not a change).
    Modified {
        /// As it was.
        before: pb::Node,
        /// As it is.
        after: pb::Node,
    },
}

/// Walks the entries of two snapshots side by side (one entry of each in
/// memory at a time) and hands every difference to `each`, in path order.
/// Returns how many entries are the same in both; an error from `each`
/// stops the walk.
pub fn diff(
    older: (&mut NodeStream, &mut PackReader<'_>),
    newer: (&mut NodeStream, &mut PackReader<'_>),
    mut each: impl FnMut(Change) -> Result<(), SnapshotError>,
) -> Result<u64, SnapshotError> {
    let (oa, pa) = older;
    let (ob, pbk) = newer;
    let mut a = oa.next(pa)?;
    let mut b = ob.next(pbk)?;
    let mut same = 0;
    loop {
        match (a.take(), b.take()) {
            (None, None) => return Ok(same),
            (Some(x), None) => {
                each(Change::Removed(x))?;
                a = oa.next(pa)?;
            }
            (None, Some(y)) => {
                each(Change::Added(y))?;
                b = ob.next(pbk)?;
            }
            (Some(x), Some(y)) => match cmp_paths(&x.path, &y.path) {
                std::cmp::Ordering::Less => {
                    each(Change::Removed(x))?;
                    a = oa.next(pa)?;
                    b = Some(y);
                }
                std::cmp::Ordering::Greater => {
                    each(Change::Added(y))?;
                    a = Some(x);
                    b = ob.next(pbk)?;
                }
                std::cmp::Ordering::Equal => {
                    // Reading a file moves its atime: not a change.
                    let same_but_atime = |x: &pb::Node, y: &pb::Node| {
                        let mut x = x.clone();
                        (x.atime, x.atime_nanos) = (y.atime, y.atime_nanos);
                        x == *y
                    };
                    if same_but_atime(&x, &y) {
                        same += 1;
                    } else {
                        each(Change::Modified {
                            before: x,
                            after: y,
                        })?;
                    }
                    a = oa.next(pa)?;
                    b = ob.next(pbk)?;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: pb::NodeKind, mode: u32, uid: u32, gid: u32) -> pb::Node {
        pb::Node {
            path: b"t/x".to_vec(),
            kind: kind as i32,
            mode,
            uid: Some(uid),
            gid: Some(gid),
            xattrs: vec![
                pb::Xattr {
                    name: b"security.capability".to_vec(),
                    value: vec![1],
                },
                pb::Xattr {
                    name: b"user.color".to_vec(),
                    value: b"blue".to_vec(),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_users_backup_gives_back_only_what_that_user_could_have_made() {
        let rules = Confine {
            uid: 1001,
            gids: vec![1001, 27],
        };
        let mut stripped = 0;
        // Setuid root, setgid root, a capability: all three go.
        let mut n = node(pb::NodeKind::File, 0o6755, 0, 0);
        assert!(rules.apply(&mut n, &mut stripped));
        assert_eq!(n.mode, 0o755);
        assert_eq!(n.xattrs.len(), 1);
        assert_eq!(n.xattrs[0].name, b"user.color");
        assert_eq!(stripped, 3);
        // The user's own setuid file in one of its groups stays as it is.
        let mut n = node(pb::NodeKind::File, 0o6755, 1001, 27);
        n.xattrs.truncate(0);
        assert!(rules.apply(&mut n, &mut stripped));
        assert_eq!(n.mode, 0o6755);
        assert_eq!(stripped, 3);
        // A device node is left out.
        let mut n = node(pb::NodeKind::CharDevice, 0o666, 0, 0);
        assert!(!rules.apply(&mut n, &mut stripped));
        assert_eq!(stripped, 4);
        // A FIFO is kept.
        let mut n = node(pb::NodeKind::Fifo, 0o644, 1001, 1001);
        n.xattrs.truncate(0);
        assert!(rules.apply(&mut n, &mut stripped));
    }
}
