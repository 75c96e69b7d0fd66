//! The customer-agent's own state in LMDB (heed): its supplier set, the
//! statistics kept on each supplier, and the catalog of backups and versions.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bitdust_block::BackupId;
use bitdust_daemon::state::StateLock;
use heed::types::{Bytes, SerdeJson};
use heed::{Database, Env};
use serde::{Deserialize, Serialize};

/// The supplier bound to one position.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PositionRecord {
    /// Its node id (text form).
    pub node_id: String,
    /// `host:port`.
    pub address: String,
    /// Unix seconds.
    pub hired_at: u64,
    /// Quota it granted.
    pub quota: u64,
}

/// What the agent has seen of a supplier, for the rebuilder.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SupplierStats {
    /// Unix seconds of the last successful call, 0 if never.
    pub last_seen: u64,
    /// Calls that failed because it was unreachable.
    pub failures: u64,
    /// Consecutive failures since it last answered.
    pub failures_in_a_row: u64,
    /// Audits it passed.
    pub audits_passed: u64,
    /// Audits it failed.
    pub audits_failed: u64,
    /// The last error, if any.
    pub last_error: String,
    /// Bytes it stores for us, as it last said.
    pub used: u64,
}

/// One version of one backup in the catalog.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionRecord {
    /// The user whose backup it is (`None`: the system's, made by root or
    /// the agent's own user); only it and the system may see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
    /// Source paths.
    pub paths: Vec<String>,
    /// Unix seconds.
    pub time: u64,
    /// Bytes of file content read.
    pub input_bytes: u64,
    /// Bytes of fragment payloads stored.
    pub stored_bytes: u64,
    /// Blocks.
    pub blocks: u64,
    /// Files archived.
    pub files: u64,
    /// `xor` or `rs`.
    pub scheme: String,
    /// Positions.
    pub suppliers: u32,
    /// Node id at each position when the version was made.
    pub supplier_set: Vec<String>,
    /// Positions that failed during the backup: their fragments of this
    /// version are missing and await repair.
    pub missing_positions: Vec<u32>,
    /// Set when the version is a deduplicated snapshot (its root is the
    /// version's manifest object, its packs are blocks of version 0);
    /// unset for a full copy (`blocks` blocks of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotSummary>,
}

impl VersionRecord {
    /// The blocks a missing position owes fragments in: a full copy's
    /// blocks, or a snapshot's packs.
    pub fn owed_blocks(&self) -> u64 {
        self.snapshot.as_ref().map_or(self.blocks, |s| s.packs)
    }
}

/// What the catalog keeps of a snapshot besides its root.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The packs its root references, as (first, count) pairs.
    pub pack_ranges: Vec<u64>,
    /// Packs referenced.
    pub packs: u64,
    /// Directories and symlinks in it.
    pub directories: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Files the files cache vouched for, changed and new.
    pub files_unchanged: u64,
    /// Files whose content changed.
    pub files_changed: u64,
    /// Files the cache did not know.
    pub files_new: u64,
    /// Bytes of content read.
    pub bytes_read: u64,
    /// New chunks, their plain bytes, the pack bodies and fragments added.
    pub chunks_added: u64,
    /// Plain bytes of the new chunks.
    pub added_plain: u64,
    /// Pack bodies written.
    pub added_packed: u64,
    /// Fragment bytes written.
    pub added_stored: u64,
    /// Packs written.
    pub packs_added: u64,
    /// Files that changed while being read (stored as read, flagged).
    #[serde(default)]
    pub changed_while_read: u64,
    /// Names stored as hard links.
    #[serde(default)]
    pub hard_links: u64,
    /// FIFOs and device nodes.
    #[serde(default)]
    pub specials: u64,
    /// Entries their directory's record gave whole (issue 19).
    #[serde(default)]
    pub entries_reused: u64,
}

/// A backup attempt: its version number was reserved before its first
/// fragment left, so no other attempt ever writes under that name. While
/// the attempt is not in the catalog (it is running, or it failed or was
/// cut by a crash), `pending` names the suppliers that may hold fragments
/// of it; they are asked to delete them until none is left.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Unix seconds when it was reserved.
    pub started: u64,
    /// Node ids (text) that may hold its fragments and have not yet
    /// confirmed deleting them.
    pub pending: Vec<String>,
}

/// The database.
pub struct State {
    env: Env,
    positions: Database<Bytes, SerdeJson<PositionRecord>>,
    stats: Database<Bytes, SerdeJson<SupplierStats>>,
    versions: Database<Bytes, SerdeJson<VersionRecord>>,
    meta: Database<Bytes, SerdeJson<u64>>,
    /// Node id (text) -> when it was fired.
    fired: Database<Bytes, SerdeJson<u64>>,
    /// Reserved versions not (yet) in the catalog, by backup and version.
    attempts: Database<Bytes, SerdeJson<AttemptRecord>>,
    /// Backup id -> the next version number it may reserve.
    next_version: Database<Bytes, SerdeJson<u64>>,
    /// Supplier statistics changed since the last [`State::flush_stats`]:
    /// they need not survive a crash to the millisecond, so they are not
    /// committed (with its fsync) on every ping and fragment.
    stats_cache: Mutex<StatsCache>,
    /// Write transactions committed (each one an fsync).
    commits: AtomicU64,
}

/// Statistics held in memory between flushes.
#[derive(Default)]
struct StatsCache {
    held: HashMap<u32, SupplierStats>,
    dirty: HashSet<u32>,
}

/// A database operation failed.
#[derive(Debug, thiserror::Error)]
#[error("the customer-agent's database failed: {0}")]
pub struct StateError(String);

/// A catalog change was refused, or the database failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The position is not (or no longer) held by that supplier.
    #[error("position {position} is not held by {node} any more; act on its current supplier")]
    NotHeld {
        /// The position.
        position: u32,
        /// The supplier named.
        node: String,
    },
    /// No such version in the catalog.
    #[error("backup {id} has no version {version}")]
    NoVersion {
        /// The backup.
        id: BackupId,
        /// The version.
        version: u64,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] StateError),
}

impl From<heed::Error> for CatalogError {
    fn from(e: heed::Error) -> Self {
        CatalogError::Db(e.into())
    }
}

impl From<heed::Error> for StateError {
    fn from(e: heed::Error) -> Self {
        StateError(e.to_string())
    }
}

fn version_key(id: BackupId, version: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&id.0);
    k[16..].copy_from_slice(&version.to_be_bytes());
    k
}

fn key_backup(k: &[u8]) -> Option<BackupId> {
    <[u8; 16]>::try_from(k.get(..16)?).ok().map(BackupId)
}

fn key_version(k: &[u8]) -> u64 {
    k.get(16..24)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

impl State {
    /// Opens (creating) the database in `db/` of the agent's state
    /// directory, whose lock the caller holds.
    pub fn open(lock: &StateLock) -> Result<State, StateError> {
        let env = lock
            .open_env("db", 16 << 30, 12)
            .map_err(|e| StateError(e.0))?;
        let mut w = env.write_txn()?;
        let positions = env.create_database(&mut w, Some("positions"))?;
        let stats = env.create_database(&mut w, Some("stats"))?;
        let versions = env.create_database(&mut w, Some("versions"))?;
        let meta = env.create_database(&mut w, Some("meta"))?;
        let fired = env.create_database(&mut w, Some("fired"))?;
        let attempts = env.create_database(&mut w, Some("attempts"))?;
        let next_version = env.create_database(&mut w, Some("next_version"))?;
        w.commit()?;
        Ok(State {
            env,
            positions,
            stats,
            versions,
            meta,
            fired,
            attempts,
            next_version,
            stats_cache: Mutex::new(StatsCache::default()),
            commits: AtomicU64::new(0),
        })
    }

    fn commit(&self, w: heed::RwTxn<'_>) -> Result<(), StateError> {
        w.commit()?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Write transactions committed since the database was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, StatsCache> {
        self.stats_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the statistics changed since the last flush, in one
    /// transaction. The agent calls it every few seconds and at shutdown.
    pub fn flush_stats(&self) -> Result<usize, StateError> {
        let mut cache = self.cache();
        if cache.dirty.is_empty() {
            return Ok(0);
        }
        let dirty: Vec<u32> = cache.dirty.drain().collect();
        let mut w = self.env.write_txn()?;
        let mut n = 0;
        for p in dirty {
            let key = p.to_be_bytes();
            // A position unbound since is not written back.
            if let (Some(s), Some(_)) = (cache.held.get(&p), self.positions.get(&w, &key)?) {
                self.stats.put(&mut w, &key, s)?;
                n += 1;
            }
        }
        self.commit(w)?;
        Ok(n)
    }

    /// Reserves the next version of backup `id` for a new attempt, in one
    /// durable transaction, before anything is uploaded: the number is
    /// above every version in the catalog, every earlier reservation and
    /// `floor` (the highest version a supplier was seen holding, if known),
    /// and is never handed out again. `suppliers` may hold its fragments.
    pub fn reserve_version(
        &self,
        id: BackupId,
        suppliers: &[String],
        at: u64,
        floor: u64,
    ) -> Result<u64, StateError> {
        let mut w = self.env.write_txn()?;
        let mut next = self
            .next_version
            .get(&w, &id.0)?
            .unwrap_or(1)
            .max(floor + 1);
        let lo = version_key(id, 0);
        let hi = version_key(id, u64::MAX);
        let range = (
            std::ops::Bound::Included(&lo[..]),
            std::ops::Bound::Included(&hi[..]),
        );
        if let Some(last) = self.versions.rev_range(&w, &range)?.next() {
            let (k, _) = last?;
            next = next.max(key_version(k).saturating_add(1));
        }
        self.next_version.put(&mut w, &id.0, &(next + 1))?;
        self.attempts.put(
            &mut w,
            &version_key(id, next),
            &AttemptRecord {
                started: at,
                pending: suppliers.to_vec(),
            },
        )?;
        self.commit(w)?;
        Ok(next)
    }

    /// Makes a reserved attempt a version of the catalog, in one
    /// transaction: it is no longer an attempt to clean up.
    pub fn commit_version(
        &self,
        id: BackupId,
        version: u64,
        rec: &VersionRecord,
    ) -> Result<(), StateError> {
        let mut w = self.env.write_txn()?;
        self.versions.put(&mut w, &version_key(id, version), rec)?;
        self.attempts.delete(&mut w, &version_key(id, version))?;
        self.commit(w)
    }

    /// Attempts that are not in the catalog, oldest first.
    pub fn attempts(&self) -> Result<Vec<(BackupId, u64, AttemptRecord)>, StateError> {
        self.by_version(&self.attempts)
    }

    /// Every entry of a table keyed by (backup id, version), in key order.
    fn by_version<T: serde::de::DeserializeOwned + 'static>(
        &self,
        table: &Database<Bytes, SerdeJson<T>>,
    ) -> Result<Vec<(BackupId, u64, T)>, StateError> {
        let r = self.env.read_txn()?;
        let mut out = Vec::new();
        for x in table.iter(&r)? {
            let (k, v) = x?;
            if let (Some(id), 24) = (key_backup(k), k.len()) {
                out.push((id, key_version(k), v));
            }
        }
        Ok(out)
    }

    /// Records that `node` no longer holds anything of the attempt; the
    /// attempt is forgotten once no supplier is pending.
    pub fn attempt_cleaned(
        &self,
        id: BackupId,
        version: u64,
        node: &str,
    ) -> Result<(), StateError> {
        let mut w = self.env.write_txn()?;
        let key = version_key(id, version);
        if let Some(mut rec) = self.attempts.get(&w, &key)? {
            rec.pending.retain(|n| n != node);
            if rec.pending.is_empty() {
                self.attempts.delete(&mut w, &key)?;
            } else {
                self.attempts.put(&mut w, &key, &rec)?;
            }
        }
        self.commit(w)
    }

    /// The next version each backup may reserve (for the catalog copy).
    pub fn next_versions(&self) -> Result<Vec<(BackupId, u64)>, StateError> {
        let r = self.env.read_txn()?;
        let mut out = Vec::new();
        for x in self.next_version.iter(&r)? {
            let (k, v) = x?;
            if let Ok(id) = <[u8; 16]>::try_from(k) {
                out.push((BackupId(id), v));
            }
        }
        Ok(out)
    }

    /// Raises the next version `id` may reserve to at least `next` (from a
    /// recovered catalog copy).
    pub fn raise_next_version(&self, id: BackupId, next: u64) -> Result<(), StateError> {
        let mut w = self.env.write_txn()?;
        let now = self.next_version.get(&w, &id.0)?.unwrap_or(1);
        if next > now {
            self.next_version.put(&mut w, &id.0, &next)?;
        }
        self.commit(w)
    }

    /// A number kept under `name`.
    pub fn meta(&self, name: &str) -> Result<Option<u64>, StateError> {
        let r = self.env.read_txn()?;
        Ok(self.meta.get(&r, name.as_bytes())?)
    }

    /// Sets a number under `name`.
    pub fn set_meta(&self, name: &str, value: u64) -> Result<(), StateError> {
        let mut w = self.env.write_txn()?;
        self.meta.put(&mut w, name.as_bytes(), &value)?;
        self.commit(w)
    }

    fn note_fired(
        &self,
        w: &mut heed::RwTxn<'_>,
        node: &str,
        at: u64,
        forget_before: u64,
    ) -> Result<(), heed::Error> {
        let old: Vec<Vec<u8>> = self
            .fired
            .iter(w)?
            .filter_map(Result::ok)
            .filter(|(_, t)| *t < forget_before)
            .map(|(k, _)| k.to_vec())
            .collect();
        for k in old {
            self.fired.delete(w, &k)?;
        }
        self.fired.put(w, node.as_bytes(), &at)
    }

    /// Remembers that `node` was fired at `at`, and forgets those fired
    /// before `forget_before`.
    pub fn remember_fired(
        &self,
        node: &str,
        at: u64,
        forget_before: u64,
    ) -> Result<(), StateError> {
        let mut w = self.env.write_txn()?;
        self.note_fired(&mut w, node, at, forget_before)?;
        self.commit(w)
    }

    /// The nodes fired at or after `since`.
    pub fn fired_since(&self, since: u64) -> Result<Vec<String>, StateError> {
        let r = self.env.read_txn()?;
        Ok(self
            .fired
            .iter(&r)?
            .filter_map(Result::ok)
            .filter(|(_, t)| *t >= since)
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect())
    }

    /// Every bound position.
    pub fn positions(&self) -> Result<Vec<(u32, PositionRecord)>, StateError> {
        let r = self.env.read_txn()?;
        let mut out = Vec::new();
        for x in self.positions.iter(&r)? {
            let (k, v) = x?;
            if let Ok(b) = <[u8; 4]>::try_from(k) {
                out.push((u32::from_be_bytes(b), v));
            }
        }
        Ok(out)
    }

    /// Binds `position`.
    pub fn set_position(&self, position: u32, rec: &PositionRecord) -> Result<(), StateError> {
        let mut cache = self.cache();
        cache.held.remove(&position);
        cache.dirty.remove(&position);
        let mut w = self.env.write_txn()?;
        self.positions.put(&mut w, &position.to_be_bytes(), rec)?;
        self.stats
            .put(&mut w, &position.to_be_bytes(), &SupplierStats::default())?;
        self.commit(w)
    }

    /// The statistics of `position`.
    pub fn stats(&self, position: u32) -> Result<SupplierStats, StateError> {
        if let Some(s) = self.cache().held.get(&position) {
            return Ok(s.clone());
        }
        let r = self.env.read_txn()?;
        Ok(self
            .stats
            .get(&r, &position.to_be_bytes())?
            .unwrap_or_default())
    }

    /// Updates the statistics of `position` in memory; [`State::flush_stats`]
    /// writes them.
    pub fn update_stats(
        &self,
        position: u32,
        f: impl FnOnce(&mut SupplierStats),
    ) -> Result<(), StateError> {
        let key = position.to_be_bytes();
        let mut cache = self.cache();
        let s = match cache.held.entry(position) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let r = self.env.read_txn()?;
                if self.positions.get(&r, &key)?.is_none() {
                    return Ok(());
                }
                e.insert(self.stats.get(&r, &key)?.unwrap_or_default())
            }
        };
        f(s);
        cache.dirty.insert(position);
        Ok(())
    }

    /// Fires the supplier `node` at `position`, in one transaction: the
    /// position is unbound, the node remembered as fired at `at` (those
    /// fired before `forget_before` are forgotten), and every version of
    /// the catalog records the position as missing. Done before the
    /// supplier is told (record, then act), so no repair is ever lost.
    pub fn fire_position(
        &self,
        position: u32,
        node: &str,
        at: u64,
        forget_before: u64,
    ) -> Result<(), CatalogError> {
        let mut cache = self.cache();
        let mut w = self.env.write_txn()?;
        let key = position.to_be_bytes();
        if self.positions.get(&w, &key)?.map(|r| r.node_id).as_deref() != Some(node) {
            return Err(CatalogError::NotHeld {
                position,
                node: node.to_owned(),
            });
        }
        self.positions.delete(&mut w, &key)?;
        self.stats.delete(&mut w, &key)?;
        self.note_fired(&mut w, node, at, forget_before)?;
        let mut changed = Vec::new();
        for x in self.versions.iter(&w)? {
            let (k, mut rec) = x?;
            if !rec.missing_positions.contains(&position) {
                rec.missing_positions.push(position);
                rec.missing_positions.sort_unstable();
                changed.push((k.to_vec(), rec));
            }
        }
        for (k, rec) in changed {
            self.versions.put(&mut w, &k, &rec)?;
        }
        self.commit(w)?;
        cache.held.remove(&position);
        cache.dirty.remove(&position);
        Ok(())
    }

    /// Records, in one transaction, that `node`, which still holds
    /// `position`, now holds every fragment of that position of the
    /// version. Returns the positions the version still misses.
    pub fn mark_repaired(
        &self,
        id: BackupId,
        version: u64,
        position: u32,
        node: &str,
    ) -> Result<Vec<u32>, CatalogError> {
        let mut w = self.env.write_txn()?;
        if self
            .positions
            .get(&w, &position.to_be_bytes())?
            .map(|r| r.node_id)
            .as_deref()
            != Some(node)
        {
            return Err(CatalogError::NotHeld {
                position,
                node: node.to_owned(),
            });
        }
        let key = version_key(id, version);
        let mut rec = self
            .versions
            .get(&w, &key)?
            .ok_or(CatalogError::NoVersion { id, version })?;
        rec.missing_positions.retain(|&p| p != position);
        if let Some(s) = rec.supplier_set.get_mut(position as usize) {
            s.clear();
            s.push_str(node);
        }
        self.versions.put(&mut w, &key, &rec)?;
        self.commit(w)?;
        Ok(rec.missing_positions)
    }

    /// Adds a version to the catalog.
    pub fn put_version(
        &self,
        id: BackupId,
        version: u64,
        rec: &VersionRecord,
    ) -> Result<(), StateError> {
        let mut w = self.env.write_txn()?;
        self.versions.put(&mut w, &version_key(id, version), rec)?;
        self.commit(w)
    }

    /// Removes a version from the catalog.
    pub fn delete_version(&self, id: BackupId, version: u64) -> Result<(), StateError> {
        let mut w = self.env.write_txn()?;
        self.versions.delete(&mut w, &version_key(id, version))?;
        self.commit(w)
    }

    /// Takes version `version` of `id` out of the catalog and makes it an
    /// attempt whose objects the suppliers `nodes` may hold, in one
    /// transaction: the attempt collector deletes them, now or, at a
    /// supplier that is away, later; a crash in between loses nothing.
    pub fn retire_version(
        &self,
        id: BackupId,
        version: u64,
        nodes: &[String],
        at: u64,
    ) -> Result<(), StateError> {
        let mut w = self.env.write_txn()?;
        let key = version_key(id, version);
        self.versions.delete(&mut w, &key)?;
        if !nodes.is_empty() {
            self.attempts.put(
                &mut w,
                &key,
                &AttemptRecord {
                    started: at,
                    pending: nodes.to_vec(),
                },
            )?;
        }
        self.commit(w)
    }

    /// The whole catalog, in backup id then version order.
    pub fn versions(&self) -> Result<Vec<(BackupId, u64, VersionRecord)>, StateError> {
        self.by_version(&self.versions)
    }

    /// The versions of one backup, oldest first.
    pub fn versions_of(&self, id: BackupId) -> Result<Vec<(u64, VersionRecord)>, StateError> {
        Ok(self
            .versions()?
            .into_iter()
            .filter(|(b, _, _)| *b == id)
            .map(|(_, v, r)| (v, r))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(blocks: u64) -> VersionRecord {
        VersionRecord {
            owner: None,
            paths: vec!["/x".into()],
            time: 1,
            input_bytes: 1,
            stored_bytes: 1,
            blocks,
            files: 1,
            scheme: "xor".into(),
            suppliers: 7,
            supplier_set: Vec::new(),
            missing_positions: Vec::new(),
            snapshot: None,
        }
    }

    #[test]
    fn a_failed_attempt_s_version_is_never_reserved_again() {
        let dir = tempfile::tempdir().unwrap();
        let id = BackupId(*b"0123456789abcdef");
        let other = BackupId(*b"fedcba9876543210");
        let nodes = vec!["a".to_string(), "b".to_string()];
        {
            let s = State::open(&StateLock::take(dir.path(), "customer-agent").unwrap()).unwrap();
            // The first attempt fails halfway: it stays an attempt.
            assert_eq!(s.reserve_version(id, &nodes, 10, 0).unwrap(), 1);
        }
        // Even after a restart (or a crash), the retry gets version 2.
        let s = State::open(&StateLock::take(dir.path(), "customer-agent").unwrap()).unwrap();
        assert_eq!(s.reserve_version(id, &nodes, 11, 0).unwrap(), 2);
        s.commit_version(id, 2, &record(3)).unwrap();
        let attempts = s.attempts().unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!((attempts[0].0, attempts[0].1), (id, 1));
        // Versions of another backup are numbered on their own.
        assert_eq!(s.reserve_version(other, &nodes, 12, 0).unwrap(), 1);
        // Deleting the newest catalog version does not free its number.
        s.delete_version(id, 2).unwrap();
        assert_eq!(s.reserve_version(id, &nodes, 13, 0).unwrap(), 3);
        // A floor from what suppliers hold raises the number.
        assert_eq!(s.reserve_version(id, &nodes, 14, 10).unwrap(), 11);
        // Cleaning the failed attempt on both suppliers forgets it.
        s.attempt_cleaned(id, 1, "a").unwrap();
        assert!(
            s.attempts()
                .unwrap()
                .iter()
                .any(|(_, v, r)| *v == 1 && r.pending == ["b"])
        );
        s.attempt_cleaned(id, 1, "b").unwrap();
        assert!(
            !s.attempts()
                .unwrap()
                .iter()
                .any(|(b, v, _)| *b == id && *v == 1)
        );
        // A recovered catalog copy raises the counter, never lowers it.
        s.raise_next_version(id, 5).unwrap();
        assert_eq!(s.reserve_version(id, &nodes, 15, 0).unwrap(), 12);
        s.raise_next_version(id, 40).unwrap();
        assert_eq!(s.reserve_version(id, &nodes, 16, 0).unwrap(), 40);
    }

    fn position(node: &str) -> PositionRecord {
        PositionRecord {
            node_id: node.into(),
            address: "127.0.0.1:1".into(),
            hired_at: 1,
            quota: 1,
        }
    }

    fn missing(s: &State, id: BackupId, v: u64) -> Vec<u32> {
        s.versions_of(id)
            .unwrap()
            .into_iter()
            .find(|(x, _)| *x == v)
            .unwrap()
            .1
            .missing_positions
    }

    #[test]
    fn fire_and_mark_repaired_are_single_transactions_in_either_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(&StateLock::take(dir.path(), "customer-agent").unwrap()).unwrap();
        let id = BackupId(*b"0123456789abcdef");
        for p in 0..4 {
            s.set_position(p, &position(&format!("n{p}"))).unwrap();
        }
        let mut rec = record(2);
        rec.missing_positions = vec![2];
        s.put_version(id, 1, &rec).unwrap();
        s.put_version(id, 2, &record(2)).unwrap();
        // The rebuilder repairs position 2 of version 1 while the user
        // fires position 3: both changes survive, in either order.
        assert_eq!(s.mark_repaired(id, 1, 2, "n2").unwrap(), Vec::<u32>::new());
        s.fire_position(3, "n3", 100, 0).unwrap();
        assert_eq!(missing(&s, id, 1), [3]);
        assert_eq!(missing(&s, id, 2), [3]);
        // The other order: position 1 fired first; a repair of 1 by the
        // fired node is refused, the position stays missing.
        s.fire_position(1, "n1", 101, 0).unwrap();
        let e = s.mark_repaired(id, 1, 1, "n1").unwrap_err();
        assert!(
            matches!(e, CatalogError::NotHeld { position: 1, .. }),
            "{e}"
        );
        assert_eq!(missing(&s, id, 1), [1, 3]);
        // Firing a position its supplier no longer holds changes nothing.
        assert!(s.fire_position(1, "n1", 102, 0).is_err());
        assert!(
            s.positions()
                .unwrap()
                .iter()
                .all(|(p, _)| *p != 1 && *p != 3)
        );
        let mut fired = s.fired_since(0).unwrap();
        fired.sort();
        assert_eq!(fired, ["n1", "n3"]);
        // A repair of a version that is gone says so.
        assert!(matches!(
            s.mark_repaired(id, 9, 0, "n0").unwrap_err(),
            CatalogError::NoVersion { version: 9, .. }
        ));
    }

    #[test]
    fn concurrent_fires_and_repairs_lose_no_missing_position() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(
            State::open(&StateLock::take(dir.path(), "customer-agent").unwrap()).unwrap(),
        );
        let id = BackupId(*b"0123456789abcdef");
        for p in 0..8 {
            s.set_position(p, &position(&format!("n{p}"))).unwrap();
        }
        // Positions 0..4 are missing in 50 versions and get repaired while
        // positions 4..8 are fired, all at once from 8 threads.
        for v in 1..=50 {
            let mut rec = record(1);
            rec.missing_positions = vec![0, 1, 2, 3];
            s.put_version(id, v, &rec).unwrap();
        }
        let mut threads = Vec::new();
        for p in 0..8u32 {
            let s = s.clone();
            threads.push(std::thread::spawn(move || {
                if p < 4 {
                    for v in 1..=50 {
                        s.mark_repaired(id, v, p, &format!("n{p}")).unwrap();
                    }
                } else {
                    s.fire_position(p, &format!("n{p}"), 1, 0).unwrap();
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        for v in 1..=50 {
            assert_eq!(missing(&s, id, v), [4, 5, 6, 7], "version {v}");
        }
    }

    #[test]
    fn supplier_statistics_are_batched_not_committed_per_event() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = State::open(&StateLock::take(dir.path(), "customer-agent").unwrap()).unwrap();
            s.set_position(0, &position("n0")).unwrap();
            let before = s.commits();
            // A backup's worth of events: pings and fragments.
            for _ in 0..10_000 {
                s.update_stats(0, |st| st.last_seen += 1).unwrap();
            }
            s.update_stats(5, |st| st.failures += 1).unwrap(); // unbound: ignored
            assert_eq!(s.commits(), before, "statistics were committed per event");
            assert_eq!(s.stats(0).unwrap().last_seen, 10_000);
            assert_eq!(s.flush_stats().unwrap(), 1);
            assert_eq!(s.commits(), before + 1);
            assert_eq!(s.flush_stats().unwrap(), 0);
            // Stats of a position fired before the flush are not written back.
            s.set_position(1, &position("n1")).unwrap();
            s.update_stats(1, |st| st.failures = 7).unwrap();
            s.fire_position(1, "n1", 1, 0).unwrap();
            assert_eq!(s.flush_stats().unwrap(), 0);
        }
        // What was flushed survives a reopen.
        let s = State::open(&StateLock::take(dir.path(), "customer-agent").unwrap()).unwrap();
        assert_eq!(s.stats(0).unwrap().last_seen, 10_000);
        assert_eq!(s.stats(1).unwrap(), SupplierStats::default());
    }

    #[test]
    fn fired_suppliers_are_remembered_across_reopen_and_forgotten_in_time() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = State::open(&StateLock::take(dir.path(), "customer-agent").unwrap()).unwrap();
            s.remember_fired("a", 100, 0).unwrap();
            s.remember_fired("b", 200, 0).unwrap();
        }
        let s = State::open(&StateLock::take(dir.path(), "customer-agent").unwrap()).unwrap();
        let mut all = s.fired_since(0).unwrap();
        all.sort();
        assert_eq!(all, ["a", "b"]);
        assert_eq!(s.fired_since(150).unwrap(), ["b"]);
        // Firing "c" at 300 forgets whatever was fired before 150.
        s.remember_fired("c", 300, 150).unwrap();
        let mut all = s.fired_since(0).unwrap();
        all.sort();
        assert_eq!(all, ["b", "c"]);
    }
}
