//! The snapshot commands both worlds share: `bitdustctl local DIR ...`
//! over position directories, and `bitdustctl ...` through the
//! customer-agent over the suppliers. Each world is a [`SnapshotStore`]:
//! where the roots are, how the packs are read, and who holds the keys;
//! `ls`, `diff`, `stats`, `check` and the index completion are written
//! once, here, against it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use bitdust_block::BackupId;
use bitdust_block::root::Root;
use bitdust_crypto::{BackupKey, DedupKeys};
use bitdust_proto::format::v1 as pb;

use crate::FragmentSource;
use crate::local::LocalError;
use crate::repo::{PackSet, PackState, Repo};
use crate::snapshot::{Change, NodeStream, PackReader, PackVerifyReport};

/// Where the snapshots of a backup are, and how to read them.
pub trait SnapshotStore {
    /// Where, for messages ("/mnt/backups", "the suppliers").
    fn place(&self) -> String;
    /// The snapshots of backup `id`, in number order.
    fn snapshots(&self, id: BackupId) -> Result<Vec<u64>, LocalError>;
    /// The verified root of snapshot `n` of `id`.
    fn root(&self, id: BackupId, n: u64) -> Result<Root, LocalError>;
    /// The backup key of `root`'s backup (needs `master.key`).
    fn backup_key(&self, root: &Root) -> Result<BackupKey, LocalError>;
    /// The dedup secrets of backup `id`.
    fn dedup(&self, id: BackupId) -> DedupKeys;
    /// A source of the packs (blocks of version 0) of backup `id`.
    fn packs(&self, id: BackupId) -> Box<dyn FragmentSource + '_>;
    /// Bytes of file content snapshot `n` holds (read from its root unless
    /// the store knows them).
    fn content_bytes(&self, id: BackupId, n: u64) -> Result<u64, LocalError> {
        Ok(self
            .root(id, n)?
            .root
            .stats
            .unwrap_or_default()
            .content_bytes)
    }
    /// Bytes the backup takes at the positions (after the erasure code).
    fn stored_bytes(&self, repo: &Repo, id: BackupId) -> Result<u64, LocalError>;
}

/// The union of the packs every snapshot of `id` references, and the
/// newest root (for the code). A root that does not verify stops it: its
/// packs are unknown, so nothing may be called unreferenced.
pub fn referenced(
    store: &dyn SnapshotStore,
    id: BackupId,
) -> Result<(PackSet, Option<Root>), LocalError> {
    let mut all = PackSet::default();
    let mut newest = None;
    for n in store.snapshots(id)? {
        let root = store.root(id, n)?;
        for p in crate::snapshot::root_packs(&root)?.iter() {
            all.insert(p);
        }
        newest = Some(root);
    }
    Ok((all, newest))
}

/// Indexes the packs of every snapshot of `id` that the index does not
/// know (a copied or lost state, a recovered machine), from their sealed
/// lists.
pub fn index_all(store: &dyn SnapshotStore, repo: &Repo, id: BackupId) -> Result<(), LocalError> {
    let keys = store.dedup(id);
    let mut source = store.packs(id);
    for n in store.snapshots(id)? {
        let root = store.root(id, n)?;
        crate::snapshot::rebuild_index(repo, source.as_mut(), &root, &keys)?;
    }
    Ok(())
}

/// Whether `path` is `under` or below it (`under` empty: everything).
fn is_under(path: &[u8], under: &[u8]) -> bool {
    under.is_empty()
        || path == under
        || (path.starts_with(under) && path.get(under.len()) == Some(&b'/'))
}

/// `ls`: hands every entry of snapshot `n` of `id` under `under` (a path
/// as backed up, without its leading `/`; empty: all) to `each`, in path
/// order, one at a time. Needs `master.key`.
pub fn ls(
    store: &dyn SnapshotStore,
    id: BackupId,
    n: u64,
    under: &[u8],
    mut each: impl FnMut(&pb::Node) -> Result<(), LocalError>,
) -> Result<Root, LocalError> {
    let root = store.root(id, n)?;
    let key = store.backup_key(&root)?;
    let mut source = store.packs(id);
    let mut packs = PackReader::new(source.as_mut(), &root, store.dedup(id), key)?;
    let mut nodes = NodeStream::new(packs.meta_chunks()?);
    let mut seen = false;
    while let Some(node) = nodes.next(&mut packs)? {
        if is_under(&node.path, under) {
            seen = true;
            each(&node)?;
        } else if seen {
            // A subtree is contiguous in path order: nothing more below.
            break;
        }
    }
    drop(packs);
    Ok(root)
}

/// `diff`: the changes from snapshot `older` to `newer` (backup and
/// number), in path order. Returns both roots and how many entries are
/// the same. Needs `master.key`.
pub fn diff(
    store: &dyn SnapshotStore,
    older: (BackupId, u64),
    newer: (BackupId, u64),
    mut each: impl FnMut(Change) -> Result<(), LocalError>,
) -> Result<(Root, Root, u64), LocalError> {
    let (ra, rb) = (store.root(older.0, older.1)?, store.root(newer.0, newer.1)?);
    let (ka, kb) = (store.backup_key(&ra)?, store.backup_key(&rb)?);
    let (mut sa, mut sb) = (store.packs(older.0), store.packs(newer.0));
    let mut pa = PackReader::new(sa.as_mut(), &ra, store.dedup(older.0), ka)?;
    let mut pb_ = PackReader::new(sb.as_mut(), &rb, store.dedup(newer.0), kb)?;
    let mut na = NodeStream::new(pa.meta_chunks()?);
    let mut nb = NodeStream::new(pb_.meta_chunks()?);
    let mut failed = None;
    let walked = crate::snapshot::diff((&mut na, &mut pa), (&mut nb, &mut pb_), |c| {
        each(c).map_err(|e| {
            let why = e.to_string();
            failed = Some(e);
            crate::snapshot::SnapshotError::Format(why)
        })
    });
    let same = match (walked, failed) {
        (_, Some(e)) => return Err(e),
        (r, None) => r?,
    };
    drop((pa, pb_));
    Ok((ra, rb, same))
}

/// What `stats` counts for one backup.
#[derive(Clone, Debug)]
pub struct Stats {
    /// The backup.
    pub backup_id: BackupId,
    /// Snapshots.
    pub snapshots: u64,
    /// Bytes of file content over all snapshots: what restoring each of
    /// them would write.
    pub logical_bytes: u64,
    /// Distinct chunks stored, their plain bytes, and their bytes
    /// compressed and encrypted.
    pub chunks: u64,
    /// See `chunks`.
    pub unique_bytes: u64,
    /// See `chunks`.
    pub compressed_bytes: u64,
    /// Live packs, and their bodies' bytes: stored before the erasure code.
    pub packs: u64,
    /// See `packs`.
    pub packed_bytes: u64,
    /// Bytes at the positions (fragments, and roots where the store
    /// counts them): after the erasure code.
    pub stored_bytes: u64,
    /// Condemned packs some position still holds.
    pub packs_pending_delete: u64,
}

/// `stats` of backup `id`. Needs no `master.key`.
pub fn stats(store: &dyn SnapshotStore, repo: &Repo, id: BackupId) -> Result<Stats, LocalError> {
    index_all(store, repo, id)?;
    let mut s = Stats {
        backup_id: id,
        snapshots: 0,
        logical_bytes: 0,
        chunks: 0,
        unique_bytes: 0,
        compressed_bytes: 0,
        packs: 0,
        packed_bytes: 0,
        stored_bytes: 0,
        packs_pending_delete: 0,
    };
    for n in store.snapshots(id)? {
        s.snapshots += 1;
        s.logical_bytes += store.content_bytes(id, n)?;
    }
    (s.chunks, s.unique_bytes, s.compressed_bytes) = repo.chunk_totals(id)?;
    repo.for_each_pack(id, |_, rec| {
        match rec.state {
            PackState::Live => {
                s.packs += 1;
                s.packed_bytes += rec.body_len;
            }
            PackState::Condemned => s.packs_pending_delete += 1,
        }
        Ok(())
    })?;
    s.stored_bytes = store.stored_bytes(repo, id)?;
    Ok(s)
}

/// Which packs `check --read-data-subset` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataSubset {
    /// About this share of the packs (0..=100), chosen at random each run.
    Percent(f64),
    /// Part `n` of `of` (1-based): the packs whose number is `n - 1`
    /// modulo `of`, so that `1/7` … `7/7` on seven nights read everything.
    Part {
        /// Which part.
        n: u64,
        /// Of how many.
        of: u64,
    },
}

impl std::str::FromStr for DataSubset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a subset; write a share like 10% or a part like 1/7");
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("{s:?}: a share is between 0% and 100%"));
            }
            return Ok(DataSubset::Percent(p));
        }
        let (n, of) = s.split_once('/').ok_or_else(bad)?;
        let (n, of): (u64, u64) = (
            n.trim().parse().map_err(|_| bad())?,
            of.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || n > of {
            return Err(format!("{s:?}: the part is from 1 to {of}"));
        }
        Ok(DataSubset::Part { n, of })
    }
}

impl std::fmt::Display for DataSubset {
    /// The form `from_str` reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSubset::Percent(p) => write!(f, "{p}%"),
            DataSubset::Part { n, of } => write!(f, "{n}/{of}"),
        }
    }
}

impl DataSubset {
    fn chooser(self) -> impl Fn(u64) -> bool {
        let seed = RandomState::new();
        move |pack| match self {
            DataSubset::Percent(p) => ((seed.hash_one(pack) % 1_000_000) as f64) < p * 10_000.0,
            DataSubset::Part { n, of } => pack % of == n - 1,
        }
    }
}

/// What `check` found for one backup.
#[derive(Debug)]
pub struct CheckReport {
    /// The backup.
    pub backup_id: BackupId,
    /// Snapshots whose roots verified.
    pub snapshots: u64,
    /// The health of every referenced pack (each read once).
    pub packs: PackVerifyReport,
    /// Whether the snapshots' metadata was read (needs `master.key`).
    pub metadata_checked: bool,
    /// Entries read from the metadata.
    pub entries: u64,
    /// Packs whose data was read back, and the chunks verified in them.
    pub packs_read: u64,
    /// See `packs_read`.
    pub chunks_verified: u64,
    /// Problems that make a snapshot unrestorable, one sentence each.
    pub errors: Vec<String>,
}

/// `check` of backup `id`: every root verifies;
/// every fragment of every referenced pack is read and its signed header
/// and hash checked; with `master.key`, every snapshot's metadata is read
/// and every file's chunks are found in a pack that snapshot names; with
/// `read_data`, the chosen packs are opened and every chunk in them is
/// decrypted, decompressed and checked against its id.
pub fn check(
    store: &dyn SnapshotStore,
    repo: &Repo,
    id: BackupId,
    read_data: Option<DataSubset>,
) -> Result<CheckReport, LocalError> {
    let (all, newest) = referenced(store, id)?;
    let Some(newest) = newest else {
        return Err(LocalError::Store(format!(
            "backup {id} has no snapshot in {}",
            store.place()
        )));
    };
    let mut source = store.packs(id);
    let packs = crate::snapshot::verify_pack_set(source.as_mut(), &newest, &all)?;
    let snapshots = store.snapshots(id)?;
    let mut report = CheckReport {
        backup_id: id,
        snapshots: snapshots.len() as u64,
        packs,
        metadata_checked: false,
        entries: 0,
        packs_read: 0,
        chunks_verified: 0,
        errors: Vec::new(),
    };
    let key = match store.backup_key(&newest) {
        Ok(k) => k,
        Err(e) if read_data.is_some() => return Err(e),
        Err(_) => return Ok(report),
    };
    if let Err(e) = index_all(store, repo, id) {
        report
            .errors
            .push(format!("the index cannot be completed from the packs: {e}"));
    }
    for &n in &snapshots {
        let root = store.root(id, n)?;
        if let Err(e) = check_metadata(
            repo,
            source.as_mut(),
            &root,
            store.dedup(id),
            &key,
            &mut report,
        ) {
            report
                .errors
                .push(format!("snapshot {n}: its entries cannot be read: {e}"));
        }
    }
    report.metadata_checked = true;
    if let Some(subset) = read_data {
        let chosen = subset.chooser();
        let mut reader = PackReader::new(source.as_mut(), &newest, store.dedup(id), key)?;
        for pack in all.iter().filter(|p| chosen(*p)) {
            match reader.check_pack(pack) {
                Ok(n) => report.chunks_verified += n,
                Err(e) => report.errors.push(e.to_string()),
            }
            report.packs_read += 1;
        }
    }
    Ok(report)
}

/// Reads the entries of `root` and checks that every chunk of every file
/// is in a pack the snapshot names; what is wrong goes to `report.errors`.
fn check_metadata(
    repo: &Repo,
    source: &mut dyn FragmentSource,
    root: &Root,
    dedup: DedupKeys,
    key: &BackupKey,
    report: &mut CheckReport,
) -> Result<(), LocalError> {
    let n = root.root.snapshot;
    let id = root.backup_id;
    let refs = crate::snapshot::root_packs(root)?;
    let mut reader = PackReader::new(source, root, dedup, key.clone())?;
    let mut nodes = NodeStream::new(reader.meta_chunks()?);
    let txn = repo.read()?;
    while let Some(node) = nodes.next(&mut reader)? {
        report.entries += 1;
        for c in &node.chunks {
            let Ok(cid) = <[u8; 32]>::try_from(c.as_slice()).map(bitdust_crypto::ChunkId) else {
                report.errors.push(format!(
                    "snapshot {n}: /{} has a chunk id that is not 32 bytes",
                    String::from_utf8_lossy(&node.path)
                ));
                break;
            };
            let at = repo.chunk(&txn, id, &cid)?.map(|l| l.pack);
            if !at.is_some_and(|p| refs.contains(p)) {
                report.errors.push(format!(
                    "snapshot {n}: /{}: chunk {cid} is in no pack the snapshot names; it cannot be restored whole",
                    String::from_utf8_lossy(&node.path)
                ));
                break;
            }
        }
    }
    Ok(())
}
