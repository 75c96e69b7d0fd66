//! The snapshot commands beyond backup and restore (`ls`, `diff`, `stats`,
//! `check`, `forget`, `prune`) over the suppliers: the agent is a
//! [`SnapshotStore`], so each runs the same code as `bitdustctl local`
//! (`bitdust_pipeline::store`), with the roots and packs fetched from the
//! suppliers and the catalog naming the snapshots.

use bitdust_pipeline::FragmentSink;
use bitdust_pipeline::forget::{Policy, Undecided, Within};
use bitdust_pipeline::local::LocalError;
use bitdust_pipeline::repo::{PackState, Repo};
use bitdust_pipeline::snapshot::{self as snap, Change};
use bitdust_pipeline::store::{self, RepackStore, SnapshotStore};
use bitdust_proto::format::v1 as fpb;

use super::*;

/// Entries per `LsReply`.
const LS_BATCH: usize = 256;

/// The agent's backups as a [`SnapshotStore`] (used on a blocking
/// thread: its sources and sinks block on the runtime), with the first
/// position that did not answer a ping just before, if any.
struct Suppliers<'a>(&'a Agent, Option<usize>, Roots);

/// The roots one command read from the suppliers, so that a command that
/// visits a snapshot several times (`check`, `stats`) fetches its root
/// once. A repack's rewrite replaces the one it rewrote.
#[derive(Default)]
struct Roots(Mutex<std::collections::HashMap<(BackupId, u64), bitdust_block::root::Root>>);

impl SnapshotStore for Suppliers<'_> {
    fn place(&self) -> String {
        "the suppliers".into()
    }

    fn snapshots(&self, id: BackupId) -> Result<Vec<u64>, LocalError> {
        Ok(self
            .0
            .state
            .versions_of(id)
            .map_err(|e| LocalError::Store(e.to_string()))?
            .into_iter()
            .filter(|(_, r)| r.snapshot.is_some())
            .map(|(v, _)| v)
            .collect())
    }

    fn root(&self, id: BackupId, n: u64) -> Result<bitdust_block::root::Root, LocalError> {
        if let Some(r) = lock(&self.2.0).get(&(id, n)) {
            return Ok(r.clone());
        }
        let r = snap::best_root(&mut self.0.source(id, n), &self.0.node_id(), id, n)
            .map_err(LocalError::Store)?;
        lock(&self.2.0).insert((id, n), r.clone());
        Ok(r)
    }

    fn backup_key(&self, root: &bitdust_block::root::Root) -> Result<BackupKey, LocalError> {
        let master = self.0.keys.master_key()?;
        BackupKey::unwrap_with(&root.root.wrapped_backup_key, master.age_identity()).map_err(|e| {
            LocalError::Store(format!(
                "the backup key of {}@{} does not open with this master key: {e}",
                root.backup_id, root.root.snapshot
            ))
        })
    }

    fn dedup(&self, id: BackupId) -> bitdust_crypto::DedupKeys {
        bitdust_crypto::DedupKeys::derive(&self.0.identity, &id.0)
    }

    fn packs(&self, id: BackupId) -> Box<dyn bitdust_pipeline::FragmentSource + '_> {
        Box::new(self.0.source(id, 0))
    }

    fn content_bytes(&self, id: BackupId, n: u64) -> Result<u64, LocalError> {
        // The catalog has it: no root fetched.
        self.0
            .state
            .versions_of(id)
            .map_err(|e| LocalError::Store(e.to_string()))?
            .into_iter()
            .find(|(v, _)| *v == n)
            .map(|(_, r)| r.input_bytes)
            .ok_or_else(|| LocalError::Store(format!("{id}@{n} is not in the catalog")))
    }

    /// From the suppliers' listings (a page at a time, every position in
    /// step, in pack order): a fragment is there when its supplier lists it
    /// at least as long as the pack's payload share. Reading every
    /// fragment would download the whole backup; `--read-data-subset`
    /// reads the packs it chooses.
    fn pack_health(
        &self,
        repo: &Repo,
        root: &bitdust_block::root::Root,
        packs: &bitdust_pipeline::repo::PackSet,
    ) -> Result<(snap::PackVerifyReport, bool), LocalError> {
        let id = root.backup_id;
        let code = bitdust_ecc::Code::new(root.scheme, root.root.suppliers as usize)
            .map_err(|e| LocalError::Store(e.to_string()))?;
        let prefix = netio::version_prefix(id, 0);
        let links = self.0.links();
        let mut cursors: Vec<Listing> = (0..code.suppliers())
            .map(|p| Listing {
                link: links.get(p).cloned().flatten(),
                page: std::collections::VecDeque::new(),
                after: String::new(),
                more: true,
                failed: None,
            })
            .collect();
        let mut health = bitdust_pipeline::HealthOf::default();
        let mut report = snap::PackVerifyReport {
            packs: Vec::new(),
            rejected_fragments: Vec::new(),
        };
        for pack in packs.iter() {
            let share = repo.pack(id, pack)?.map(|r| {
                code.fragment_len(usize::try_from(r.body_len).unwrap_or(usize::MAX)) as u64
            });
            let mut present = vec![false; code.fragment_count()];
            for (position, c) in cursors.iter_mut().enumerate() {
                while let Some((p, f, size)) = c.next_at_most(&self.0.rt, &prefix, pack) {
                    if p < pack {
                        continue;
                    }
                    if f < code.fragment_count() && code.fragment_position(f) == position {
                        match share {
                            Some(share) if size < share => report.rejected_fragments.push(format!(
                                "pack {pack} fragment {f} at position {position}: {size} bytes listed, fewer than its {share}"
                            )),
                            _ => present[f] = true,
                        }
                    }
                }
            }
            report.packs.push(health.of_present(&code, pack, present));
        }
        for (position, c) in cursors.iter().enumerate() {
            if let Some(why) = &c.failed {
                report
                    .rejected_fragments
                    .push(format!("position {position} could not be listed: {why}"));
            }
        }
        Ok((report, true))
    }

    fn stored_bytes(&self, repo: &Repo, id: BackupId) -> Result<u64, LocalError> {
        // The fragment payloads of the live packs, at every position.
        let code = &self.0.code;
        let mut total = 0u64;
        repo.for_each_pack(id, |_, rec| {
            if rec.state == PackState::Live {
                let len = usize::try_from(rec.body_len).unwrap_or(usize::MAX);
                total += (code.fragment_len(len) * code.fragment_count()) as u64;
            }
            Ok(())
        })?;
        Ok(total)
    }
}

impl RepackStore for Suppliers<'_> {
    fn identity(&self) -> Arc<Identity> {
        self.0.identity.clone()
    }

    fn missing_position(&self, positions: usize) -> Option<usize> {
        if positions != self.0.code.suppliers() {
            // Another code than the agent's: its sinks cannot write it.
            return Some(0);
        }
        self.1
    }

    fn pack_sink(&self, id: BackupId, _: &bitdust_ecc::Code) -> Box<dyn FragmentSink + '_> {
        Box::new(self.0.sink(self.0.links(), id, 0))
    }

    /// The catalog names every pack a root names before the root does (a
    /// pack the catalog does not name may be pruned): packs added go into
    /// the catalog first, packs dropped leave it after every supplier took
    /// the new root. Every supplier must take it, or the repack stops.
    fn rewrite_root(
        &self,
        root: &bitdust_block::root::Root,
        packs: &bitdust_pipeline::repo::PackSet,
    ) -> Result<(), LocalError> {
        let (id, n) = (root.backup_id, root.root.snapshot);
        // Read again after this, at its new revision.
        lock(&self.2.0).remove(&(id, n));
        let store_err = |e: &dyn std::fmt::Display| LocalError::Store(e.to_string());
        let (_, mut rec) = self
            .0
            .state
            .versions_of(id)
            .map_err(|e| store_err(&e))?
            .into_iter()
            .find(|(v, _)| *v == n)
            .ok_or_else(|| {
                LocalError::Store(format!("{id}@{n} left the catalog while repacking"))
            })?;
        let Some(summary) = rec.snapshot.as_mut() else {
            return Err(LocalError::Store(format!("{id}@{n} is not a snapshot")));
        };
        let before = bitdust_pipeline::repo::PackSet::from_ranges(&summary.pack_ranges, 1 << 28)
            .unwrap_or_default();
        let adds = packs.iter().any(|p| !before.contains(p));
        summary.pack_ranges = packs.to_ranges();
        summary.packs = packs.len();
        if adds {
            self.0
                .state
                .put_version(id, n, &rec)
                .map_err(|e| store_err(&e))?;
            crash_point("catalog-added");
        }
        let bytes = store::signed_revision(&self.0.identity, root, packs);
        let failed = self
            .0
            .sink(self.0.links(), id, n)
            .commit(&bytes)
            .map_err(|e| store_err(&e))?;
        if !failed.is_empty() {
            return Err(LocalError::Store(format!(
                "positions {failed:?} did not take the new root of {id}@{n}; the repack stopped there, prune again when every supplier answers"
            )));
        }
        crash_point("root-rewritten");
        if !adds {
            self.0
                .state
                .put_version(id, n, &rec)
                .map_err(|e| store_err(&e))?;
        }
        Ok(())
    }
}

/// One supplier's listing of a backup's packs, read a page at a time.
struct Listing {
    link: Option<Arc<crate::client::SupplierLink>>,
    /// (pack, fragment, size) in name order.
    page: std::collections::VecDeque<(u64, usize, u64)>,
    after: String,
    more: bool,
    failed: Option<String>,
}

impl Listing {
    /// The next listed fragment of a pack numbered at most `pack`, taken
    /// off the listing; `None` once the next is past it or none is left.
    fn next_at_most(&mut self, rt: &Handle, prefix: &str, pack: u64) -> Option<(u64, usize, u64)> {
        while self.page.is_empty() && self.more {
            self.more = false;
            let link = self.link.as_ref()?;
            match rt.block_on(link.list_page(prefix, &self.after)) {
                Ok((objects, more)) => {
                    self.more = more;
                    if let Some(last) = objects.last() {
                        self.after = last.name.clone();
                    }
                    self.page.extend(objects.into_iter().filter_map(|o| {
                        let pack = netio::pack_of(prefix, &o.name)?;
                        let f = o.name.rsplit_once(".f")?.1.parse().ok()?;
                        Some((pack, f, o.size))
                    }));
                }
                Err(e) => self.failed = Some(e.to_string()),
            }
        }
        match self.page.front() {
            Some(&(p, _, _)) if p <= pack => self.page.pop_front(),
            _ => None,
        }
    }
}

/// A shared command's failure as the status bitdustctl shows.
fn failed(e: LocalError) -> Status {
    match e {
        LocalError::Keys(e) => Status::failed_precondition(format!(
            "{e}; this needs the master key at the customer-agent"
        )),
        e => Status::failed_precondition(e.to_string()),
    }
}

/// A node as `ls` and `diff` send it: without its chunk ids.
fn bare(node: &fpb::Node) -> fpb::Node {
    let mut n = node.clone();
    n.chunks.clear();
    n
}

impl Agent {
    /// The snapshot backup `caller` names (any version), refused for a
    /// full copy.
    fn snapshot_backup(
        &self,
        caller: Caller,
        id: &str,
        version: u64,
    ) -> Result<(BackupId, u64), Status> {
        let (id, v, rec) = self.select(caller, id, version)?;
        if rec.snapshot.is_none() {
            return Err(Status::failed_precondition(format!(
                "{id}@{v} is a full copy, not a snapshot; this command works on snapshots (back up again without --full-copy)"
            )));
        }
        Ok((id, v))
    }

    /// Runs `f` with the agent as a [`SnapshotStore`] on a blocking thread.
    async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Suppliers<'_>, &Repo) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        self.with_store_down(None, f).await
    }

    /// [`Agent::with_store`], with `down` the first position that did not
    /// answer (for a repack, which writes).
    async fn with_store_down<T: Send + 'static>(
        self: &Arc<Self>,
        down: Option<usize>,
        f: impl FnOnce(&Suppliers<'_>, &Repo) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            f(&Suppliers(me.as_ref(), down, Roots::default()), &me.repo)
        })
        .await
        .map_err(internal)?
    }

    /// `ls`: streams the entries of a snapshot in batches.
    pub(super) async fn ls(
        self: &Arc<Self>,
        caller: Caller,
        req: pb::LsRequest,
        out: mpsc::Sender<Result<pb::LsReply, Status>>,
    ) -> Result<(), Status> {
        let (id, v) = self.snapshot_backup(caller, &req.backup_id, req.version)?;
        let _running = self
            .listings
            .start(caller)
            .map_err(Status::resource_exhausted)?;
        self.with_store(move |s, _| {
            let mut batch = Vec::new();
            let send = |nodes: Vec<fpb::Node>| {
                out.blocking_send(Ok(pb::LsReply {
                    backup_id: id.to_string(),
                    version: v,
                    nodes,
                }))
                .map_err(|_| LocalError::Store("the caller went away".into()))
            };
            store::ls(s, id, v, &req.path, |n| {
                batch.push(bare(n));
                if batch.len() >= LS_BATCH {
                    send(std::mem::take(&mut batch))?;
                }
                Ok(())
            })
            .map_err(failed)?;
            send(batch).map_err(failed)
        })
        .await
    }

    /// `diff`: streams the changes between two snapshots of one backup,
    /// then the summary.
    pub(super) async fn diff(
        self: &Arc<Self>,
        caller: Caller,
        req: pb::DiffRequest,
        out: mpsc::Sender<Result<pb::DiffEvent, Status>>,
    ) -> Result<pb::DiffDone, Status> {
        if req.from == 0 || req.to == 0 {
            return Err(Status::invalid_argument(
                "diff needs two snapshots of one backup, as ID@A ID@B",
            ));
        }
        let (id, a) = self.snapshot_backup(caller, &req.backup_id, req.from)?;
        let (_, b) = self.snapshot_backup(caller, &id.to_string(), req.to)?;
        let _running = self
            .listings
            .start(caller)
            .map_err(Status::resource_exhausted)?;
        self.with_store(move |s, _| {
            let (_, _, unchanged) = store::diff(s, (id, a), (id, b), |c| {
                let (before, after) = match c {
                    Change::Added(n) => (None, Some(bare(&n))),
                    Change::Removed(n) => (Some(bare(&n)), None),
                    Change::Modified { before, after } => (Some(bare(&before)), Some(bare(&after))),
                };
                out.blocking_send(Ok(pb::DiffEvent {
                    kind: Some(pb::diff_event::Kind::Change(pb::DiffChange {
                        before,
                        after,
                    })),
                }))
                .map_err(|_| LocalError::Store("the caller went away".into()))
            })
            .map_err(failed)?;
            Ok(pb::DiffDone {
                backup_id: id.to_string(),
                from: a,
                to: b,
                unchanged,
            })
        })
        .await
    }

    /// `stats` of a snapshot backup.
    pub(super) async fn stats(
        self: &Arc<Self>,
        caller: Caller,
        req: pb::StatsRequest,
    ) -> Result<pb::StatsReply, Status> {
        let (id, _) = self.snapshot_backup(caller, &req.backup_id, 0)?;
        let s = self
            .with_store(move |s, repo| store::stats(s, repo, id).map_err(failed))
            .await?;
        Ok(s.into())
    }

    /// `check` of a snapshot backup.
    pub(super) async fn check(
        self: &Arc<Self>,
        caller: Caller,
        req: pb::CheckRequest,
    ) -> Result<pb::CheckReply, Status> {
        let subset = match req.read_data_subset.as_str() {
            "" => None,
            s => Some(
                s.parse::<store::DataSubset>()
                    .map_err(Status::invalid_argument)?,
            ),
        };
        let (id, _) = self.snapshot_backup(caller, &req.backup_id, 0)?;
        let r = self
            .with_store(move |s, repo| store::check(s, repo, id, subset).map_err(failed))
            .await?;
        Ok(r.into())
    }

    /// `forget`: the keep rules (or one version) applied to the snapshots
    /// of a backup; unless a dry run, the forgotten versions are deleted
    /// and their packs pruned, under the backup's run lock.
    pub(super) async fn forget(
        self: &Arc<Self>,
        caller: Caller,
        req: pb::ForgetRequest,
    ) -> Result<pb::ForgetReply, Status> {
        let (id, _) = self.snapshot_backup(caller, &req.backup_id, 0)?;
        let within = match req.keep_within.as_str() {
            "" => None,
            w => Some(w.parse::<Within>().map_err(Status::invalid_argument)?),
        };
        let policy = Policy {
            last: req.keep_last,
            hourly: req.keep_hourly,
            daily: req.keep_daily,
            weekly: req.keep_weekly,
            monthly: req.keep_monthly,
            yearly: req.keep_yearly,
            within,
        };
        let only = (req.version != 0).then_some(req.version);
        if only.is_some() && !policy.is_empty() {
            return Err(Status::invalid_argument(
                "give either a snapshot (ID@VERSION) or --keep-* rules, not both",
            ));
        }
        let _held = self.hold(id, "forget")?;
        let snapshots: Vec<(u64, i64)> = self
            .state
            .versions_of(id)
            .map_err(internal)?
            .into_iter()
            .filter(|(_, r)| r.snapshot.is_some())
            .map(|(v, r)| (v, i64::try_from(r.time).unwrap_or(i64::MAX)))
            .collect();
        let decisions =
            bitdust_pipeline::forget::decide(&policy, &snapshots, only).map_err(|e| match e {
                Undecided::NoSuchSnapshot(n) => Status::not_found(format!(
                    "backup {id} has no snapshot {n}; see `bitdustctl list`"
                )),
                Undecided::NoPolicy => {
                    Status::invalid_argument(bitdust_pipeline::forget::NO_POLICY)
                }
            })?;
        let gone: Vec<u64> = decisions
            .iter()
            .filter(|d| d.kept_by.is_empty())
            .map(|d| d.snapshot)
            .collect();
        let mut prune = None;
        if !req.dry_run {
            self.delete_versions(id, &gone).await?;
            prune = Some(prune_reply(&self.prune_packs(id).await?));
            self.upload_catalog().await?;
        }
        Ok(pb::ForgetReply {
            backup_id: id.to_string(),
            decisions: decisions
                .into_iter()
                .map(|d| pb::ForgetDecision {
                    version: d.snapshot,
                    kept_by: d.kept_by.iter().map(|r| r.to_string()).collect(),
                })
                .collect(),
            dry_run: req.dry_run,
            prune,
        })
    }

    /// `prune`: deletes the objects of deleted versions that suppliers
    /// still hold, then the packs no snapshot references, then the pack
    /// fragments nothing knows, of one backup, or of every snapshot backup
    /// `caller` may see.
    pub(super) async fn prune(
        self: &Arc<Self>,
        caller: Caller,
        req: pb::PruneRequest,
    ) -> Result<pb::PruneReply, Status> {
        let every = req.backup_id.is_empty();
        let ids: Vec<BackupId> = if every {
            let mut ids: Vec<BackupId> = self
                .visible_versions(caller)?
                .into_iter()
                .filter(|(_, _, r)| r.snapshot.is_some())
                .map(|(id, _, _)| id)
                .collect();
            ids.sort();
            ids.dedup();
            ids
        } else {
            vec![self.snapshot_backup(caller, &req.backup_id, 0)?.0]
        };
        // The objects of deleted versions a supplier that was away still
        // holds go first.
        self.clone().collect_attempts().await;
        let mut total = pb::PruneReply::default();
        for id in ids {
            let _held = match self.hold(id, "prune") {
                Ok(h) => h,
                // Pruning every backup, one that is running now waits for
                // the next prune; the others go on.
                Err(_) if every => {
                    total.busy.push(id.to_string());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let repacked = match req.max_unused.filter(|m| m.is_finite()) {
                Some(share) if share < 1.0 => Some({
                    let down = self
                        .reachability()
                        .await
                        .iter()
                        .position(|r| !matches!(r, Some(Ok(_))));
                    self.with_store_down(down, move |s, repo| {
                        let opts = store::RepackOptions {
                            now: now(),
                            pack_size: s.0.config.customer.block_size.0 as usize,
                            stop_after_steps: None,
                            after_step: Some(|| crash_point("repack-step")),
                        };
                        match store::repack(s, repo, id, share, &opts) {
                            Ok(done) => Ok(done),
                            Err(LocalError::Keys(e)) => {
                                Ok((store::RepackReport::default(), Some(e.to_string())))
                            }
                            Err(e) => Err(failed(e)),
                        }
                    })
                    .await?
                }),
                _ => {
                    total.repack_skipped = "not asked for".into();
                    None
                }
            };
            if let Some((r, skipped)) = repacked {
                total.data_bytes += r.data_bytes;
                total.unused_before += r.unused_before;
                total.unused_after += r.unused_after;
                total.packs_repacked += r.packs_repacked;
                total.packs_written += r.packs_written;
                total.chunks_moved += r.chunks_moved;
                total.bytes_moved += r.bytes_moved;
                if let Some(why) = skipped {
                    total.repack_skipped = why;
                }
                self.upload_catalog().await?;
            }
            let r = prune_reply(&self.prune_packs(id).await?);
            let (objects, bytes) = self.sweep_unknown_packs(id).await?;
            total.unknown_objects_deleted += objects;
            total.unknown_bytes_freed += bytes;
            total.packs_condemned += r.packs_condemned;
            total.chunks_dropped += r.chunks_dropped;
            total.packs_deleted += r.packs_deleted;
            total.bytes_freed += r.bytes_freed;
            total.packs_pending += r.packs_pending;
        }
        Ok(total)
    }

    /// Holds the run lock of backup `id` while the guard lives: no run of
    /// it may store packs a prune is deleting.
    pub(super) fn hold(&self, id: BackupId, what: &str) -> Result<Held<'_>, Status> {
        if !lock(&self.running).insert(id) {
            return Err(Status::aborted(format!(
                "backup {id} is running; {what} it after it finishes"
            )));
        }
        Ok(Held(self, id))
    }
}

/// The run lock of one backup, released on drop.
pub(super) struct Held<'a>(&'a Agent, BackupId);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        lock(&self.0.running).remove(&self.1);
    }
}

fn prune_reply(r: &bitdust_pipeline::prune::PruneReport) -> pb::PruneReply {
    pb::PruneReply {
        packs_condemned: r.packs_condemned,
        chunks_dropped: r.chunks_dropped,
        packs_deleted: r.packs_deleted,
        bytes_freed: r.bytes_freed,
        packs_pending: r.packs_pending,
        repack_skipped: "not asked for (bitdustctl prune repacks)".into(),
        ..Default::default()
    }
}
