//! The customer-side state of deduplicated backups (docs/snapshots.md,
//! "The index and the files cache"), in one LMDB environment the caller
//! opens (the agent and `bitdustctl local` each through their
//! `StateLock`). Nothing is held whole in memory.
//!
//! | database | key | value |
//! |---|---|---|
//! | `chunks` | backup, chunk id | pack (u64), offset, stored and plain length (u32 each) |
//! | `packs` | backup, pack (big-endian) | kind, state, chunks, data and body length, time, positions still to delete from |
//! | `counters` | backup | the next pack number |
//! | `files` | backup, BLAKE3 of the path | the path, size, mtime, ctime, inode, device, last snapshot seen, chunk ids |
//!
//! Record, then act: pack numbers are reserved (durably) before a pack
//! leaves; its chunks enter `chunks` only once it is stored.

use std::ops::Bound;

use heed::types::Bytes;
use heed::{Database, Env, RoTxn, RwTxn};

use bitdust_block::BackupId;
use bitdust_block::pack::{PackEntry, PackKind};
use bitdust_crypto::ChunkId;
use bitdust_ecc::Scheme;

/// The repository state failed (the database, or a record that does not
/// decode: the state directory is damaged).
#[derive(Debug, thiserror::Error)]
#[error("the backup index failed: {0}")]
pub struct RepoError(pub String);

impl From<heed::Error> for RepoError {
    fn from(e: heed::Error) -> Self {
        RepoError(e.to_string())
    }
}

/// Where a chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    /// The pack.
    pub pack: u64,
    /// Where its stored bytes begin in the pack's chunk data.
    pub offset: u32,
    /// Stored (compressed) length.
    pub stored_len: u32,
    /// Plain length.
    pub plain_len: u32,
}

impl ChunkLoc {
    fn encode(&self) -> [u8; 20] {
        let mut v = [0u8; 20];
        v[..8].copy_from_slice(&self.pack.to_le_bytes());
        v[8..12].copy_from_slice(&self.offset.to_le_bytes());
        v[12..16].copy_from_slice(&self.stored_len.to_le_bytes());
        v[16..].copy_from_slice(&self.plain_len.to_le_bytes());
        v
    }

    fn decode(v: &[u8]) -> Result<ChunkLoc, RepoError> {
        if v.len() != 20 {
            return Err(RepoError(format!("a chunk record of {} bytes", v.len())));
        }
        let u32_at = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
        let mut pack = [0u8; 8];
        pack.copy_from_slice(&v[..8]);
        Ok(ChunkLoc {
            pack: u64::from_le_bytes(pack),
            offset: u32_at(8),
            stored_len: u32_at(12),
            plain_len: u32_at(16),
        })
    }
}

/// Where a pack is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackState {
    /// Stored and indexed.
    Live,
    /// Referenced by no kept snapshot: its chunks left the index, its
    /// objects are being deleted.
    Condemned,
}

/// What the state knows of one pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackRecord {
    /// Data or metadata.
    pub kind: PackKind,
    /// Live or condemned.
    pub state: PackState,
    /// Chunks it holds.
    pub chunks: u32,
    /// Plain bytes of its chunk data.
    pub data_len: u64,
    /// Bytes of its body (what the fragments carry, before the code).
    pub body_len: u64,
    /// Unix seconds it was stored.
    pub time: u64,
    /// Positions (bits) its objects are still to be deleted from.
    pub pending: u64,
    /// Positions (bits) that did not take its fragments when it was
    /// stored: the rebuilder's work.
    pub missing: u64,
    /// The commitment to its signed header (BLAKE3 of the header bytes),
    /// when known: a reader rejects fragments under any other header, such
    /// as a stale pack of the same number that a supplier kept.
    pub header: Option<[u8; 32]>,
}

impl PackRecord {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![0u8; 46];
        v[0] = match self.kind {
            PackKind::Data => 0,
            PackKind::Meta => 1,
        };
        v[1] = match self.state {
            PackState::Live => 0,
            PackState::Condemned => 1,
        };
        v[2..6].copy_from_slice(&self.chunks.to_le_bytes());
        v[6..14].copy_from_slice(&self.data_len.to_le_bytes());
        v[14..22].copy_from_slice(&self.body_len.to_le_bytes());
        v[22..30].copy_from_slice(&self.time.to_le_bytes());
        v[30..38].copy_from_slice(&self.pending.to_le_bytes());
        v[38..46].copy_from_slice(&self.missing.to_le_bytes());
        if let Some(h) = &self.header {
            v.extend_from_slice(h);
        }
        v
    }

    fn decode(v: &[u8]) -> Result<PackRecord, RepoError> {
        let bad = || RepoError(format!("a pack record of {} bytes", v.len()));
        // 78 bytes with the header's commitment, 46 without.
        let header = match v.len() {
            46 => None,
            78 => {
                let mut h = [0u8; 32];
                h.copy_from_slice(&v[46..]);
                Some(h)
            }
            _ => return Err(bad()),
        };
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[i..i + 8]);
            u64::from_le_bytes(b)
        };
        Ok(PackRecord {
            kind: match v[0] {
                0 => PackKind::Data,
                1 => PackKind::Meta,
                _ => return Err(bad()),
            },
            state: match v[1] {
                0 => PackState::Live,
                1 => PackState::Condemned,
                _ => return Err(bad()),
            },
            chunks: u32::from_le_bytes([v[2], v[3], v[4], v[5]]),
            data_len: u64_at(6),
            body_len: u64_at(14),
            time: u64_at(22),
            pending: u64_at(30),
            missing: u64_at(38),
            header,
        })
    }
}

/// A time with nanoseconds, as `stat` gives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    /// Seconds since the epoch.
    pub secs: i64,
    /// Nanoseconds.
    pub nanos: u32,
}

/// What the files cache knows of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedFile {
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Time,
    /// Status change time.
    pub ctime: Time,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
    /// The last snapshot that saw it.
    pub seen: u64,
    /// Its chunks, in order.
    pub chunks: Vec<ChunkId>,
}

/// How many snapshots a files-cache record of an unchanged file may go
/// without being written again: an unchanged backup rewrites about one
/// record in this many (each in its turn, by inode), not all of them, and
/// a record is forgotten once this many snapshots have not seen it.
pub const SEEN_REFRESH: u64 = 8;

impl CachedFile {
    /// Whether snapshot `snapshot`, which saw this file unchanged, must
    /// write its record again: when it is its turn (by inode, one record in
    /// [`SEEN_REFRESH`] each snapshot), or when its stamp is that old
    /// already. Either way a file every snapshot sees keeps a stamp less
    /// than [`SEEN_REFRESH`] snapshots old, which
    /// [`Repo::sweep_files`] relies on.
    pub fn stamp_due(&self, snapshot: u64) -> bool {
        snapshot.wrapping_add(self.ino).is_multiple_of(SEEN_REFRESH)
            || snapshot.saturating_sub(self.seen) >= SEEN_REFRESH
    }

    /// Whether `other` (a fresh `lstat`) says the file is unchanged.
    pub fn unchanged(&self, other: &CachedFile) -> bool {
        self.size == other.size
            && self.mtime == other.mtime
            && self.ctime == other.ctime
            && self.ino == other.ino
            && self.dev == other.dev
    }

    /// Marks the record as one the next snapshot must not trust (the file
    /// may change unseen): its ctime nanoseconds become a value no `lstat`
    /// gives, so [`CachedFile::unchanged`] is false, and the record still
    /// tells a changed file from a new one.
    pub fn not_vouched(&mut self) {
        self.ctime.nanos = u32::MAX;
    }

    fn encode(&self, path: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + path.len() + 68 + 32 * self.chunks.len());
        v.extend_from_slice(&(path.len() as u32).to_le_bytes());
        v.extend_from_slice(path);
        v.extend_from_slice(&self.size.to_le_bytes());
        v.extend_from_slice(&self.mtime.secs.to_le_bytes());
        v.extend_from_slice(&self.mtime.nanos.to_le_bytes());
        v.extend_from_slice(&self.ctime.secs.to_le_bytes());
        v.extend_from_slice(&self.ctime.nanos.to_le_bytes());
        v.extend_from_slice(&self.ino.to_le_bytes());
        v.extend_from_slice(&self.dev.to_le_bytes());
        v.extend_from_slice(&self.seen.to_le_bytes());
        for c in &self.chunks {
            v.extend_from_slice(&c.0);
        }
        v
    }

    /// Decodes a record, `None` when it is another path's (a hash collision)
    fn decode(path: &[u8], v: &[u8]) -> Result<Option<CachedFile>, RepoError> {
        let bad = || RepoError("a damaged files-cache record".into());
        let mut r = v;
        let mut take = |n: usize| -> Result<&[u8], RepoError> {
            if r.len() < n {
                return Err(bad());
            }
            let (a, b) = r.split_at(n);
            r = b;
            Ok(a)
        };
        let u64_of = |b: &[u8]| {
            let mut x = [0u8; 8];
            x.copy_from_slice(b);
            u64::from_le_bytes(x)
        };
        let len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| bad())?) as usize;
        if take(len)? != path {
            return Ok(None);
        }
        let size = u64_of(take(8)?);
        let mtime = Time {
            secs: u64_of(take(8)?) as i64,
            nanos: u32::from_le_bytes(take(4)?.try_into().map_err(|_| bad())?),
        };
        let ctime = Time {
            secs: u64_of(take(8)?) as i64,
            nanos: u32::from_le_bytes(take(4)?.try_into().map_err(|_| bad())?),
        };
        let ino = u64_of(take(8)?);
        let dev = u64_of(take(8)?);
        let seen = u64_of(take(8)?);
        let chunks = chunk_ids(r).ok_or_else(bad)?;
        Ok(Some(CachedFile {
            size,
            mtime,
            ctime,
            ino,
            dev,
            seen,
            chunks,
        }))
    }
}

/// The pack numbers a snapshot references: one bit each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackSet(Vec<u64>);

impl PackSet {
    /// Adds `pack`.
    pub fn insert(&mut self, pack: u64) {
        let (w, b) = ((pack / 64) as usize, pack % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << b;
    }

    /// The smallest pack in the set above `pack`.
    pub fn next_after(&self, pack: u64) -> Option<u64> {
        let start = pack.checked_add(1)?;
        let mut w = (start / 64) as usize;
        let mut bits = self.0.get(w)? & (u64::MAX << (start % 64));
        loop {
            if bits != 0 {
                return Some(w as u64 * 64 + u64::from(bits.trailing_zeros()));
            }
            w += 1;
            bits = *self.0.get(w)?;
        }
    }

    /// Whether `pack` is in.
    pub fn contains(&self, pack: u64) -> bool {
        self.0
            .get((pack / 64) as usize)
            .is_some_and(|w| w & (1 << (pack % 64)) != 0)
    }

    /// How many packs.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// As sorted (first, count) pairs, flattened.
    pub fn to_ranges(&self) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for (w, bits) in self.0.iter().enumerate() {
            for b in 0..64 {
                if bits & (1 << b) == 0 {
                    continue;
                }
                let p = w as u64 * 64 + b;
                match out.len() {
                    n if n >= 2 && out[n - 2] + out[n - 1] == p => out[n - 1] += 1,
                    _ => out.extend_from_slice(&[p, 1]),
                }
            }
        }
        out
    }

    /// From sorted (first, count) pairs, refusing more than `max` packs.
    pub fn from_ranges(ranges: &[u64], max: u64) -> Option<PackSet> {
        let mut s = PackSet::default();
        for r in ranges.chunks_exact(2) {
            let end = r[0].checked_add(r[1])?;
            if end > max {
                return None;
            }
            for p in r[0]..end {
                s.insert(p);
            }
        }
        Some(s)
    }

    /// The packs in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().enumerate().flat_map(|(w, bits)| {
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w as u64 * 64 + b)
        })
    }
}

/// The repository state.
pub struct Repo {
    env: Env,
    chunks: Database<Bytes, Bytes>,
    packs: Database<Bytes, Bytes>,
    counters: Database<Bytes, Bytes>,
    files: Database<Bytes, Bytes>,
    /// Scratch for a repacking prune: the chunks kept snapshots use.
    live: Database<Bytes, Bytes>,
    /// Scratch for a snapshot run: the first name of each inode with more
    /// than one link, by device and inode (docs/metadata.md).
    links: Database<Bytes, Bytes>,
    /// Directory records: each directory's children as the last snapshot
    /// stored them (docs/snapshots.md, "Directory records").
    dirs: Database<Bytes, Bytes>,
}

/// The named databases a [`Repo`] needs room for in its environment.
pub const REPO_DATABASES: u32 = 7;

/// The first name a snapshot run gave an inode with several links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstLink {
    /// Its path (snapshot form: absolute without the leading `/`).
    pub path: Vec<u8>,
    /// Its size.
    pub size: u64,
    /// Its chunks.
    pub chunks: Vec<ChunkId>,
}

impl FirstLink {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(12 + self.path.len() + 32 * self.chunks.len());
        v.extend_from_slice(&(self.path.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.path);
        v.extend_from_slice(&self.size.to_le_bytes());
        for c in &self.chunks {
            v.extend_from_slice(&c.0);
        }
        v
    }

    fn decode(v: &[u8]) -> Result<FirstLink, RepoError> {
        let bad = || RepoError("a hard-link record is malformed".into());
        let len = u32::from_le_bytes(v.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        let path = v.get(4..4 + len as usize).ok_or_else(bad)?.to_vec();
        let rest = &v[4 + len as usize..];
        let size = u64::from_le_bytes(
            rest.get(..8)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        let chunks = chunk_ids(&rest[8..]).ok_or_else(bad)?;
        Ok(FirstLink { path, size, chunks })
    }
}

/// The chunk ids packed end to end in `v`; `None` when its length is not
/// a whole number of ids.
fn chunk_ids(v: &[u8]) -> Option<Vec<ChunkId>> {
    if !v.len().is_multiple_of(32) {
        return None;
    }
    Some(
        v.chunks_exact(32)
            .map(|c| {
                let mut id = [0u8; 32];
                id.copy_from_slice(c);
                ChunkId(id)
            })
            .collect(),
    )
}

fn link_key(backup: BackupId, dev: u64, ino: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&backup.0);
    k[16..24].copy_from_slice(&dev.to_be_bytes());
    k[24..].copy_from_slice(&ino.to_be_bytes());
    k
}

fn chunk_key(backup: BackupId, id: &ChunkId) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(&backup.0);
    k[16..].copy_from_slice(&id.0);
    k
}

fn pack_key(backup: BackupId, pack: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&backup.0);
    k[16..].copy_from_slice(&pack.to_be_bytes());
    k
}

fn code_key(backup: BackupId) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&backup.0);
    k[16..].copy_from_slice(b"code");
    k
}

fn epoch_key(backup: BackupId) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[..16].copy_from_slice(&backup.0);
    k[16..].copy_from_slice(b"epoch");
    k
}

fn dir_key(backup: BackupId, path: &[u8], segment: u32) -> [u8; 48] {
    let mut h = blake3::Hasher::new();
    h.update(path);
    // No path holds a NUL byte.
    h.update(&[0]);
    h.update(&segment.to_be_bytes());
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(&backup.0);
    k[16..].copy_from_slice(h.finalize().as_bytes());
    k
}

fn file_key(backup: BackupId, path: &[u8]) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(&backup.0);
    k[16..].copy_from_slice(blake3::hash(path).as_bytes());
    k
}

impl Repo {
    /// The databases in `env` (created when missing). `env` needs room for
    /// [`REPO_DATABASES`] named databases.
    pub fn open(env: Env) -> Result<Repo, RepoError> {
        let mut w = env.write_txn()?;
        let chunks = env.create_database(&mut w, Some("chunks"))?;
        let packs = env.create_database(&mut w, Some("packs"))?;
        let counters = env.create_database(&mut w, Some("counters"))?;
        let files = env.create_database(&mut w, Some("files"))?;
        let live = env.create_database(&mut w, Some("live"))?;
        let links = env.create_database(&mut w, Some("links"))?;
        let dirs = env.create_database(&mut w, Some("dirs"))?;
        w.commit()?;
        Ok(Repo {
            env,
            chunks,
            packs,
            counters,
            files,
            live,
            links,
            dirs,
        })
    }

    /// A read transaction, for many lookups in a row.
    pub fn read(&self) -> Result<RoTxn<'_, heed::WithTls>, RepoError> {
        Ok(self.env.read_txn()?)
    }

    /// Where chunk `id` of `backup` is, if it is stored in a live pack.
    pub fn chunk(
        &self,
        txn: &RoTxn<'_>,
        backup: BackupId,
        id: &ChunkId,
    ) -> Result<Option<ChunkLoc>, RepoError> {
        self.chunks
            .get(txn, &chunk_key(backup, id))?
            .map(ChunkLoc::decode)
            .transpose()
    }

    /// Reserves `count` pack numbers of `backup`, durably: returns the
    /// first. They are never handed out again, whatever happens to them.
    pub fn reserve_packs(&self, backup: BackupId, count: u64) -> Result<u64, RepoError> {
        let mut w = self.env.write_txn()?;
        let next = self.next_pack_in(&w, backup)?;
        let after = next
            .checked_add(count)
            .ok_or_else(|| RepoError("pack numbers ran out".into()))?;
        self.counters.put(&mut w, &backup.0, &after.to_le_bytes())?;
        w.commit()?;
        Ok(next)
    }

    /// The next pack number of `backup` that was never reserved.
    pub fn next_pack(&self, backup: BackupId) -> Result<u64, RepoError> {
        let r = self.env.read_txn()?;
        self.next_pack_in(&r, backup)
    }

    fn next_pack_in(&self, txn: &RoTxn<'_>, backup: BackupId) -> Result<u64, RepoError> {
        match self.counters.get(txn, &backup.0)? {
            None => Ok(0),
            Some(v) => Ok(u64::from_le_bytes(
                v.try_into()
                    .map_err(|_| RepoError("a damaged pack counter".into()))?,
            )),
        }
    }

    /// Raises the pack counter of `backup` to at least `next` (recovery:
    /// the catalog copy carries it).
    pub fn raise_next_pack(&self, backup: BackupId, next: u64) -> Result<(), RepoError> {
        let mut w = self.env.write_txn()?;
        if self.next_pack_in(&w, backup)? < next {
            self.counters.put(&mut w, &backup.0, &next.to_le_bytes())?;
        }
        w.commit()?;
        Ok(())
    }

    /// The erasure code every pack of `backup` is in (scheme and
    /// suppliers), as first recorded by [`Repo::record_code`].
    pub fn code(&self, backup: BackupId) -> Result<Option<(Scheme, usize)>, RepoError> {
        let r = self.env.read_txn()?;
        self.counters
            .get(&r, &code_key(backup))?
            .map(|v| {
                let bad = || RepoError("a damaged code record".into());
                let (&s, n) = v.split_first().ok_or_else(bad)?;
                let n = u32::from_le_bytes(n.try_into().map_err(|_| bad())?) as usize;
                let scheme = match s {
                    0 => Scheme::Xor,
                    1 => Scheme::ReedSolomon,
                    _ => return Err(bad()),
                };
                Ok((scheme, n))
            })
            .transpose()
    }

    /// Records that the packs of `backup` are in `scheme` over `suppliers`;
    /// an error when another code is already recorded, since one backup's
    /// packs are all in one code (a snapshot names one code for every pack
    /// it references).
    pub fn record_code(
        &self,
        backup: BackupId,
        scheme: Scheme,
        suppliers: usize,
    ) -> Result<(), RepoError> {
        if let Some((s, n)) = self.code(backup)? {
            if (s, n) != (scheme, suppliers) {
                return Err(RepoError(format!(
                    "backup {backup} is stored {s} over {n} positions, not {scheme} over {suppliers}; keep its code (--scheme {s} --suppliers {n}) or back up into a new place"
                )));
            }
            return Ok(());
        }
        let mut v = vec![match scheme {
            Scheme::Xor => 0u8,
            Scheme::ReedSolomon => 1,
        }];
        v.extend_from_slice(&(suppliers as u32).to_le_bytes());
        let mut w = self.env.write_txn()?;
        self.counters.put(&mut w, &code_key(backup), &v)?;
        w.commit()?;
        Ok(())
    }

    /// Records pack `pack` of `backup` as stored, with its chunks, in one
    /// transaction. A chunk already indexed elsewhere keeps its first pack.
    pub fn record_pack(
        &self,
        backup: BackupId,
        pack: u64,
        record: &PackRecord,
        entries: &[PackEntry],
    ) -> Result<(), RepoError> {
        let mut w = self.env.write_txn()?;
        self.packs
            .put(&mut w, &pack_key(backup, pack), &record.encode())?;
        for e in entries {
            let key = chunk_key(backup, &e.id);
            if self.chunks.get(&w, &key)?.is_none() {
                let loc = ChunkLoc {
                    pack,
                    offset: e.offset,
                    stored_len: e.stored_len,
                    plain_len: e.plain_len,
                };
                self.chunks.put(&mut w, &key, &loc.encode())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// What is known of pack `pack` of `backup`.
    pub fn pack(&self, backup: BackupId, pack: u64) -> Result<Option<PackRecord>, RepoError> {
        let r = self.env.read_txn()?;
        self.packs
            .get(&r, &pack_key(backup, pack))?
            .map(PackRecord::decode)
            .transpose()
    }

    /// Every pack of `backup` with its record, in number order, passed to
    /// `each` one at a time (from one read transaction).
    pub fn for_each_pack(
        &self,
        backup: BackupId,
        mut each: impl FnMut(u64, PackRecord) -> Result<(), RepoError>,
    ) -> Result<(), RepoError> {
        let r = self.env.read_txn()?;
        for item in self.packs.prefix_iter(&r, &backup.0)? {
            let (k, v) = item?;
            let mut n = [0u8; 8];
            n.copy_from_slice(&k[16..24]);
            each(u64::from_be_bytes(n), PackRecord::decode(v)?)?;
        }
        Ok(())
    }

    /// The chunks of `backup` in the index: how many, their plain bytes and
    /// their stored (compressed) bytes; streamed from one read transaction.
    pub fn chunk_totals(&self, backup: BackupId) -> Result<(u64, u64, u64), RepoError> {
        let r = self.env.read_txn()?;
        let mut t = (0, 0, 0);
        for item in self.chunks.prefix_iter(&r, &backup.0)? {
            let (_, v) = item?;
            let loc = ChunkLoc::decode(v)?;
            t.0 += 1;
            t.1 += u64::from(loc.plain_len);
            t.2 += u64::from(loc.stored_len);
        }
        Ok(t)
    }

    /// Empties the live-chunk scratch of `backup`.
    pub fn live_clear(&self, backup: BackupId) -> Result<(), RepoError> {
        self.delete_where(self.live, backup, |_| Ok(true))?;
        Ok(())
    }

    /// Marks `ids` of `backup` as used by a kept snapshot (one transaction).
    pub fn live_mark(&self, backup: BackupId, ids: &[ChunkId]) -> Result<(), RepoError> {
        let mut w = self.env.write_txn()?;
        for id in ids {
            self.live.put(&mut w, &chunk_key(backup, id), &[])?;
        }
        w.commit()?;
        Ok(())
    }

    /// Whether a kept snapshot uses chunk `id` of `backup`.
    pub fn is_live(
        &self,
        txn: &RoTxn<'_>,
        backup: BackupId,
        id: &ChunkId,
    ) -> Result<bool, RepoError> {
        Ok(self.live.get(txn, &chunk_key(backup, id))?.is_some())
    }

    /// Every marked chunk of `backup` with where the index has it, passed
    /// to `each` one at a time.
    pub fn for_each_live(
        &self,
        backup: BackupId,
        mut each: impl FnMut(&ChunkId, Option<ChunkLoc>) -> Result<(), RepoError>,
    ) -> Result<(), RepoError> {
        let r = self.env.read_txn()?;
        for item in self.live.prefix_iter(&r, &backup.0)? {
            let (k, _) = item?;
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[16..48]);
            let id = ChunkId(id);
            let loc = self.chunk(&r, backup, &id)?;
            each(&id, loc)?;
        }
        Ok(())
    }

    /// Records the packs `packs` of `backup` and points the index at them
    /// for every chunk they hold (a repack moved them there), in one
    /// transaction.
    pub fn record_moved(
        &self,
        backup: BackupId,
        packs: &[(u64, PackRecord, Vec<PackEntry>)],
    ) -> Result<(), RepoError> {
        let mut w = self.env.write_txn()?;
        self.bump_epoch(&mut w, backup)?;
        for (pack, record, entries) in packs {
            self.packs
                .put(&mut w, &pack_key(backup, *pack), &record.encode())?;
            for e in entries {
                let loc = ChunkLoc {
                    pack: *pack,
                    offset: e.offset,
                    stored_len: e.stored_len,
                    plain_len: e.plain_len,
                };
                self.chunks
                    .put(&mut w, &chunk_key(backup, &e.id), &loc.encode())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// The files cache's record of `path` in `backup`. A damaged record
    /// is no record: the cache only saves reading a file again, and the
    /// snapshot that reads it writes the record anew.
    pub fn file(
        &self,
        txn: &RoTxn<'_>,
        backup: BackupId,
        path: &[u8],
    ) -> Result<Option<CachedFile>, RepoError> {
        match self.files.get(txn, &file_key(backup, path))? {
            None => Ok(None),
            Some(v) => Ok(CachedFile::decode(path, v).unwrap_or(None)),
        }
    }

    /// A write transaction for [`Repo::put_file`] in batches.
    pub fn write(&self) -> Result<RwTxn<'_>, RepoError> {
        Ok(self.env.write_txn()?)
    }

    /// Records `file` at `path` in the files cache of `backup`.
    pub fn put_file(
        &self,
        txn: &mut RwTxn<'_>,
        backup: BackupId,
        path: &[u8],
        file: &CachedFile,
    ) -> Result<(), RepoError> {
        self.files
            .put(txn, &file_key(backup, path), &file.encode(path))?;
        Ok(())
    }

    /// Empties the hard-link scratch of `backup` (at the start and end of a
    /// snapshot run).
    pub fn links_clear(&self, backup: BackupId) -> Result<(), RepoError> {
        self.delete_where(self.links, backup, |_| Ok(true))?;
        Ok(())
    }

    /// The first name this run gave inode `ino` of device `dev`.
    pub fn first_link(
        &self,
        txn: &RoTxn<'_>,
        backup: BackupId,
        dev: u64,
        ino: u64,
    ) -> Result<Option<FirstLink>, RepoError> {
        self.links
            .get(txn, &link_key(backup, dev, ino))?
            .map(FirstLink::decode)
            .transpose()
    }

    /// Records `first` as the first name of inode `ino` of device `dev`.
    pub fn put_first_link(
        &self,
        txn: &mut RwTxn<'_>,
        backup: BackupId,
        dev: u64,
        ino: u64,
        first: &FirstLink,
    ) -> Result<(), RepoError> {
        self.links
            .put(txn, &link_key(backup, dev, ino), &first.encode())?;
        Ok(())
    }

    /// The index's epoch for `backup`: it moves whenever a chunk leaves the
    /// index or is moved to another pack (prune, repack), never when
    /// chunks are added. A directory record written in the same epoch, all
    /// of whose packs are live, names only chunks the index holds in those
    /// packs.
    pub fn epoch(&self, backup: BackupId) -> Result<u64, RepoError> {
        let r = self.env.read_txn()?;
        Ok(self
            .counters
            .get(&r, &epoch_key(backup))?
            .and_then(|v| v.try_into().ok())
            .map_or(0, u64::from_le_bytes))
    }

    fn bump_epoch(&self, w: &mut RwTxn<'_>, backup: BackupId) -> Result<(), RepoError> {
        let key = epoch_key(backup);
        let now = self
            .counters
            .get(w, &key)?
            .and_then(|v| v.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        self.counters
            .put(w, &key, &now.wrapping_add(1).to_le_bytes())?;
        Ok(())
    }

    /// Whether pack `pack` of `backup` is recorded and live (stored,
    /// durable, indexed, not condemned).
    pub fn pack_live(&self, backup: BackupId, pack: u64) -> Result<bool, RepoError> {
        Ok(self
            .pack(backup, pack)?
            .is_some_and(|r| r.state == PackState::Live))
    }

    /// Segment `segment` of the directory record of `path` in `backup`, as
    /// stored.
    pub fn dir_record(
        &self,
        txn: &RoTxn<'_>,
        backup: BackupId,
        path: &[u8],
        segment: u32,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        Ok(self
            .dirs
            .get(txn, &dir_key(backup, path, segment))?
            .map(<[u8]>::to_vec))
    }

    /// Stores (`Some`) or drops (`None`) segment `segment` of the directory
    /// record of `path`.
    pub fn put_dir_record(
        &self,
        txn: &mut RwTxn<'_>,
        backup: BackupId,
        path: &[u8],
        segment: u32,
        record: Option<&[u8]>,
    ) -> Result<(), RepoError> {
        let key = dir_key(backup, path, segment);
        match record {
            Some(v) => self.dirs.put(txn, &key, v)?,
            None => {
                self.dirs.delete(txn, &key)?;
            }
        }
        Ok(())
    }

    /// Drops the directory records of `backup` last written or seen before
    /// snapshot `oldest` (the first 8 bytes of a record are that
    /// snapshot). Returns how many.
    pub fn sweep_dirs(&self, backup: BackupId, oldest: u64) -> Result<u64, RepoError> {
        self.delete_where(self.dirs, backup, |v| {
            let seen = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes);
            Ok(seen < oldest)
        })
    }

    /// Drops the files-cache records of `backup` last seen before snapshot
    /// `oldest` (entries the last snapshots did not see), a batch of
    /// records per transaction. Returns how many. A snapshot passes its
    /// own number less [`SEEN_REFRESH`] - 1: the stamps of the files it saw
    /// are no older (see [`CachedFile::stamp_due`]). Damaged records go too.
    pub fn sweep_files(&self, backup: BackupId, oldest: u64) -> Result<u64, RepoError> {
        self.delete_where(self.files, backup, |v| {
            Ok(seen_of(v).map_or(true, |seen| seen < oldest))
        })
    }

    /// Deletes the records of `backup` in `db` (keys: the backup, then 32
    /// bytes) whose value `doomed` says, a batch per write transaction
    /// (reads and writes never share one). Returns how many.
    fn delete_where(
        &self,
        db: Database<Bytes, Bytes>,
        backup: BackupId,
        mut doomed: impl FnMut(&[u8]) -> Result<bool, RepoError>,
    ) -> Result<u64, RepoError> {
        // Small in unit tests, so they cross batch boundaries.
        const BATCH: usize = if cfg!(test) { 100 } else { 4096 };
        let mut upper = backup.0.to_vec();
        upper.extend_from_slice(&[0xff; 32]);
        let mut after: Option<Vec<u8>> = None;
        let mut dropped = 0;
        loop {
            let mut gone = Vec::new();
            let mut last = None;
            {
                let r = self.env.read_txn()?;
                let lower = match &after {
                    Some(k) => Bound::Excluded(k.as_slice()),
                    None => Bound::Included(&backup.0[..]),
                };
                for item in db.range(&r, &(lower, Bound::Included(upper.as_slice())))? {
                    let (k, v) = item?;
                    last = Some(k.to_vec());
                    if doomed(v)? {
                        gone.push(k.to_vec());
                        if gone.len() == BATCH {
                            break;
                        }
                    }
                }
            }
            let full = gone.len() == BATCH;
            if !gone.is_empty() {
                let mut w = self.env.write_txn()?;
                for k in &gone {
                    db.delete(&mut w, k)?;
                }
                w.commit()?;
                dropped += gone.len() as u64;
            }
            match last {
                Some(k) if full => after = Some(k),
                _ => return Ok(dropped),
            }
        }
    }

    /// Condemns every live pack of `backup` that `kept` does not hold and
    /// that was stored before `before` (unix seconds): its chunks leave the
    /// index, then it is marked to be deleted at every position
    /// (`positions` bits), in batches of transactions. Returns how many
    /// packs and chunks.
    ///
    /// The chunks go first: a crash between the two steps leaves live packs
    /// whose chunks no backup can find (so none references them; the next
    /// prune condemns them), never a condemned pack whose chunks a backup
    /// could still reuse.
    pub fn condemn(
        &self,
        backup: BackupId,
        kept: &PackSet,
        before: u64,
        positions: u64,
    ) -> Result<(u64, u64), RepoError> {
        let mut doomed = PackSet::default();
        self.for_each_pack(backup, |n, rec| {
            if rec.state == PackState::Condemned || (!kept.contains(n) && rec.time < before) {
                doomed.insert(n);
            }
            Ok(())
        })?;
        if !doomed.is_empty() {
            // Before any chunk leaves the index: directory records written
            // before are no longer trusted without looking their chunks up.
            let mut w = self.env.write_txn()?;
            self.bump_epoch(&mut w, backup)?;
            w.commit()?;
        }
        let chunks = self.drop_chunks_of(backup, &doomed)?;
        let mut packs = 0;
        let batch: Vec<u64> = doomed.iter().collect();
        for part in batch.chunks(1024) {
            let mut w = self.env.write_txn()?;
            for &n in part {
                let key = pack_key(backup, n);
                let Some(v) = self.packs.get(&w, &key)? else {
                    continue;
                };
                let mut rec = PackRecord::decode(v)?;
                if rec.state == PackState::Live {
                    rec.state = PackState::Condemned;
                    rec.pending = positions;
                    self.packs.put(&mut w, &key, &rec.encode())?;
                    packs += 1;
                }
            }
            w.commit()?;
        }
        Ok((packs, chunks))
    }

    /// Removes from the index every chunk of `backup` stored in a pack of
    /// `packs`. Returns how many.
    fn drop_chunks_of(&self, backup: BackupId, packs: &PackSet) -> Result<u64, RepoError> {
        self.delete_where(self.chunks, backup, |v| {
            Ok(packs.contains(ChunkLoc::decode(v)?.pack))
        })
    }

    /// Records that the fragments of pack `pack` of `backup` at the
    /// positions `repaired` (bits) were rebuilt.
    pub fn repaired(&self, backup: BackupId, pack: u64, repaired: u64) -> Result<(), RepoError> {
        let mut w = self.env.write_txn()?;
        let key = pack_key(backup, pack);
        if let Some(v) = self.packs.get(&w, &key)? {
            let mut rec = PackRecord::decode(v)?;
            rec.missing &= !repaired;
            self.packs.put(&mut w, &key, &rec.encode())?;
        }
        w.commit()?;
        Ok(())
    }

    /// Records that pack `pack` of `backup` is deleted at the positions
    /// `done` (bits); a pack deleted everywhere is forgotten.
    pub fn settle(&self, backup: BackupId, pack: u64, done: u64) -> Result<(), RepoError> {
        let mut w = self.env.write_txn()?;
        let key = pack_key(backup, pack);
        if let Some(v) = self.packs.get(&w, &key)? {
            let mut rec = PackRecord::decode(v)?;
            rec.pending &= !done;
            if rec.pending == 0 {
                self.packs.delete(&mut w, &key)?;
            } else {
                self.packs.put(&mut w, &key, &rec.encode())?;
            }
        }
        w.commit()?;
        Ok(())
    }
}

/// The snapshot that last saw a files-cache record (`seen`, after the path
/// and the fixed fields).
fn seen_of(v: &[u8]) -> Result<u64, RepoError> {
    let bad = || RepoError("a damaged files-cache record".into());
    let path_len =
        u32::from_le_bytes(v.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(bad)?) as usize;
    let at = 4 + path_len + 8 + 12 + 12 + 8 + 8;
    v.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(dir: &std::path::Path) -> Repo {
        let lock = bitdust_daemon::state::StateLock::take(dir, "test").unwrap();
        let r = Repo::open(lock.open_env("repo", 64 << 20, REPO_DATABASES).unwrap()).unwrap();
        // The environment stays open; the lock may go (one test, one process).
        drop(lock);
        r
    }

    fn id(b: u8) -> ChunkId {
        ChunkId([b; 32])
    }

    #[test]
    fn the_next_pack_after_any_number_is_found_across_words() {
        let mut s = PackSet::default();
        for p in [0, 1, 63, 64, 200, 1000] {
            s.insert(p);
        }
        let walk: Vec<Option<u64>> = [0, 1, 2, 63, 64, 65, 199, 200, 999, 1000, 5000, u64::MAX]
            .iter()
            .map(|&n| s.next_after(n))
            .collect();
        assert_eq!(
            walk,
            [
                Some(1),
                Some(63),
                Some(63),
                Some(64),
                Some(200),
                Some(200),
                Some(200),
                Some(1000),
                Some(1000),
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn pack_numbers_are_never_handed_out_twice_even_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let b = BackupId([1; 16]);
        {
            let r = repo(dir.path());
            assert_eq!(r.reserve_packs(b, 3).unwrap(), 0);
            assert_eq!(r.reserve_packs(b, 1).unwrap(), 3);
            assert_eq!(r.reserve_packs(BackupId([2; 16]), 1).unwrap(), 0);
        }
        let r = repo(dir.path());
        assert_eq!(r.next_pack(b).unwrap(), 4);
        r.raise_next_pack(b, 2).unwrap();
        assert_eq!(r.reserve_packs(b, 1).unwrap(), 4);
        r.raise_next_pack(b, 10).unwrap();
        assert_eq!(r.reserve_packs(b, 1).unwrap(), 10);
    }

    #[test]
    fn a_backup_keeps_one_code_and_its_pack_counter_is_apart_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let b = BackupId([3; 16]);
        assert_eq!(r.code(b).unwrap(), None);
        r.record_code(b, Scheme::ReedSolomon, 13).unwrap();
        r.record_code(b, Scheme::ReedSolomon, 13).unwrap();
        let e = r.record_code(b, Scheme::Xor, 13).unwrap_err().0;
        assert!(e.contains("not xor over 13"), "{e}");
        assert!(r.record_code(b, Scheme::ReedSolomon, 7).is_err());
        assert_eq!(r.code(b).unwrap(), Some((Scheme::ReedSolomon, 13)));
        assert_eq!(r.code(BackupId([4; 16])).unwrap(), None);
        assert_eq!(r.reserve_packs(b, 5).unwrap(), 0);
        assert_eq!(r.next_pack(b).unwrap(), 5);
        assert_eq!(r.code(b).unwrap(), Some((Scheme::ReedSolomon, 13)));
    }

    #[test]
    fn a_not_vouched_record_is_never_unchanged() {
        let f = CachedFile {
            size: 1,
            mtime: Time { secs: 5, nanos: 6 },
            ctime: Time { secs: 7, nanos: 8 },
            ino: 9,
            dev: 10,
            seen: 1,
            chunks: vec![],
        };
        let mut g = f.clone();
        assert!(g.unchanged(&f));
        g.not_vouched();
        assert!(!g.unchanged(&f));
        assert_eq!(CachedFile::decode(b"p", &g.encode(b"p")).unwrap(), Some(g));
    }

    #[test]
    fn a_pack_record_keeps_its_header_commitment_and_reads_without_one() {
        let mut rec = PackRecord {
            kind: PackKind::Meta,
            state: PackState::Condemned,
            chunks: 3,
            data_len: 1 << 40,
            body_len: 5,
            time: 6,
            pending: 0b101,
            missing: 0b10,
            header: Some([7; 32]),
        };
        let with = rec.encode();
        assert_eq!(with.len(), 78);
        assert_eq!(PackRecord::decode(&with).unwrap(), rec);
        rec.header = None;
        let without = rec.encode();
        assert_eq!(without.len(), 46);
        assert_eq!(PackRecord::decode(&without).unwrap(), rec);
        assert!(PackRecord::decode(&with[..60]).is_err());
    }

    #[test]
    fn a_recorded_pack_indexes_its_chunks_and_the_first_copy_wins() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let b = BackupId([1; 16]);
        let rec = PackRecord {
            kind: PackKind::Data,
            state: PackState::Live,
            chunks: 2,
            data_len: 30,
            body_len: 400,
            time: 7,
            pending: 0,
            missing: 0,
            header: None,
        };
        let e = |c: u8, offset: u32| PackEntry {
            id: id(c),
            offset,
            stored_len: 10,
            plain_len: 20,
        };
        r.record_pack(b, 5, &rec, &[e(1, 0), e(2, 10)]).unwrap();
        r.record_pack(b, 6, &rec, &[e(2, 0), e(3, 10)]).unwrap();
        let t = r.read().unwrap();
        assert_eq!(r.chunk(&t, b, &id(1)).unwrap().unwrap().pack, 5);
        assert_eq!(r.chunk(&t, b, &id(2)).unwrap().unwrap().pack, 5);
        assert_eq!(r.chunk(&t, b, &id(3)).unwrap().unwrap().offset, 10);
        assert!(r.chunk(&t, BackupId([9; 16]), &id(1)).unwrap().is_none());
        drop(t);
        assert_eq!(r.pack(b, 6).unwrap(), Some(rec));
        let mut seen = Vec::new();
        r.for_each_pack(b, |n, _| {
            seen.push(n);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [5, 6]);
    }

    #[test]
    fn the_files_cache_round_trips_and_sweeps_what_recent_snapshots_did_not_see() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let b = BackupId([1; 16]);
        let f = |seen: u64| CachedFile {
            size: 12,
            mtime: Time {
                secs: -3,
                nanos: 999_999_999,
            },
            ctime: Time { secs: 5, nanos: 1 },
            ino: 77,
            dev: 8,
            seen,
            chunks: vec![id(4), id(5)],
        };
        let long = vec![b'x'; 3000];
        let mut w = r.write().unwrap();
        r.put_file(&mut w, b, b"home/a", &f(1)).unwrap();
        r.put_file(&mut w, b, &long, &f(3)).unwrap();
        r.put_file(&mut w, BackupId([2; 16]), b"home/a", &f(1))
            .unwrap();
        w.commit().unwrap();
        let t = r.read().unwrap();
        assert_eq!(r.file(&t, b, &long).unwrap(), Some(f(3)));
        assert!(r.file(&t, b, b"home/b").unwrap().is_none());
        assert!(f(1).unchanged(&f(2)));
        let mut moved = f(1);
        moved.ctime.nanos += 1;
        assert!(!f(1).unchanged(&moved));
        drop(t);
        assert_eq!(r.sweep_files(b, 2).unwrap(), 1);
        let t = r.read().unwrap();
        assert!(r.file(&t, b, b"home/a").unwrap().is_none());
        assert!(r.file(&t, b, &long).unwrap().is_some());
        // Another backup's cache is its own.
        assert!(r.file(&t, BackupId([2; 16]), b"home/a").unwrap().is_some());
        drop(t);
        // Several batches of stale records, mixed with fresh ones.
        let mut w = r.write().unwrap();
        for i in 0..2500u32 {
            let seen = if i % 100 == 0 { 9 } else { 4 };
            r.put_file(&mut w, b, format!("f{i}").as_bytes(), &f(seen))
                .unwrap();
        }
        w.commit().unwrap();
        assert_eq!(r.sweep_files(b, 5).unwrap(), 2475 + 1);
        let t = r.read().unwrap();
        assert!(r.file(&t, b, b"f100").unwrap().is_some());
        assert!(r.file(&t, b, b"f101").unwrap().is_none());
        drop(t);
        // Damaged records (torn, rotten): no record to a lookup, and swept
        // whatever the snapshot, without stopping the sweep of the rest.
        let mut w = r.write().unwrap();
        r.files
            .put(&mut w, &file_key(b, b"f200"), &[1, 2, 3])
            .unwrap();
        let mut cut = f(9).encode(b"f300");
        cut.truncate(4 + 4 + 48 + 8 + 10);
        r.files.put(&mut w, &file_key(b, b"f300"), &cut).unwrap();
        w.commit().unwrap();
        let t = r.read().unwrap();
        assert!(r.file(&t, b, b"f200").unwrap().is_none());
        assert!(r.file(&t, b, b"f300").unwrap().is_none());
        drop(t);
        // The first has no snapshot stamp left and goes at once; the
        // second's stamp is whole and it ages out like the others.
        assert_eq!(r.sweep_files(b, 0).unwrap(), 1);
        let t = r.read().unwrap();
        assert!(r.files.get(&t, &file_key(b, b"f200")).unwrap().is_none());
        assert!(r.files.get(&t, &file_key(b, b"f300")).unwrap().is_some());
        assert!(r.file(&t, b, b"f100").unwrap().is_some());
    }

    #[test]
    fn condemning_drops_chunks_keeps_what_is_kept_or_young_and_settles_per_position() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let b = BackupId([1; 16]);
        let rec = |time| PackRecord {
            kind: PackKind::Data,
            state: PackState::Live,
            chunks: 1,
            data_len: 10,
            body_len: 100,
            time,
            pending: 0,
            missing: 0,
            header: None,
        };
        let e = |c: u8| PackEntry {
            id: id(c),
            offset: 0,
            stored_len: 10,
            plain_len: 10,
        };
        r.record_pack(b, 0, &rec(10), &[e(0)]).unwrap();
        r.record_pack(b, 1, &rec(10), &[e(1)]).unwrap();
        r.record_pack(b, 2, &rec(500), &[e(2)]).unwrap();
        let mut kept = PackSet::default();
        kept.insert(1);
        // Pack 0: old and unreferenced; 1: kept; 2: within the grace period.
        assert_eq!(r.condemn(b, &kept, 100, 0b111).unwrap(), (1, 1));
        let t = r.read().unwrap();
        assert!(r.chunk(&t, b, &id(0)).unwrap().is_none());
        assert!(r.chunk(&t, b, &id(1)).unwrap().is_some());
        assert!(r.chunk(&t, b, &id(2)).unwrap().is_some());
        drop(t);
        let p0 = r.pack(b, 0).unwrap().unwrap();
        assert_eq!((p0.state, p0.pending), (PackState::Condemned, 0b111));
        // Condemning again changes nothing; positions settle one by one.
        assert_eq!(r.condemn(b, &kept, 100, 0b111).unwrap(), (0, 0));
        r.settle(b, 0, 0b101).unwrap();
        assert_eq!(r.pack(b, 0).unwrap().unwrap().pending, 0b010);
        r.settle(b, 0, 0b010).unwrap();
        assert!(r.pack(b, 0).unwrap().is_none());
        assert_eq!(r.pack(b, 1).unwrap().unwrap().state, PackState::Live);
    }
}
