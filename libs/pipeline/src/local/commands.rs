//! The snapshot commands of `bitdustctl local` beyond backup and restore:
//! `list`, `ls`, `diff`, `forget`, `prune`, `stats` and `check`.
//!
//! Each reads the signed roots of `DIR/<position>/<id>/<n>/manifest`; the
//! packs, under `DIR/<position>/<id>/0/`, are read through
//! [`LocalSource`]s. What needs `master.key` (paths, entries, chunk
//! contents) says so; `forget`, `prune`, `stats` and the structural part
//! of `check` work with the write-only key set.

use bitdust_block::root::Root;
use bitdust_crypto::{DedupKeys, NodeId};
use bitdust_proto::format::v1 as pb;

use super::*;
use crate::forget::{Decision, Policy};
use crate::prune::PruneReport;
use crate::repo::{PackSet, Repo};
use crate::snapshot::Change;
pub use crate::store::{CheckReport, DataSubset, RepackReport, Stats};
use crate::store::{RepackOptions, RepackStore, SnapshotStore};

/// A local store opened with this customer's keys.
pub struct Opened {
    /// The store.
    pub store: LocalStore,
    keys: KeyRing,
    node: NodeId,
}

impl Opened {
    /// The store at `dir`, with the keys in `keys_dir`.
    pub fn new(keys_dir: &Path, dir: &Path) -> Result<Opened, LocalError> {
        let keys = KeyRing::open(keys_dir)?;
        let node = keys.identity().node_id();
        Ok(Opened {
            store: LocalStore::new(dir),
            keys,
            node,
        })
    }

    /// The verified root of snapshot `n` of `id`.
    pub fn root(&self, id: BackupId, n: u64) -> Result<Root, LocalError> {
        open_root(&self.store, &self.node, id, n)
    }

    /// The root of the snapshot `sel` names.
    pub fn select(&self, sel: Selector) -> Result<Root, LocalError> {
        let (id, n) = self.store.select(sel)?;
        self.root(id, n)
    }

    /// The backup key of `root`'s backup, unwrapped with `master.key`.
    pub fn backup_key(&self, root: &Root) -> Result<BackupKey, LocalError> {
        let master = self.keys.master_key()?;
        BackupKey::unwrap_with(&root.root.wrapped_backup_key, master.age_identity()).map_err(|e| {
            LocalError::Store(format!(
                "the backup key of {}@{} does not open with this master key: {e}",
                root.backup_id, root.root.snapshot
            ))
        })
    }

    /// The dedup secrets of backup `id`.
    pub fn dedup(&self, id: BackupId) -> DedupKeys {
        DedupKeys::derive(self.keys.identity(), &id.0)
    }

    /// The snapshots of backup `id`, in number order.
    fn snapshots_of(&self, id: BackupId) -> Vec<u64> {
        self.store
            .list()
            .into_iter()
            .filter(|l| l.backup_id == id)
            .map(|l| l.version)
            .collect()
    }

    /// The backup `sel` names (or the only one).
    fn backup(&self, sel: Option<BackupId>) -> Result<BackupId, LocalError> {
        if let Some(id) = sel {
            return Ok(id);
        }
        let ids = self.store.backup_ids();
        match ids.as_slice() {
            [id] => Ok(*id),
            [] => Err(LocalError::Store(format!(
                "{} holds no backup; check the path (it should contain the position directories 0, 1, ...)",
                self.store.root.display()
            ))),
            _ => Err(LocalError::Store(format!(
                "{} holds several backups ({}); name one",
                self.store.root.display(),
                ids.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn referenced(&self, id: BackupId) -> Result<(PackSet, Option<Root>), LocalError> {
        crate::store::referenced(self, id)
    }
}

impl SnapshotStore for Opened {
    fn place(&self) -> String {
        self.store.root.display().to_string()
    }

    fn snapshots(&self, id: BackupId) -> Result<Vec<u64>, LocalError> {
        Ok(self.snapshots_of(id))
    }

    fn root(&self, id: BackupId, n: u64) -> Result<Root, LocalError> {
        Opened::root(self, id, n)
    }

    fn backup_key(&self, root: &Root) -> Result<BackupKey, LocalError> {
        Opened::backup_key(self, root)
    }

    fn dedup(&self, id: BackupId) -> DedupKeys {
        Opened::dedup(self, id)
    }

    fn packs(&self, id: BackupId) -> Box<dyn FragmentSource + '_> {
        Box::new(self.store.source(id, 0))
    }

    fn stored_bytes(&self, _: &Repo, id: BackupId) -> Result<u64, LocalError> {
        Ok(self.store.stored_bytes(id))
    }
}

impl RepackStore for Opened {
    fn identity(&self) -> Arc<bitdust_crypto::Identity> {
        Arc::new(bitdust_crypto::Identity::from_secret(
            &self.keys.identity().secret(),
        ))
    }

    fn missing_position(&self, positions: usize) -> Option<usize> {
        let present = self.store.positions();
        (0..positions).find(|p| !present.contains(p))
    }

    fn pack_sink(&self, id: BackupId, code: &Code) -> Box<dyn FragmentSink + '_> {
        Box::new(self.store.sink(id, 0, code))
    }

    /// A position that cannot be written keeps the older root, which is
    /// then ignored.
    fn rewrite_root(&self, root: &Root, packs: &PackSet) -> Result<(), LocalError> {
        let bytes = crate::store::signed_revision(&RepackStore::identity(self), root, packs);
        let code =
            Code::new(root.scheme, root.root.suppliers as usize).map_err(BackupError::from)?;
        self.store
            .sink(root.backup_id, root.root.snapshot, &code)
            .commit(&bytes)
            .map_err(|e| LocalError::Store(e.0))?;
        Ok(())
    }
}

impl LocalStore {
    /// Every backup with a directory at some position, with or without
    /// snapshots left.
    pub fn backup_ids(&self) -> Vec<BackupId> {
        let mut ids: Vec<BackupId> = self
            .positions()
            .into_iter()
            .flat_map(|p| {
                fs::read_dir(self.root.join(p.to_string()))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<BackupId>().ok())
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Bytes of the files under `DIR/<position>/<id>/` at every position:
    /// what the backup takes on the disks.
    pub fn stored_bytes(&self, id: BackupId) -> u64 {
        self.positions()
            .into_iter()
            .map(|p| bytes_under(&self.root.join(p.to_string()).join(id.to_string())))
            .sum()
    }

    /// Forgets snapshot `n` of `id` at every position present: a
    /// tombstone is made durable, then the root is removed. Any tombstone
    /// hides the snapshot, so a position that was away and comes back
    /// with the root does not bring it back (its root is removed by the
    /// next forget or prune, [`LocalStore::sweep_forgotten`]).
    fn forget_root(&self, id: BackupId, n: u64) -> Result<(), LocalError> {
        assert!(n > 0, "version 0 holds the packs, not a root");
        for p in self.positions() {
            let dir = self.version_dir(p, id, n);
            if !dir.is_dir() {
                continue;
            }
            let res = (|| -> io::Result<()> {
                File::create(dir.join(FORGOTTEN_FILE))?.sync_all()?;
                match fs::remove_file(dir.join(MANIFEST_FILE)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                File::open(&dir)?.sync_all()
            })();
            res.map_err(|e| {
                LocalError::Store(format!(
                    "cannot forget {}: {e}; check permissions, then run forget again",
                    dir.display()
                ))
            })?;
        }
        Ok(())
    }

    /// Deletes the fragment files under `DIR/<position>/<id>/0/` of packs
    /// the index does not know and `kept` does not hold, last modified
    /// before `before` (unix seconds): what a run killed between storing a
    /// pack and recording it leaves. Returns how many files and bytes.
    fn sweep_unknown(
        &self,
        repo: &Repo,
        id: BackupId,
        kept: &PackSet,
        before: u64,
    ) -> Result<(u64, u64), LocalError> {
        let (mut files, mut bytes) = (0, 0);
        for p in self.positions() {
            let dir = self.version_dir(p, id, 0);
            for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name();
                let Some(pack) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix('b'))
                    .and_then(|n| n.split_once(".f"))
                    .and_then(|(b, f)| (f.len() == 3).then_some(b))
                    .and_then(|b| b.parse::<u64>().ok())
                else {
                    continue;
                };
                if kept.contains(pack) || repo.pack(id, pack)?.is_some() {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .is_some_and(|d| d.as_secs() < before);
                if meta.is_file() && old && fs::remove_file(e.path()).is_ok() {
                    files += 1;
                    bytes += meta.len();
                }
            }
        }
        Ok((files, bytes))
    }

    /// Removes the roots that positions which were away still hold of
    /// snapshots forgotten meanwhile.
    pub fn sweep_forgotten(&self, id: BackupId) -> Result<u64, LocalError> {
        let mut forgotten = std::collections::BTreeSet::new();
        let mut rooted = std::collections::BTreeSet::new();
        for p in self.positions() {
            let bdir = self.root.join(p.to_string()).join(id.to_string());
            for v in fs::read_dir(bdir).into_iter().flatten().flatten() {
                let Some(n) = v.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                if n > 0 && v.path().join(FORGOTTEN_FILE).is_file() {
                    forgotten.insert(n);
                }
                if n > 0 && v.path().join(MANIFEST_FILE).is_file() {
                    rooted.insert(n);
                }
            }
        }
        let stale: Vec<u64> = forgotten.intersection(&rooted).copied().collect();
        for &n in &stale {
            self.forget_root(id, n)?;
        }
        Ok(stale.len() as u64)
    }
}

/// One snapshot, as `list` shows it.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    /// Its backup.
    pub backup_id: BackupId,
    /// Its number.
    pub snapshot: u64,
    /// Positions holding its root.
    pub positions: Vec<usize>,
    /// When it was taken (unix seconds).
    pub created_unix: i64,
    /// Its source paths; `None` without `master.key`.
    pub paths: Option<Vec<Vec<u8>>>,
    /// What it holds and what it added.
    pub stats: pb::SnapshotStats,
}

/// Every snapshot in the store, with its paths when `master.key` is at
/// hand.
pub fn list_snapshots(opened: &Opened) -> Result<Vec<SnapshotInfo>, LocalError> {
    let mut out = Vec::new();
    let mut key: Option<(BackupId, Option<BackupKey>)> = None;
    for l in opened.store.list() {
        let root = opened.root(l.backup_id, l.version)?;
        if key.as_ref().is_none_or(|(id, _)| *id != l.backup_id) {
            key = Some((l.backup_id, opened.backup_key(&root).ok()));
        }
        let paths = match key.as_ref().and_then(|(_, k)| k.as_ref()) {
            Some(k) => Some(
                root.open_info(k)
                    .map_err(|e| {
                        LocalError::Store(format!(
                            "the paths of {}@{} do not open: {e}",
                            l.backup_id, l.version
                        ))
                    })?
                    .source_paths,
            ),
            None => None,
        };
        out.push(SnapshotInfo {
            backup_id: l.backup_id,
            snapshot: l.version,
            positions: l.positions,
            created_unix: root.root.created_unix,
            paths,
            stats: root.root.stats.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// `ls` of snapshot `sel` (see [`crate::store::ls`]).
pub fn ls(
    opened: &Opened,
    sel: Selector,
    under: &[u8],
    each: impl FnMut(&pb::Node) -> Result<(), LocalError>,
) -> Result<Root, LocalError> {
    let (id, n) = opened.store.select(sel)?;
    crate::store::ls(opened, id, n, under, each)
}

/// `diff` of snapshots `older` and `newer` (see [`crate::store::diff`]).
pub fn diff(
    opened: &Opened,
    older: Selector,
    newer: Selector,
    each: impl FnMut(Change) -> Result<(), LocalError>,
) -> Result<(Root, Root, u64), LocalError> {
    let (a, b) = (opened.store.select(older)?, opened.store.select(newer)?);
    crate::store::diff(opened, a, b, each)
}

/// `stats` of backup `backup` (or the only one; see [`crate::store::stats`]).
pub fn stats(opened: &Opened, repo: &Repo, backup: Option<BackupId>) -> Result<Stats, LocalError> {
    crate::store::stats(opened, repo, opened.backup(backup)?)
}

/// `check` of backup `backup` (or the only one; see [`crate::store::check`]).
pub fn check(
    opened: &Opened,
    repo: &Repo,
    backup: Option<BackupId>,
    read_data: Option<DataSubset>,
) -> Result<CheckReport, LocalError> {
    crate::store::check(opened, repo, opened.backup(backup)?, read_data)
}

/// What `forget` decided, and did unless it was a dry run.
#[derive(Clone, Debug)]
pub struct ForgetReport {
    /// The backup.
    pub backup_id: BackupId,
    /// Per snapshot, newest first: kept (and why) or forgotten.
    pub decisions: Vec<Decision>,
    /// Whether the forgotten roots were removed.
    pub removed: bool,
}

/// `forget`: applies `policy` to the snapshots of backup `backup` (or the
/// only one), or forgets exactly `only` when given, and removes the
/// forgotten snapshots' roots unless `dry_run`. Their packs stay until a
/// prune. Needs no secret beyond `identity.key`; the caller holds the
/// state lock, so no backup runs meanwhile.
pub fn forget(
    opened: &Opened,
    backup: Option<BackupId>,
    policy: &Policy,
    only: Option<u64>,
    dry_run: bool,
) -> Result<ForgetReport, LocalError> {
    let id = opened.backup(backup)?;
    if !dry_run {
        opened.store.sweep_forgotten(id)?;
    }
    let mut snapshots = Vec::new();
    for n in opened.snapshots_of(id) {
        snapshots.push((n, opened.root(id, n)?.root.created_unix));
    }
    let decisions = crate::forget::decide(policy, &snapshots, only).map_err(|e| match e {
        crate::forget::Undecided::NoSuchSnapshot(n) => LocalError::Store(format!(
            "backup {id} has no snapshot {n} in {}; see `bitdustctl local list`",
            opened.store.root.display()
        )),
        crate::forget::Undecided::NoPolicy => LocalError::Store(crate::forget::NO_POLICY.into()),
    })?;
    if !dry_run {
        for d in decisions.iter().filter(|d| d.kept_by.is_empty()) {
            opened.store.forget_root(id, d.snapshot)?;
        }
    }
    Ok(ForgetReport {
        backup_id: id,
        decisions,
        removed: !dry_run,
    })
}

/// `prune`: for every backup in the store (or `backup`), deletes the packs
/// no remaining snapshot references that were stored more than `grace`
/// seconds before `now`. Needs no secret beyond `identity.key`; the caller
/// holds the state lock. A `kill -9` at any point leaves condemned packs
/// that the next prune deletes, never a deleted pack a snapshot names.
pub fn prune(
    opened: &Opened,
    repo: &Repo,
    backup: Option<BackupId>,
    opts: &PruneOptions,
) -> Result<Vec<Pruned>, LocalError> {
    prune_with(opened, repo, backup, opts, |d| d)
}

/// How to prune.
#[derive(Clone, Copy, Debug)]
pub struct PruneOptions {
    /// Unreferenced packs younger than this many seconds stay.
    pub grace: u64,
    /// The time now (unix seconds).
    pub now: u64,
    /// Repack until at most this share (0..=1) of the referenced data
    /// packs' bytes is unused; `None`: delete whole packs only.
    pub max_unused: Option<f64>,
    /// The size of the packs a repack writes.
    pub pack_size: usize,
    /// For crash tests: the repack stops (as a `kill -9` would) after this
    /// many durable steps (packs made durable, a root rewritten, the index
    /// moved), and the prune fails.
    pub stop_after_steps: Option<u32>,
}

impl PruneOptions {
    fn repack(&self) -> RepackOptions {
        RepackOptions {
            now: self.now,
            pack_size: self.pack_size,
            stop_after_steps: self.stop_after_steps,
            after_step: None,
        }
    }
}

/// What a prune did to one backup.
#[derive(Clone, Debug)]
pub struct Pruned {
    /// The backup.
    pub backup_id: BackupId,
    /// Whole-pack deletion.
    pub prune: PruneReport,
    /// The repack before it.
    pub repack: RepackReport,
    /// Why no repack ran (no `master.key`, or not asked for).
    pub repack_skipped: Option<String>,
    /// Fragment files of packs that no index record and no snapshot
    /// knows (left by a run killed between storing a pack and recording
    /// it), deleted, and their bytes.
    pub unknown_files: u64,
    /// See `unknown_files`.
    pub unknown_bytes: u64,
}

/// [`prune`], deleting through what `wrap` makes of each backup's
/// [`LocalPackDeleter`] (tests interrupt a prune there). Repacks first
/// when asked (see [`crate::store::repack`]).
pub fn prune_with<D: crate::prune::PackDeleter>(
    opened: &Opened,
    repo: &Repo,
    backup: Option<BackupId>,
    opts: &PruneOptions,
    mut wrap: impl FnMut(LocalPackDeleter) -> D,
) -> Result<Vec<Pruned>, LocalError> {
    let ids = match backup {
        Some(id) => vec![id],
        None => opened.store.backup_ids(),
    };
    let mut out = Vec::new();
    for id in ids {
        opened.store.sweep_forgotten(id)?;
        let (repack, repack_skipped) = match opts.max_unused {
            None => (RepackReport::default(), Some("not asked for".into())),
            Some(share) => match crate::store::repack(opened, repo, id, share, &opts.repack()) {
                Ok(done) => done,
                Err(LocalError::Keys(e)) => (RepackReport::default(), Some(e.to_string())),
                Err(e) => return Err(e),
            },
        };
        let (kept, newest) = opened.referenced(id)?;
        let code = match (repo.code(id)?, &newest) {
            (_, Some(root)) => Code::new(root.scheme, root.root.suppliers as usize),
            (Some((scheme, n)), None) => Code::new(scheme, n),
            (None, None) => {
                return Err(LocalError::Store(format!(
                    "backup {id} has no snapshot left and its state does not say how its packs are coded; remove {}/*/{id} by hand if it is not wanted",
                    opened.store.root.display()
                )));
            }
        }
        .map_err(BackupError::from)?;
        let positions = code.suppliers();
        let mut deleter = wrap(LocalPackDeleter {
            store: opened.store.clone(),
            code,
        });
        let report = crate::prune::prune(
            repo,
            id,
            &kept,
            // Packs at least `grace` old (with 0, every one up to now).
            (opts.now + 1).saturating_sub(opts.grace),
            positions,
            &mut deleter,
        )?;
        let (unknown_files, unknown_bytes) = opened.store.sweep_unknown(
            repo,
            id,
            &kept,
            (opts.now + 1).saturating_sub(opts.grace),
        )?;
        out.push(Pruned {
            backup_id: id,
            prune: report,
            repack,
            repack_skipped,
            unknown_files,
            unknown_bytes,
        });
    }
    Ok(out)
}
