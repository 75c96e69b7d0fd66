//! Offline backups to N directories: one directory per would-be supplier.
//!
//! ```text
//! DIR/<position>/<backup id>/<version>/manifest        signed manifest, written last
//! DIR/<position>/<backup id>/<version>/b<block>.f<fragment>  fragment files
//! ```
//! Positions are numbered 0..N-1 as in the ECC maps; each position directory
//! can be a different disk. Every position holds a copy of the manifest, so
//! any set of positions that the code can decode from restores.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bitdust_block::{BackupId, Manifest, SealedBlock, write_fragment};
use bitdust_crypto::{BackupKey, KeyRing, KeyRingError};
use bitdust_durable::{Fs, RealFs};
use bitdust_ecc::Code;

use crate::backup::{BackupKeyMaterial, backup};
use crate::restore::{load_manifest, restore, verify};
use crate::{
    BackupError, BackupOptions, BackupReport, FragmentSink, FragmentSource, Progress, RestoreError,
    RestoreOptions, RestoreReport, SinkError, SourceError, VerifyReport,
};

mod commands;
pub use commands::*;

const MANIFEST_FILE: &str = "manifest";
/// Marks a forgotten snapshot at a position (its root is gone there).
const FORGOTTEN_FILE: &str = "forgotten";
/// Manifests are small; anything larger is not one.
const MAX_MANIFEST_FILE: u64 = bitdust_block::MAX_MANIFEST_BYTES;

/// Opens a regular file without following a symlink or blocking on a FIFO.
fn open_regular(path: &Path) -> io::Result<File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// The absolute form of a source path as given: `.` and `..` resolved through
/// the real directories above it, the last component kept as given (so a
/// source that is itself a symlink keeps its name).
pub fn source_path(given: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(given)?;
    let path = match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => fs::canonicalize(parent)?.join(name),
        _ => fs::canonicalize(&abs)?,
    };
    fs::symlink_metadata(&path)?;
    Ok(path)
}

/// Bytes of regular-file content under `paths` (not following symlinks),
/// for a progress bar's total; unreadable entries count 0.
pub fn tree_size(paths: &[PathBuf]) -> u64 {
    paths.iter().map(|p| bytes_under(p)).sum()
}

/// Bytes of the regular files at or below `p`, not following symlinks;
/// directories listed without moving their atimes.
fn bytes_under(p: &Path) -> u64 {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => crate::meta::list_dir(p)
            .into_iter()
            .flatten()
            .map(|name| bytes_under(&p.join(name)))
            .sum(),
        Ok(m) if m.is_file() => m.len(),
        _ => 0,
    }
}

/// A local backup command failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyRingError),
    /// The backup failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The restore or verify failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The backup directory has a problem.
    #[error("{0}")]
    Store(String),
    /// A source path is not usable.
    #[error("cannot back up {0}: {1}")]
    Source(PathBuf, io::Error),
    /// A snapshot could not be made or read.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
}

impl From<crate::repo::RepoError> for LocalError {
    fn from(e: crate::repo::RepoError) -> Self {
        LocalError::Snapshot(e.into())
    }
}

/// Which backup version to use.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selector {
    /// The backup, or the only one in the directory.
    pub backup_id: Option<BackupId>,
    /// The version, or the newest complete one.
    pub version: Option<u64>,
}

impl std::str::FromStr for Selector {
    type Err = String;

    /// `ID` or `ID@VERSION`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, version) = match s.split_once('@') {
            Some((id, v)) => (
                id,
                Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("{v:?} is not a version number"))?,
                ),
            ),
            None => (s, None),
        };
        let backup_id = id.parse::<BackupId>().map_err(|e| e.to_string())?;
        Ok(Selector {
            backup_id: Some(backup_id),
            version,
        })
    }
}

/// One backup version found in a directory.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The backup.
    pub backup_id: BackupId,
    /// The version.
    pub version: u64,
    /// Positions holding its manifest.
    pub positions: Vec<usize>,
}

/// A directory of position directories.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// The store at `root` (created on first backup).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    fn version_dir(&self, position: usize, id: BackupId, version: u64) -> PathBuf {
        self.root
            .join(position.to_string())
            .join(id.to_string())
            .join(version.to_string())
    }

    /// The position directories present (a symlink to a directory on
    /// another disk counts).
    fn positions(&self) -> Vec<usize> {
        let mut v: Vec<usize> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        v.sort_unstable();
        v
    }

    /// Every complete backup version (one with a manifest at some position)
    /// that was not forgotten (no position holds its tombstone: a position
    /// that was away during `forget` may still hold the root).
    pub fn list(&self) -> Vec<Listed> {
        let mut found: BTreeMap<(BackupId, u64), Vec<usize>> = BTreeMap::new();
        let mut forgotten = std::collections::BTreeSet::new();
        for p in self.positions() {
            let pdir = self.root.join(p.to_string());
            for b in fs::read_dir(&pdir).into_iter().flatten().flatten() {
                let Some(id) = b
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<BackupId>().ok())
                else {
                    continue;
                };
                for v in fs::read_dir(b.path()).into_iter().flatten().flatten() {
                    let Some(version) = v.file_name().to_str().and_then(|s| s.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    if v.path().join(MANIFEST_FILE).is_file() {
                        found.entry((id, version)).or_default().push(p);
                    }
                    if v.path().join(FORGOTTEN_FILE).is_file() {
                        forgotten.insert((id, version));
                    }
                }
            }
        }
        found
            .into_iter()
            .filter(|(k, _)| !forgotten.contains(k))
            .map(|((backup_id, version), positions)| Listed {
                backup_id,
                version,
                positions,
            })
            .collect()
    }

    /// The version after every version directory of `id`, complete or not.
    fn next_version(&self, id: BackupId) -> u64 {
        let mut max = 0;
        for p in self.positions() {
            let bdir = self.root.join(p.to_string()).join(id.to_string());
            for v in fs::read_dir(bdir).into_iter().flatten().flatten() {
                if let Some(n) = v.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
                    max = max.max(n);
                }
            }
        }
        max + 1
    }

    /// Resolves a selector to one complete version.
    pub fn select(&self, sel: Selector) -> Result<(BackupId, u64), LocalError> {
        let all = self.list();
        if all.is_empty() {
            return Err(LocalError::Store(format!(
                "{} holds no complete backup; check the path (it should contain the position directories 0, 1, ...)",
                self.root.display()
            )));
        }
        let id = match sel.backup_id {
            Some(id) => id,
            None => {
                let mut ids: Vec<BackupId> = all.iter().map(|l| l.backup_id).collect();
                ids.dedup();
                if ids.len() > 1 {
                    let names: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
                    return Err(LocalError::Store(format!(
                        "{} holds several backups ({}); name one as ID or ID@VERSION",
                        self.root.display(),
                        names.join(", ")
                    )));
                }
                ids[0]
            }
        };
        let versions: Vec<u64> = all
            .iter()
            .filter(|l| l.backup_id == id)
            .map(|l| l.version)
            .collect();
        let version = match sel.version {
            Some(v) if versions.contains(&v) => v,
            Some(v) => {
                return Err(LocalError::Store(format!(
                    "backup {id} has no complete version {v} in {} (versions: {versions:?})",
                    self.root.display()
                )));
            }
            None => *versions.last().ok_or_else(|| {
                LocalError::Store(format!("backup {id} is not in {}", self.root.display()))
            })?,
        };
        Ok((id, version))
    }

    /// A sink writing version `version` of `id`.
    /// In a store that has position directories already, a position whose
    /// directory is missing (a disk not mounted) is a failed position:
    /// nothing is written beneath its mount point.
    pub fn sink(&self, id: BackupId, version: u64, code: &Code) -> LocalSink {
        let existing = self.positions();
        let failed = (0..code.suppliers())
            .map(|p| {
                (!existing.is_empty() && !existing.contains(&p)).then(|| {
                    format!(
                        "its directory {} is missing (a disk that is not mounted?); put it back, then run verify",
                        self.root.join(p.to_string()).display()
                    )
                })
            })
            .collect();
        LocalSink {
            store: self.clone(),
            id,
            version,
            code: code.clone(),
            created: vec![false; code.suppliers()],
            failed,
            fs: Arc::new(RealFs),
            unsynced: vec![Vec::new(); code.suppliers()],
            anchored: vec![false; code.suppliers()],
        }
    }

    /// A source reading version `version` of `id`.
    pub fn source(&self, id: BackupId, version: u64) -> LocalSource {
        LocalSource {
            store: self.clone(),
            id,
            version,
        }
    }
}

/// Deletes packs (version 0) from the position directories of a
/// [`LocalStore`] coded with `code`.
pub struct LocalPackDeleter {
    /// The store.
    pub store: LocalStore,
    /// The code the packs are in.
    pub code: Code,
}

impl crate::prune::PackDeleter for LocalPackDeleter {
    fn delete(&mut self, backup: BackupId, pack: u64, position: usize) -> bool {
        // A position directory that is gone (a disk unplugged) is away.
        if !self.store.root.join(position.to_string()).is_dir() {
            return false;
        }
        let dir = self.store.version_dir(position, backup, 0);
        (0..self.code.fragment_count())
            .filter(|&f| self.code.fragment_position(f) == position)
            .all(
                |f| match fs::remove_file(dir.join(fragment_name(pack, f))) {
                    Ok(()) => true,
                    Err(e) => e.kind() == io::ErrorKind::NotFound,
                },
            )
    }
}

fn fragment_name(block: u64, fragment: usize) -> String {
    format!("b{block:010}.f{fragment:03}")
}

/// Writes fragments into the position directories.
///
/// Durability (issue 19): only what the sink wrote is flushed, never the
/// whole file system. [`FragmentSink::sync`] fsyncs each fragment file
/// written since the last sync, then its directory and, the first time,
/// every directory above it up to the store's root and the root's parent
/// (one made by an earlier run that never synced would otherwise be
/// lost with everything under it); a manifest is written to a temporary file,
/// fsynced, renamed and its directory fsynced. Every step goes through
/// [`Fs`], which a crash-point test records (`tests/sink_crash_points.rs`).
pub struct LocalSink {
    store: LocalStore,
    id: BackupId,
    version: u64,
    code: Code,
    created: Vec<bool>,
    failed: Vec<Option<String>>,
    fs: Arc<dyn Fs>,
    /// Per position: fragment files written since the last sync.
    unsynced: Vec<Vec<PathBuf>>,
    /// Per position: whether the names from the store's root down to the
    /// version's directory were made durable.
    anchored: Vec<bool>,
}

impl LocalSink {
    /// Takes its durable steps through `fs` (a test's recorder).
    pub fn with_fs(mut self, fs: Arc<dyn Fs>) -> Self {
        self.fs = fs;
        self
    }

    /// Makes the directory of `position` and any missing parent.
    fn make_dir(&mut self, position: usize) -> io::Result<PathBuf> {
        let dir = self.store.version_dir(position, self.id, self.version);
        let mut missing = Vec::new();
        let mut d = dir.as_path();
        while !d.is_dir() {
            missing.push(d.to_path_buf());
            d = d
                .parent()
                .ok_or_else(|| io::Error::other("a position directory has no parent"))?;
        }
        for m in missing.into_iter().rev() {
            match self.fs.create_dir(&m) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        self.created[position] = true;
        Ok(dir)
    }

    /// Makes what was written at `position` since the last sync durable.
    fn sync_position(&mut self, position: usize) -> io::Result<()> {
        let dir = self.store.version_dir(position, self.id, self.version);
        for f in &self.unsynced[position] {
            self.fs.sync_file(f)?;
        }
        self.fs.sync_dir(&dir)?;
        if !self.anchored[position] {
            // Each directory's name in its parent, up to the root's own.
            let top = self.store.root.parent();
            let mut d = dir.parent();
            while let Some(x) = d {
                let x = if x.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    x
                };
                self.fs.sync_dir(x)?;
                if Some(x) == top || x == Path::new(".") {
                    break;
                }
                d = x.parent();
            }
            self.anchored[position] = true;
        }
        self.unsynced[position].clear();
        Ok(())
    }

    fn write_one(&mut self, position: usize, block: &SealedBlock, f: usize) -> io::Result<()> {
        let dir = if self.created[position] {
            self.store.version_dir(position, self.id, self.version)
        } else {
            self.make_dir(position)?
        };
        let header = block
            .header()
            .ok_or_else(|| io::Error::other("block not sealed"))?;
        let path = dir.join(fragment_name(header.header.block, f));
        self.unsynced[position].push(path.clone());
        let mut w = BufWriter::with_capacity(64 * 1024, File::create(&path)?);
        write_fragment(
            &mut w,
            header,
            f,
            self.code.fragment_kind(f),
            block.fragment(f),
        )?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        // Writeback starts now, in the background, so the next sync waits
        // for little (and the written pages leave the cache).
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        Ok(())
    }
}

impl FragmentSink for LocalSink {
    fn put_block(&mut self, block: &mut SealedBlock) -> Result<Vec<usize>, SinkError> {
        let mut failed = Vec::new();
        for f in 0..self.code.fragment_count() {
            let p = self.code.fragment_position(f);
            if self.failed[p].is_some() {
                if !failed.contains(&p) {
                    failed.push(p);
                }
                continue;
            }
            if let Err(e) = self.write_one(p, block, f) {
                self.failed[p] = Some(format!("writing fragments failed: {e}"));
                failed.push(p);
            }
        }
        Ok(failed)
    }

    fn sync(&mut self) -> Result<Vec<usize>, SinkError> {
        for p in 0..self.code.suppliers() {
            if !(self.failed[p].is_none() && self.created[p]) {
                continue;
            }
            if let Err(e) = self.sync_position(p) {
                self.failed[p] = Some(format!("making its fragments durable failed: {e}"));
            }
        }
        Ok((0..self.code.suppliers())
            .filter(|&p| self.failed[p].is_some())
            .collect())
    }

    fn commit(&mut self, manifest: &[u8]) -> Result<Vec<usize>, SinkError> {
        // Phase 1: the fragments of every position become durable. Phase 2,
        // only then: the manifest, written crash-safely at each position. A
        // version without a manifest is incomplete and ignored, so a crash at
        // any moment never shows a version whose fragments may be lost.
        self.sync()?;
        let mut written = 0;
        for p in 0..self.code.suppliers() {
            if self.failed[p].is_some() {
                continue;
            }
            // A snapshot root's directory holds no fragment: made here, and
            // its parents synced with it.
            let res = (|| -> io::Result<()> {
                if !self.created[p] {
                    self.make_dir(p)?;
                    self.sync_position(p)?;
                }
                let dir = self.store.version_dir(p, self.id, self.version);
                let tmp = dir.join(".manifest.tmp");
                File::create(&tmp)?.write_all(manifest)?;
                self.fs.sync_file(&tmp)?;
                self.fs.rename(&tmp, &dir.join(MANIFEST_FILE))?;
                self.fs.sync_dir(&dir)
            })();
            match res {
                Ok(()) => written += 1,
                Err(e) => self.failed[p] = Some(format!("writing the manifest failed: {e}")),
            }
        }
        if written == 0 {
            let why = (0..self.code.suppliers())
                .find_map(|p| self.failure(p))
                .unwrap_or_else(|| "nothing was written".into());
            return Err(SinkError(format!(
                "no position directory under {} could take the manifest ({why}); check free space and permissions",
                self.store.root.display()
            )));
        }
        Ok((0..self.code.suppliers())
            .filter(|&p| self.failed[p].is_some())
            .collect())
    }

    fn failure(&self, position: usize) -> Option<String> {
        self.failed.get(position).cloned().flatten()
    }
}

/// Reads fragments from the position directories.
pub struct LocalSource {
    store: LocalStore,
    id: BackupId,
    version: u64,
}

impl FragmentSource for LocalSource {
    fn manifest(&mut self, attempt: usize) -> Result<Option<Vec<u8>>, SourceError> {
        let with: Vec<usize> = self
            .store
            .positions()
            .into_iter()
            .filter(|p| {
                self.store
                    .version_dir(*p, self.id, self.version)
                    .join(MANIFEST_FILE)
                    .is_file()
            })
            .collect();
        match with.get(attempt) {
            Some(p) => {
                let path = self
                    .store
                    .version_dir(*p, self.id, self.version)
                    .join(MANIFEST_FILE);
                let mut bytes = Vec::new();
                open_regular(&path)
                    .and_then(|f| f.take(MAX_MANIFEST_FILE + 1).read_to_end(&mut bytes))
                    .map_err(|e| SourceError(format!("reading {}: {e}", path.display())))?;
                if bytes.len() as u64 > MAX_MANIFEST_FILE {
                    return Err(SourceError(format!(
                        "{} is larger than any manifest can be; it is not a BitDust manifest",
                        path.display()
                    )));
                }
                Ok(Some(bytes))
            }
            None => Ok(None),
        }
    }

    fn positions(&self) -> Vec<usize> {
        self.store
            .positions()
            .into_iter()
            .filter(|p| self.store.version_dir(*p, self.id, self.version).is_dir())
            .collect()
    }

    fn fragment(
        &mut self,
        position: usize,
        block: u64,
        fragment: usize,
    ) -> Result<Option<Box<dyn Read + '_>>, SourceError> {
        let path = self
            .store
            .version_dir(position, self.id, self.version)
            .join(fragment_name(block, fragment));
        // Anything unreadable (absent, a symlink, a FIFO, no permission) is a
        // missing fragment, not a failed restore.
        match open_regular(&path) {
            Ok(f) => Ok(Some(Box::new(BufReader::with_capacity(64 * 1024, f)))),
            Err(_) => Ok(None),
        }
    }

    fn describe(&self, position: usize, block: u64, fragment: usize) -> String {
        self.store
            .version_dir(position, self.id, self.version)
            .join(fragment_name(block, fragment))
            .display()
            .to_string()
    }

    fn backup_id(&self) -> BackupId {
        self.id
    }

    fn version(&self) -> u64 {
        self.version
    }
}

/// What a local backup starts from.
struct Sources {
    /// The source paths, absolute, sorted, without duplicates.
    abs: Vec<PathBuf>,
    /// The same as raw bytes.
    raw: Vec<Vec<u8>>,
    keys: KeyRing,
    identity: Arc<bitdust_crypto::Identity>,
    /// The backup of these paths by this customer.
    id: BackupId,
}

impl Sources {
    /// Resolves `sources` and opens (or creates) the keys in `keys_dir`.
    fn open(keys_dir: &Path, sources: &[PathBuf]) -> Result<Sources, LocalError> {
        let mut abs = Vec::with_capacity(sources.len());
        for s in sources {
            abs.push(source_path(s).map_err(|e| LocalError::Source(s.clone(), e))?);
        }
        abs.sort();
        abs.dedup();
        let (keys, _created) = KeyRing::open_or_create(keys_dir)?;
        let identity = Arc::new(bitdust_crypto::Identity::from_secret(
            &keys.identity().secret(),
        ));
        let raw: Vec<Vec<u8>> = abs
            .iter()
            .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
            .collect();
        let id = BackupId::for_sources(identity.node_id().as_bytes(), &raw);
        Ok(Sources {
            abs,
            raw,
            keys,
            identity,
            id,
        })
    }
}

/// `bitdustctl local backup`: backs up `sources` into `dir`, creating keys in
/// `keys_dir` on first use. Later runs of the same paths add versions.
pub fn backup_to_dir(
    keys_dir: &Path,
    sources: &[PathBuf],
    dir: &Path,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport, LocalError> {
    let Sources {
        abs,
        keys,
        identity,
        id,
        ..
    } = Sources::open(keys_dir, sources)?;
    let store = LocalStore::new(dir);
    fs::create_dir_all(dir)
        .map_err(|e| LocalError::Store(format!("cannot create {}: {e}", dir.display())))?;
    let _lock = lock_backup(dir, id)?;
    // Later versions reuse the backup key of the newest earlier one, so one
    // key opens every version of a backup.
    let previous = store.list().into_iter().rev().find(|l| l.backup_id == id);
    let key = match previous {
        Some(l) => {
            let mut src = store.source(id, l.version);
            let m = load_manifest(&mut src, &identity.node_id())?;
            BackupKeyMaterial::from_manifest(&m).ok_or_else(|| {
                LocalError::Store("the previous version's backup key is malformed".into())
            })?
        }
        None => BackupKeyMaterial::generate(keys.master_recipient())?,
    };
    let version = store.next_version(id);
    let code = Code::new(opts.scheme, opts.suppliers).map_err(BackupError::from)?;
    let mut sink = store.sink(id, version, &code);
    let mut input = crate::LocalPaths::new(&abs)?;
    let report = backup(
        identity, &key, id, version, &mut input, opts, &mut sink, progress,
    )?;
    Ok(report)
}

/// Holds an exclusive lock on `DIR/.<id>.lock` for the duration of a backup,
/// so a second backup of the same paths into the same directory is refused
/// instead of racing for the same version number. Released on drop, or when
/// the process dies.
fn lock_backup(dir: &Path, id: BackupId) -> Result<File, LocalError> {
    let path = dir.join(format!(".{id}.lock"));
    let file = File::create(&path)
        .map_err(|e| LocalError::Store(format!("cannot create lock {}: {e}", path.display())))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(LocalError::Store(format!(
            "another backup of the same paths into {} is running (it holds {}); wait for it to finish",
            dir.display(),
            path.display()
        ))),
        Err(e) => Err(LocalError::Store(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// Opens the selected version: verified manifest and its backup key.
fn open_selected(
    keys_dir: &Path,
    dir: &Path,
    sel: Selector,
    need_key: bool,
) -> Result<(LocalSource, Manifest, Option<BackupKey>), LocalError> {
    let keys = KeyRing::open(keys_dir)?;
    let store = LocalStore::new(dir);
    let (id, version) = store.select(sel)?;
    let mut source = store.source(id, version);
    let manifest = load_manifest(&mut source, &keys.identity().node_id())?;
    let key = if need_key {
        let master = keys.master_key()?;
        Some(
            BackupKey::unwrap_with(&manifest.wrapped_backup_key, master.age_identity()).map_err(
                |e| {
                    LocalError::Store(format!(
                        "the backup key of {id}@{version} does not open with this master key: {e}"
                    ))
                },
            )?,
        )
    } else {
        None
    };
    Ok((source, manifest, key))
}

/// `bitdustctl local restore`.
pub fn restore_from_dir(
    keys_dir: &Path,
    dir: &Path,
    sel: Selector,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<(Manifest, RestoreReport), LocalError> {
    let (mut source, manifest, key) = open_selected(keys_dir, dir, sel, true)?;
    let key = key.ok_or_else(|| LocalError::Store("no backup key".into()))?;
    let report = restore(&mut source, &manifest, &key, target, opts, progress)?;
    Ok((manifest, report))
}

/// `bitdustctl local verify`: needs no master secret.
pub fn verify_dir(keys_dir: &Path, dir: &Path, sel: Selector) -> Result<VerifyReport, LocalError> {
    let (mut source, manifest, _) = open_selected(keys_dir, dir, sel, false)?;
    Ok(verify(&mut source, &manifest)?)
}

/// The verified root of snapshot `snapshot` of `id`: the first copy, from
/// any position, that verifies.
pub fn open_root(
    store: &LocalStore,
    customer: &bitdust_crypto::NodeId,
    id: BackupId,
    snapshot: u64,
) -> Result<bitdust_block::root::Root, LocalError> {
    crate::snapshot::best_root(&mut store.source(id, snapshot), customer, id, snapshot).map_err(
        |why| {
            LocalError::Store(format!(
                "the root of snapshot {id}@{snapshot} in {} does not verify ({why})",
                store.root.display()
            ))
        },
    )
}

/// The erasure code asked for on the command line; what is not given is
/// the backup's own (every snapshot of a backup is in one code), or the
/// default for a new backup.
#[derive(Clone, Copy, Debug, Default)]
pub struct CodeGiven {
    /// `--scheme`.
    pub scheme: Option<bitdust_ecc::Scheme>,
    /// `--suppliers`.
    pub suppliers: Option<usize>,
}

/// `bitdustctl local backup`: a deduplicated snapshot of `sources` into
/// `dir`, creating keys in `keys_dir` on first use; `repo` is the
/// directory's index and files cache (`DIR/state`, whose lock the caller
/// holds). The code is `given`'s, else the backup's own, else `opts`'s.
/// Returns the backup, the snapshot number, the options used and what it
/// did.
pub fn snapshot_to_dir(
    keys_dir: &Path,
    sources: &[PathBuf],
    dir: &Path,
    repo: &crate::repo::Repo,
    opts: &crate::snapshot::SnapshotOptions,
    given: CodeGiven,
    progress: &dyn Progress,
) -> Result<
    (
        BackupId,
        u64,
        crate::snapshot::SnapshotOptions,
        crate::snapshot::SnapshotReport,
    ),
    LocalError,
> {
    let Sources {
        abs,
        raw,
        keys,
        identity,
        id,
    } = Sources::open(keys_dir, sources)?;
    let store = LocalStore::new(dir);
    // Every snapshot of a backup uses the backup key of the first.
    let previous = store.list().into_iter().rev().find(|l| l.backup_id == id);
    let mut opts = opts.clone();
    let (key, parent) = match previous {
        Some(l) => {
            let root = open_root(&store, &identity.node_id(), id, l.version)?;
            let (scheme, suppliers) = (root.scheme, root.root.suppliers as usize);
            if given.scheme.is_some_and(|s| s != scheme)
                || given.suppliers.is_some_and(|n| n != suppliers)
            {
                return Err(LocalError::Store(format!(
                    "{} holds this backup {scheme} over {suppliers} positions, and every snapshot of a backup keeps its code; drop --scheme/--suppliers, or back up into another directory",
                    dir.display()
                )));
            }
            (opts.scheme, opts.suppliers) = (scheme, suppliers);
            let key = BackupKeyMaterial {
                recipient: root.root.backup_recipient.parse().map_err(|_| {
                    LocalError::Store(format!("the backup key in {id}@{} is malformed", l.version))
                })?,
                wrapped: root.root.wrapped_backup_key.clone(),
            };
            (key, l.version)
        }
        None => {
            opts.scheme = given.scheme.unwrap_or(opts.scheme);
            opts.suppliers = given.suppliers.unwrap_or(opts.suppliers);
            (BackupKeyMaterial::generate(keys.master_recipient())?, 0)
        }
    };
    let snapshot = store.next_version(id);
    let code = Code::new(opts.scheme, opts.suppliers).map_err(BackupError::from)?;
    let mut packs = store.sink(id, 0, &code);
    let mut roots = store.sink(id, snapshot, &code);
    let now = filetime::FileTime::now();
    let writer = crate::snapshot::SnapshotWriter::new(
        repo,
        identity,
        id,
        snapshot,
        parent,
        raw,
        &key,
        opts.clone(),
        &mut packs,
        crate::repo::Time {
            secs: now.unix_seconds(),
            nanos: now.nanoseconds(),
        },
    )?
    .with_progress(progress);
    let report = writer.write_all(
        &mut crate::snapshot::LocalWalk::new(abs).with_deferred_xattrs(),
        &mut roots,
    )?;
    Ok((id, snapshot, opts, report))
}

/// `bitdustctl local restore`: snapshot `sel` of `dir` into `target` (new
/// or empty; nothing shows there unless the whole restore succeeded), only
/// the entries under `include` when it names any, giving owners back by
/// `owners` when running as root.
pub fn restore_snapshot_from_dir(
    keys_dir: &Path,
    dir: &Path,
    repo: &crate::repo::Repo,
    sel: Selector,
    target: &Path,
    include: &[Vec<u8>],
    owners: crate::snapshot::Owners,
) -> Result<
    (
        bitdust_block::root::Root,
        crate::snapshot::SnapshotRestoreReport,
    ),
    LocalError,
> {
    restore_snapshot_from_dir_on(keys_dir, dir, repo, sel, target, include, owners, 0)
}

/// [`restore_snapshot_from_dir`], decompressing on `workers` threads (0:
/// one per core; 1: on the restoring thread alone).
#[allow(clippy::too_many_arguments)]
pub fn restore_snapshot_from_dir_on(
    keys_dir: &Path,
    dir: &Path,
    repo: &crate::repo::Repo,
    sel: Selector,
    target: &Path,
    include: &[Vec<u8>],
    owners: crate::snapshot::Owners,
    workers: usize,
) -> Result<
    (
        bitdust_block::root::Root,
        crate::snapshot::SnapshotRestoreReport,
    ),
    LocalError,
> {
    let opened = Opened::new(keys_dir, dir)?;
    let root = opened.select(sel)?;
    let key = opened.backup_key(&root)?;
    let id = root.backup_id;
    let mut source = opened.store.source(id, 0);
    // Packs the index does not know (a copied or lost state) are indexed
    // from their sealed lists first.
    let dedup = opened.dedup(id);
    crate::snapshot::rebuild_index(repo, &mut source, &root, &dedup)?;
    let mut packs =
        crate::snapshot::PackReader::new(&mut source, &root, dedup, key)?.with_workers(workers);
    let report =
        crate::snapshot::restore_snapshot_staged(repo, &mut packs, target, include, owners)?;
    Ok((root, report))
}

/// `bitdustctl local verify` of a snapshot: every fragment of every pack it
/// references, and its root. Needs no master secret.
pub fn verify_snapshot_dir(
    keys_dir: &Path,
    dir: &Path,
    sel: Selector,
) -> Result<(bitdust_block::root::Root, crate::snapshot::PackVerifyReport), LocalError> {
    let opened = Opened::new(keys_dir, dir)?;
    let root = opened.select(sel)?;
    let report = crate::snapshot::verify_packs(&mut opened.store.source(root.backup_id, 0), &root)?;
    Ok((root, report))
}
