//! The snapshot commands both worlds share: `bitdustctl local DIR ...`
//! over position directories, and `bitdustctl ...` through the
//! customer-agent over the suppliers. Each world is a [`SnapshotStore`]:
//! where the roots are, how the packs are read, and who holds the keys;
//! `ls`, `diff`, `stats`, `check`, the index completion and (against
//! [`RepackStore`]) the repack of mostly-unused packs are written once,
//! here, against it.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use bitdust_block::BackupId;
use bitdust_block::pack::PackKind;
use bitdust_block::root::Root;
use bitdust_crypto::{BackupKey, DedupKeys, Identity};
use bitdust_ecc::Code;
use bitdust_proto::format::v1 as pb;
use prost::Message;

use crate::local::LocalError;
use crate::repo::{ChunkLoc, PackSet, PackState, Repo};
use crate::snapshot::{Change, NodeStream, PackReader, PackVerifyReport};
use crate::{FragmentSink, FragmentSource};

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
    /// The health of `packs` of `root`'s backup, and whether every
    /// fragment was only listed (`true`) or read and verified: by default
    /// read (a local disk); a store where reading is costly answers from
    /// what the positions list.
    fn pack_health(
        &self,
        repo: &Repo,
        root: &Root,
        packs: &PackSet,
    ) -> Result<(PackVerifyReport, bool), LocalError> {
        let mut source = self.packs(root.backup_id);
        Ok((
            crate::snapshot::verify_pack_set(source.as_mut(), root, packs, Some(repo))?,
            false,
        ))
    }
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
    /// The health of every referenced pack (each read once, or listed).
    pub packs: PackVerifyReport,
    /// Whether the fragments were only listed (present, of their size),
    /// not read.
    pub fragments_listed: bool,
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
    let (packs, fragments_listed) = store.pack_health(repo, &newest, &all)?;
    let mut source = store.packs(id);
    let snapshots = store.snapshots(id)?;
    let mut report = CheckReport {
        backup_id: id,
        snapshots: snapshots.len() as u64,
        packs,
        fragments_listed,
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
        let mut reader =
            PackReader::new(source.as_mut(), &newest, store.dedup(id), key)?.with_index(repo);
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
    let mut reader = PackReader::new(source, root, dedup, key.clone())?.with_index(repo);
    let mut nodes = NodeStream::new(reader.meta_chunks()?);
    while let Some(node) = nodes.next(&mut reader)? {
        report.entries += 1;
        // A read transaction per entry: the reader looks up each pack's
        // header in the index as it fetches, and LMDB allows one read
        // transaction per thread.
        let txn = repo.read()?;
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

/// A [`SnapshotStore`] that can also write: new packs, and roots again.
pub trait RepackStore: SnapshotStore {
    /// Who signs the packs and roots.
    fn identity(&self) -> Arc<Identity>;
    /// The first of positions `0..positions` that cannot take fragments
    /// now, if any.
    fn missing_position(&self, positions: usize) -> Option<usize>;
    /// Where new packs (blocks of version 0) of backup `id` go.
    fn pack_sink(&self, id: BackupId, code: &Code) -> Box<dyn FragmentSink + '_>;
    /// Stores `root` again at every position with `packs` as the packs it
    /// references and a higher revision, signed anew (the highest revision
    /// is the root: see [`signed_revision`]). Whatever else names a
    /// snapshot's packs (the agent's catalog) follows so that no pack a
    /// root names is ever unnamed there first.
    fn rewrite_root(&self, root: &Root, packs: &PackSet) -> Result<(), LocalError>;
}

/// `root` with `packs` and the next revision, signed by `identity`.
pub fn signed_revision(identity: &Identity, root: &Root, packs: &PackSet) -> Vec<u8> {
    let mut r = root.root.clone();
    r.revision += 1;
    r.pack_ranges = packs.to_ranges();
    bitdust_block::root::sign_root(identity, &r)
}

/// How to repack.
#[derive(Clone, Copy, Debug)]
pub struct RepackOptions {
    /// The time now (unix seconds), recorded in the new packs.
    pub now: u64,
    /// The size of the packs a repack writes.
    pub pack_size: usize,
    /// For crash tests: the repack stops (as a `kill -9` would) after this
    /// many durable steps (packs made durable, a root rewritten, the index
    /// moved), and fails.
    pub stop_after_steps: Option<u32>,
    /// For crash tests: called after each durable step (a daemon's crash
    /// point).
    pub after_step: Option<fn()>,
}

/// What a repack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepackReport {
    /// Bytes of chunk data in the packs (data and metadata) the snapshots
    /// reference, and how many of them no kept snapshot uses, before the
    /// repack.
    pub data_bytes: u64,
    /// See `data_bytes`.
    pub unused_before: u64,
    /// Unused bytes left in packs that stay.
    pub unused_after: u64,
    /// Packs emptied (deleted by the prune that follows).
    pub packs_repacked: u64,
    /// Packs written with their live chunks.
    pub packs_written: u64,
    /// Chunks moved, and their stored bytes.
    pub chunks_moved: u64,
    /// See `chunks_moved`.
    pub bytes_moved: u64,
}

/// `root` with the metadata chunks it names in the packs `emptied` named
/// where they are now: where the step moved them (`moved`), else where the
/// index has them (a pack added to `packs`). Unchanged when it names none
/// there.
fn moved_meta(
    root: &Root,
    emptied: &PackSet,
    moved: &HashMap<bitdust_crypto::ChunkId, ChunkLoc>,
    repo: &Repo,
    dedup: &DedupKeys,
    packs: &mut PackSet,
) -> Result<Root, LocalError> {
    let customer = bitdust_crypto::NodeId::try_from(root.root.customer.as_slice())
        .map_err(|_| LocalError::Store("a root's customer is not 32 bytes".into()))?;
    let aad = bitdust_block::root::meta_aad(&customer, root.backup_id, root.root.snapshot);
    let bytes = dedup
        .open_list(&aad, &root.root.sealed_meta)
        .map_err(|e| LocalError::Store(format!("snapshot {}: {e}", root.root.snapshot)))?;
    let mut meta = pb::MetaChunks::decode(bytes.as_slice()).map_err(|e| {
        LocalError::Store(format!(
            "snapshot {}'s metadata list: {e}",
            root.root.snapshot
        ))
    })?;
    let mut changed = false;
    let txn = repo.read()?;
    for r in meta.chunks.iter_mut().filter(|r| emptied.contains(r.pack)) {
        let cid = <[u8; 32]>::try_from(r.id.as_slice())
            .map(bitdust_crypto::ChunkId)
            .map_err(|_| LocalError::Store("a metadata chunk id that is not 32 bytes".into()))?;
        let now = match moved.get(&cid) {
            Some(loc) => *loc,
            None => repo
                .chunk(&txn, root.backup_id, &cid)?
                .filter(|loc| !emptied.contains(loc.pack))
                .ok_or_else(|| {
                    LocalError::Store(format!(
                        "metadata chunk {cid} of snapshot {} is in no pack that stays; nothing of it was changed, run check",
                        root.root.snapshot
                    ))
                })?,
        };
        packs.insert(now.pack);
        (r.pack, r.offset, r.stored_len, r.plain_len) =
            (now.pack, now.offset, now.stored_len, now.plain_len);
        changed = true;
    }
    let mut out = root.clone();
    if changed {
        out.root.sealed_meta = dedup.seal_list(&aad, &meta.encode_to_vec());
    }
    Ok(out)
}

/// Old packs emptied per step: each step writes their live chunks into new
/// packs, then rewrites the roots twice (see [`repack`]).
const REPACK_STEP: usize = 32;

/// Repacks the mostly-unused packs of backup `id`, data and metadata
/// (most unused first), until at most `max_unused` of the referenced
/// bytes are unused: their live chunks are copied, still compressed and
/// encrypted anew, into new packs of the same kind. Needs `master.key` (to know which chunks the kept
/// snapshots use, and to decrypt them). Per step, crash-safe at every
/// point:
/// 1. the new packs are written and made durable (a crash leaves packs no
///    root names, deleted after the grace period);
/// 2. every root naming an emptied pack is rewritten (a higher revision)
///    to name the new packs as well, with its metadata chunks in emptied
///    packs named where they are now;
/// 3. the new packs are recorded and the index points at them (one
///    transaction);
/// 4. those roots are rewritten without the emptied packs, which the
///    prune then deletes like any unreferenced pack.
pub fn repack(
    store: &dyn RepackStore,
    repo: &Repo,
    id: BackupId,
    max_unused: f64,
    opts: &RepackOptions,
) -> Result<(RepackReport, Option<String>), LocalError> {
    let (kept, newest) = referenced(store, id)?;
    let Some(newest) = newest else {
        return Ok((RepackReport::default(), None));
    };
    let key = store.backup_key(&newest)?;
    // New packs written while a position is away would hold less
    // redundancy than the packs they replace.
    if let Some(p) = store.missing_position(newest.root.suppliers as usize) {
        return Ok((
            RepackReport::default(),
            Some(format!(
                "position {p} is missing, and repacked data would lack its fragments; prune again when it is back"
            )),
        ));
    }
    let snapshots = store.snapshots(id)?;
    // The chunks the kept snapshots use, marked on disk.
    repo.live_clear(id)?;
    let mut source = store.packs(id);
    for &n in &snapshots {
        let root = store.root(id, n)?;
        let mut reader = PackReader::new(source.as_mut(), &root, store.dedup(id), key.clone())?;
        // The metadata stream's chunks, which the root names by place.
        let refs = reader.meta_chunks()?;
        let meta: Vec<bitdust_crypto::ChunkId> = refs
            .iter()
            .filter_map(|r| <[u8; 32]>::try_from(r.id.as_slice()).ok())
            .map(bitdust_crypto::ChunkId)
            .collect();
        repo.live_mark(id, &meta)?;
        let mut nodes = NodeStream::new(refs);
        let mut batch = Vec::with_capacity(4096);
        while let Some(node) = nodes.next(&mut reader)? {
            for c in &node.chunks {
                if let Ok(c) = <[u8; 32]>::try_from(c.as_slice()) {
                    batch.push(bitdust_crypto::ChunkId(c));
                }
            }
            if batch.len() >= 4096 {
                repo.live_mark(id, &batch)?;
                batch.clear();
            }
        }
        repo.live_mark(id, &batch)?;
    }
    // Live bytes per pack (one word per pack number), then the candidates.
    let next = repo.next_pack(id)?;
    let mut live = vec![0u64; usize::try_from(next).unwrap_or(usize::MAX).min(1 << 28)];
    repo.for_each_live(id, |_, loc| {
        if let Some(l) = loc
            && let Some(v) = live.get_mut(l.pack as usize)
        {
            *v += u64::from(l.stored_len);
        }
        Ok(())
    })?;
    let mut report = RepackReport::default();
    let mut candidates = Vec::new();
    repo.for_each_pack(id, |n, rec| {
        if rec.state == PackState::Live && kept.contains(n) {
            let used = live.get(n as usize).copied().unwrap_or(0);
            let unused = rec.data_len.saturating_sub(used);
            report.data_bytes += rec.data_len;
            report.unused_before += unused;
            if unused > 0 {
                candidates.push((n, unused, rec.data_len, rec.kind));
            }
        }
        Ok(())
    })?;
    // Most unused first (by share), until what stays is within the limit.
    candidates.sort_by(|a, b| (b.1 * a.2).cmp(&(a.1 * b.2)).then(a.0.cmp(&b.0)));
    let allowed = (max_unused.clamp(0.0, 1.0) * report.data_bytes as f64) as u64;
    let mut unused = report.unused_before;
    // Packs never mix kinds: each kind is repacked into packs of its own.
    let (mut chosen_data, mut chosen_meta) = (Vec::new(), Vec::new());
    for (n, u, _, kind) in candidates {
        if unused <= allowed {
            break;
        }
        unused -= u;
        match kind {
            PackKind::Meta => chosen_meta.push(n),
            PackKind::Data => chosen_data.push(n),
        }
    }
    report.unused_after = unused;
    let identity = store.identity();
    let code = Code::new(newest.scheme, newest.root.suppliers as usize)
        .map_err(|e| LocalError::Store(e.to_string()))?;
    let recipient: age::x25519::Recipient = newest.root.backup_recipient.parse().map_err(|_| {
        LocalError::Store(format!(
            "the backup key in {id}@{} is malformed",
            newest.root.snapshot
        ))
    })?;
    let sealer = bitdust_block::BlockSealer::new(identity.clone(), id, 0, code.clone(), recipient);
    let dedup = store.dedup(id);
    let mut steps = 0u32;
    let mut durable = || -> Result<(), LocalError> {
        steps += 1;
        if let Some(hook) = opts.after_step {
            hook();
        }
        match opts.stop_after_steps {
            Some(n) if steps >= n => Err(LocalError::Store(format!("stopped after {steps} steps"))),
            _ => Ok(()),
        }
    };
    let steps = chosen_data
        .chunks(REPACK_STEP)
        .map(|s| (PackKind::Data, s))
        .chain(chosen_meta.chunks(REPACK_STEP).map(|s| (PackKind::Meta, s)));
    for (kind, step) in steps {
        let emptied: PackSet = {
            let mut p = PackSet::default();
            step.iter().for_each(|&n| p.insert(n));
            p
        };
        // 1. The live chunks, copied into new packs, made durable.
        let mut out = MovedPacks {
            repo,
            id,
            sealer: &sealer,
            dedup: &dedup,
            sink: store.pack_sink(id, &code),
            kind,
            writer: bitdust_block::pack::PackWriter::new(kind),
            sealed: bitdust_block::SealedBlock::default(),
            now: opts.now,
            pack_size: opts.pack_size,
            written: Vec::new(),
            degraded: Vec::new(),
        };
        {
            // Fragments under another header than the index's (a stale
            // pack of the same number) are not taken for the pack's.
            let mut reader =
                PackReader::new(source.as_mut(), &newest, store.dedup(id), key.clone())?
                    .with_index(repo);
            for &old in step {
                let (list, data) = reader.open_pack(old)?;
                let txn = repo.read()?;
                for e in &list.entries {
                    // The copy the index points at, of a chunk in use.
                    if !repo.is_live(&txn, id, &e.id)?
                        || repo.chunk(&txn, id, &e.id)?.map(|l| l.pack) != Some(old)
                    {
                        continue;
                    }
                    let start = e.offset as usize;
                    let Some(stored) = data.get(start..start + e.stored_len as usize) else {
                        return Err(LocalError::Store(format!(
                            "chunk {} lies outside pack {old}; run check",
                            e.id
                        )));
                    };
                    out.push(e, stored)?;
                    report.chunks_moved += 1;
                    report.bytes_moved += u64::from(e.stored_len);
                }
            }
        }
        let (written, degraded) = out.finish()?;
        if !degraded.is_empty() {
            // The new packs would hold less redundancy than those they
            // replace; no root or index names them yet.
            return Err(LocalError::Store(format!(
                "positions {degraded:?} failed while repacking; nothing was changed, prune again when every position takes fragments"
            )));
        }
        durable()?;
        let mut added = PackSet::default();
        written.iter().for_each(|(n, _, _)| added.insert(*n));
        // Where each moved chunk is now.
        let moved: HashMap<bitdust_crypto::ChunkId, ChunkLoc> = written
            .iter()
            .flat_map(|(n, _, entries)| {
                entries.iter().map(|e| {
                    let loc = ChunkLoc {
                        pack: *n,
                        offset: e.offset,
                        stored_len: e.stored_len,
                        plain_len: e.plain_len,
                    };
                    (e.id, loc)
                })
            })
            .collect();
        // 2. Roots name the new packs too, and their metadata chunks where
        // they are now.
        let mut touched = Vec::new();
        for &n in &snapshots {
            let root = store.root(id, n)?;
            let packs = crate::snapshot::root_packs(&root)?;
            if packs.iter().any(|p| emptied.contains(p)) {
                let mut with = packs.clone();
                added.iter().for_each(|p| with.insert(p));
                let root = moved_meta(&root, &emptied, &moved, repo, &dedup, &mut with)?;
                store.rewrite_root(&root, &with)?;
                durable()?;
                touched.push(n);
            }
        }
        // 3. The index moves to them.
        repo.record_moved(id, &written)?;
        durable()?;
        // 4. Roots no longer name the emptied packs.
        for &n in &touched {
            let root = store.root(id, n)?;
            let mut without = PackSet::default();
            crate::snapshot::root_packs(&root)?
                .iter()
                .filter(|p| !emptied.contains(*p))
                .for_each(|p| without.insert(p));
            store.rewrite_root(&root, &without)?;
            durable()?;
        }
        report.packs_repacked += step.len() as u64;
        report.packs_written += written.len() as u64;
    }
    repo.live_clear(id)?;
    Ok((report, None))
}

/// A pack's record and chunks, as [`Repo::record_moved`] takes them.
type MovedPack = (
    u64,
    crate::repo::PackRecord,
    Vec<bitdust_block::pack::PackEntry>,
);

/// The new packs of one repack step: chunks pushed in, packs sealed and
/// stored as they fill.
struct MovedPacks<'a> {
    repo: &'a Repo,
    id: BackupId,
    sealer: &'a bitdust_block::BlockSealer,
    dedup: &'a DedupKeys,
    sink: Box<dyn FragmentSink + 'a>,
    kind: PackKind,
    writer: bitdust_block::pack::PackWriter,
    sealed: bitdust_block::SealedBlock,
    now: u64,
    pack_size: usize,
    written: Vec<MovedPack>,
    degraded: Vec<usize>,
}

impl MovedPacks<'_> {
    /// Adds chunk `e`, whose stored bytes are `stored`.
    fn push(
        &mut self,
        e: &bitdust_block::pack::PackEntry,
        stored: &[u8],
    ) -> Result<(), LocalError> {
        let w = &self.writer;
        if !w.is_empty() && (w.data_len() + stored.len() > self.pack_size || w.is_full()) {
            self.seal()?;
        }
        self.writer.push(e.id, stored, e.plain_len);
        Ok(())
    }

    /// Seals what is left, makes every pack durable: the packs written and
    /// the positions that failed.
    fn finish(mut self) -> Result<(Vec<MovedPack>, Vec<usize>), LocalError> {
        if !self.writer.is_empty() {
            self.seal()?;
        }
        for p in self.sink.sync().map_err(|e| LocalError::Store(e.0))? {
            if !self.degraded.contains(&p) {
                self.degraded.push(p);
            }
        }
        Ok((self.written, self.degraded))
    }

    /// Seals the open pack under a newly reserved number and stores it.
    fn seal(&mut self) -> Result<(), LocalError> {
        let number = self.repo.reserve_packs(self.id, 1)?;
        self.sealer
            .seal_pack(number, &self.writer, self.dedup, &mut self.sealed)
            .map_err(|e| LocalError::Store(format!("sealing a repacked pack failed: {e}")))?;
        let failed = self
            .sink
            .put_block(&mut self.sealed)
            .map_err(|e| LocalError::Store(e.0))?;
        let mut missing = 0u64;
        for p in failed {
            if p < 64 {
                missing |= 1 << p;
            }
            if !self.degraded.contains(&p) {
                self.degraded.push(p);
            }
        }
        let (body_len, header) = self
            .sealed
            .header()
            .map(|h| (h.header.cipher_len, h.commitment()))
            .ok_or_else(|| LocalError::Store("a repacked pack was not sealed".into()))?;
        self.written.push((
            number,
            crate::repo::PackRecord {
                kind: self.kind,
                state: PackState::Live,
                chunks: self.writer.entries().len() as u32,
                data_len: self.writer.data_len() as u64,
                body_len,
                time: self.now,
                pending: 0,
                missing,
                header: Some(header),
            },
            self.writer.entries().to_vec(),
        ));
        self.writer.clear();
        Ok(())
    }
}

impl From<Stats> for bitdust_proto::customer::v1::StatsReply {
    fn from(s: Stats) -> Self {
        bitdust_proto::customer::v1::StatsReply {
            backup_id: s.backup_id.to_string(),
            snapshots: s.snapshots,
            logical_bytes: s.logical_bytes,
            chunks: s.chunks,
            unique_bytes: s.unique_bytes,
            compressed_bytes: s.compressed_bytes,
            packs: s.packs,
            packed_bytes: s.packed_bytes,
            stored_bytes: s.stored_bytes,
            packs_pending_delete: s.packs_pending_delete,
        }
    }
}

impl From<CheckReport> for bitdust_proto::customer::v1::CheckReply {
    fn from(r: CheckReport) -> Self {
        bitdust_proto::customer::v1::CheckReply {
            backup_id: r.backup_id.to_string(),
            snapshots: r.snapshots,
            packs: r.packs.packs.len() as u64,
            unrecoverable_packs: r.packs.unrecoverable(),
            damaged_packs: r
                .packs
                .packs
                .iter()
                .filter(|p| !p.damaged_positions.is_empty())
                .count() as u64,
            min_margin: r.packs.min_margin().map(|m| m as u64),
            rejected_fragments: r.packs.rejected_fragments,
            fragments_listed: r.fragments_listed,
            metadata_checked: r.metadata_checked,
            entries: r.entries,
            packs_read: r.packs_read,
            chunks_verified: r.chunks_verified,
            errors: r.errors,
        }
    }
}
