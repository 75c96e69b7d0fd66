//! Deduplicated snapshots over the network (docs/snapshots.md): the
//! two-way backup stream, and restoring a snapshot from the suppliers.
//!
//! Packs are blocks of version 0 of the backup (never reserved, never
//! collected: a failed run's packs are reused by the next); a snapshot's
//! root is the manifest object of its own reserved version, so the
//! failed-attempt collector and `delete` remove a root and nothing else.

use std::io;

use bitdust_pipeline::remote::{CallerLink, FromCaller, RemoteEntries, ToCaller};
use bitdust_pipeline::snapshot::{
    self as snap, Entry, EntryKind, NodeSink, SnapshotError, SnapshotOptions,
};
use bitdust_proto::format::v1 as fpb;

use super::caller::{ARCHIVE_IDLE, cut_skipped};
use super::*;
use crate::state::SnapshotSummary;

/// The caller's end of a snapshot backup stream, for the writer's thread.
pub(super) struct GrpcLink {
    rx: mpsc::Receiver<Result<pb::backup_input::Kind, Status>>,
    events: mpsc::Sender<Result<pb::BackupEvent, Status>>,
    rt: Handle,
}

impl GrpcLink {
    pub(super) fn new(
        rx: mpsc::Receiver<Result<pb::backup_input::Kind, Status>>,
        events: mpsc::Sender<Result<pb::BackupEvent, Status>>,
        rt: Handle,
    ) -> Self {
        GrpcLink { rx, events, rt }
    }
}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// A caller's entry as the writer takes it; an unknown kind is refused.
fn entry_of(e: pb::Entry) -> io::Result<(u64, Entry)> {
    let kind = match fpb::NodeKind::try_from(e.kind) {
        Ok(fpb::NodeKind::File) => EntryKind::File,
        Ok(fpb::NodeKind::Directory) => EntryKind::Directory,
        Ok(fpb::NodeKind::Symlink) => EntryKind::Symlink(e.target),
        Ok(fpb::NodeKind::Fifo) => EntryKind::Fifo,
        Ok(fpb::NodeKind::CharDevice) => EntryKind::Device {
            block: false,
            rdev: e.rdev,
        },
        Ok(fpb::NodeKind::BlockDevice) => EntryKind::Device {
            block: true,
            rdev: e.rdev,
        },
        _ => {
            return Err(refused(format!(
                "entry {} has no kind the agent knows ({})",
                e.seq, e.kind
            )));
        }
    };
    let time = |secs, nanos: u32| bitdust_pipeline::repo::Time {
        secs,
        nanos: nanos.min(999_999_999),
    };
    let owner = match (e.uid, e.gid) {
        (Some(uid), Some(gid)) => Some(bitdust_pipeline::meta::Owner {
            uid,
            gid,
            user: e.user,
            group: e.group,
        }),
        _ => None,
    };
    Ok((
        e.seq,
        Entry {
            path: e.path,
            kind,
            mode: e.mode,
            mtime: time(e.mtime, e.mtime_nanos),
            ctime: time(e.ctime, e.ctime_nanos),
            size: e.size,
            ino: e.ino,
            dev: e.dev,
            atime: e.atime.map(|a| time(a, e.atime_nanos)),
            owner,
            xattrs: e.xattrs,
            nlink: e.nlink,
            holes: e.holes,
        },
    ))
}

impl CallerLink for GrpcLink {
    fn recv(&mut self) -> io::Result<Option<FromCaller>> {
        use pb::backup_input::Kind;
        let next = self
            .rt
            .block_on(async { tokio::time::timeout(ARCHIVE_IDLE, self.rx.recv()).await });
        match next {
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the caller sent nothing for {} s; no snapshot was made",
                    ARCHIVE_IDLE.as_secs()
                ),
            )),
            Ok(None) => Ok(None),
            Ok(Some(Err(s))) => Err(io::Error::other(format!(
                "the caller's stream broke ({}); no snapshot was made",
                s.message()
            ))),
            Ok(Some(Ok(Kind::Entries(b)))) => Ok(Some(FromCaller::Entries(
                b.entries
                    .into_iter()
                    .map(entry_of)
                    .collect::<io::Result<_>>()?,
            ))),
            Ok(Some(Ok(Kind::Content(c)))) => Ok(Some(FromCaller::Content {
                seq: c.seq,
                data: c.data,
                last: c.last,
                changed: c.changed,
            })),
            Ok(Some(Ok(Kind::End(e)))) => Ok(Some(FromCaller::End {
                skipped: cut_skipped(e.skipped),
            })),
            Ok(Some(Ok(Kind::Start(_)))) => Err(refused(
                "the caller sent a second start; a snapshot stream is start, entries and content, then end".into(),
            )),
            Ok(Some(Ok(Kind::Archive(_)))) => Err(refused(
                "the caller sent an archive piece in a snapshot stream; send entries, or start without snapshot".into(),
            )),
        }
    }

    fn send(&mut self, m: ToCaller) -> io::Result<()> {
        let kind = match m {
            ToCaller::Want(seq) => pb::backup_event::Kind::Want(seq),
            ToCaller::Taken(seq) => pb::backup_event::Kind::Taken(seq),
        };
        self.events
            .blocking_send(Ok(pb::BackupEvent { kind: Some(kind) }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the caller went away"))
    }
}

/// The catalog's summary of a snapshot run.
fn summary(report: &snap::SnapshotReport) -> SnapshotSummary {
    let s = &report.stats;
    SnapshotSummary {
        pack_ranges: report.packs.to_ranges(),
        packs: report.packs.len(),
        directories: s.directories,
        symlinks: s.symlinks,
        files_unchanged: s.files_unchanged,
        files_changed: s.files_changed,
        files_new: s.files_new,
        bytes_read: s.bytes_read,
        chunks_added: s.chunks_added,
        added_plain: s.added_plain,
        added_packed: s.added_packed,
        added_stored: s.added_stored,
        packs_added: s.packs_added,
        changed_while_read: s.changed_while_read,
        hard_links: s.hard_links,
        specials: s.specials,
        entries_reused: s.entries_reused,
    }
}

/// The counts of a summary, as the gRPC replies give them.
pub(super) fn stats_of(rec: &VersionRecord) -> Option<fpb::SnapshotStats> {
    let s = rec.snapshot.as_ref()?;
    Some(fpb::SnapshotStats {
        files: rec.files,
        directories: s.directories,
        symlinks: s.symlinks,
        content_bytes: rec.input_bytes,
        files_new: s.files_new,
        files_changed: s.files_changed,
        files_unchanged: s.files_unchanged,
        bytes_read: s.bytes_read,
        chunks_added: s.chunks_added,
        added_plain: s.added_plain,
        added_packed: s.added_packed,
        added_stored: s.added_stored,
        packs_added: s.packs_added,
        changed_while_read: s.changed_while_read,
        hard_links: s.hard_links,
        specials: s.specials,
        entries_reused: s.entries_reused,
    })
}

impl Agent {
    /// The backup key of backup `id` and the snapshot a new one follows
    /// (its number and root): from its newest version (a snapshot's root,
    /// or a full copy's manifest), or a new key.
    pub(super) async fn snapshot_key(
        self: &Arc<Self>,
        id: BackupId,
        previous: &[(u64, VersionRecord)],
    ) -> Result<(BackupKeyMaterial, u64, Option<bitdust_block::root::Root>), BackupError> {
        let Some((v, rec)) = previous.last() else {
            return Ok((
                BackupKeyMaterial::generate(self.keys.master_recipient())
                    .map_err(|e| BackupError::Internal(e.to_string()))?,
                0,
                None,
            ));
        };
        let (me, v, is_snapshot) = (self.clone(), *v, rec.snapshot.is_some());
        tokio::task::spawn_blocking(move || {
            let mut src = me.source(id, v);
            let unreadable = |reason: String| BackupError::PreviousUnreadable {
                id,
                version: v,
                reason,
            };
            let malformed =
                || BackupError::Internal(format!("the backup key in {id}@{v} is malformed"));
            if is_snapshot {
                let root = snap::best_root(&mut src, &me.node_id(), id, v).map_err(unreadable)?;
                let key = BackupKeyMaterial {
                    recipient: root
                        .root
                        .backup_recipient
                        .parse()
                        .map_err(|_| malformed())?,
                    wrapped: root.root.wrapped_backup_key.clone(),
                };
                Ok((key, v, Some(root)))
            } else {
                let m = bitdust_pipeline::load_manifest(&mut src, &me.node_id())
                    .map_err(|e| unreadable(e.to_string()))?;
                Ok((
                    BackupKeyMaterial::from_manifest(&m).ok_or_else(malformed)?,
                    0,
                    None,
                ))
            }
        })
        .await
        .map_err(|e| BackupError::Internal(e.to_string()))?
    }

    /// One snapshot attempt at version `version` (already reserved) of
    /// backup `id` of the source paths `raw`, fed by `link`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn snapshot_attempt(
        self: Arc<Self>,
        id: BackupId,
        owner: Option<u32>,
        version: u64,
        raw: Vec<Vec<u8>>,
        link: GrpcLink,
        total: u64,
        previous: &[(u64, VersionRecord)],
        links: Links,
        events: mpsc::Sender<Result<pb::BackupEvent, Status>>,
    ) -> Result<pb::BackupDone, BackupError> {
        let (key, parent, parent_root) = self.snapshot_key(id, previous).await?;
        // No pack number any snapshot in the catalog uses is handed out
        // again (the index may be new: a lost state, a recovered machine).
        let mut next_pack = previous
            .iter()
            .filter_map(|(_, r)| r.snapshot.as_ref())
            .flat_map(|s| s.pack_ranges.chunks_exact(2))
            .map(|r| r[0].saturating_add(r[1]))
            .max()
            .unwrap_or(0);
        // An index that has handed out no number yet (new, lost, or a
        // recovered machine) starts past every pack any supplier holds:
        // a run that failed before its snapshot was recorded stored packs
        // the catalog does not name, and a number used again would leave
        // a stale fragment of the old pack where a supplier is down now.
        let fresh = self
            .repo
            .next_pack(id)
            .map_err(|e| BackupError::Internal(e.to_string()))?
            == 0;
        if fresh {
            next_pack = next_pack.max(self.packs_held_past(id).await);
        }
        let counter = Arc::new(Counter(AtomicU64::new(0)));
        let ticker = spawn_ticker(counter.clone(), total, events.clone(), |p| {
            pb::BackupEvent {
                kind: Some(pb::backup_event::Kind::Progress(p)),
            }
        });
        let c = &self.config.customer;
        let opts = SnapshotOptions {
            scheme: self.code.scheme(),
            suppliers: self.code.suppliers(),
            zstd_level: c.zstd_level,
            pack_size: c.block_size.0 as usize,
            workers: c.workers as usize,
        };
        let me = self.clone();
        let paths = raw.clone();
        let roots_without_slash: Vec<Vec<u8>> = raw
            .iter()
            .map(|p| p.strip_prefix(b"/").unwrap_or(p).to_vec())
            .collect();
        let result = tokio::task::spawn_blocking(move || {
            me.repo
                .raise_next_pack(id, next_pack)
                .map_err(SnapshotError::from)?;
            // The parent's packs are indexed when the index does not know
            // them (read from their sealed lists, no master key needed), so
            // a lost index costs one read of them, not a second upload.
            if let Some(root) = &parent_root {
                let mut src = me.source(id, 0);
                let dedup = bitdust_crypto::DedupKeys::derive(&me.identity, &id.0);
                snap::rebuild_index(&me.repo, &mut src, root, &dedup)?;
            }
            let mut packs = me.sink(links.clone(), id, 0);
            let mut roots = me.sink(links, id, version);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let writer = snap::SnapshotWriter::new(
                &me.repo,
                me.identity.clone(),
                id,
                version,
                parent,
                paths,
                &key,
                opts,
                &mut packs,
                bitdust_pipeline::repo::Time {
                    secs: now.as_secs() as i64,
                    nanos: now.subsec_nanos(),
                },
            )?
            .with_progress(counter.as_ref());
            let mut entries = RemoteEntries::new(link, roots_without_slash);
            writer.write_all(&mut entries, &mut roots)
        })
        .await
        .map_err(|e| BackupError::Internal(e.to_string()))?;
        ticker.abort();
        let report = result.map_err(|e: SnapshotError| BackupError::Failed(e.to_string()))?;
        let stats = report.stats;
        // Positions owed by any pack the snapshot references (stored while
        // a position was down, in this run or an earlier one): the repair
        // follows the packs into every snapshot that shares them.
        let mut missing: Vec<u32> = report
            .degraded_positions
            .iter()
            .map(|&p| p as u32)
            .collect();
        for pack in report.packs.iter() {
            let owed = self
                .repo
                .pack(id, pack)
                .map_err(|e| BackupError::Internal(e.to_string()))?
                .map_or(0, |r| r.missing);
            for p in (0..64u32).filter(|p| owed & (1 << p) != 0) {
                if !missing.contains(&p) {
                    missing.push(p);
                }
            }
        }
        missing.sort_unstable();
        let rec = VersionRecord {
            owner,
            paths: raw
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
            time: now(),
            input_bytes: stats.content_bytes,
            stored_bytes: stats.added_stored,
            blocks: 0,
            files: stats.files,
            scheme: self.code.scheme().to_string(),
            suppliers: self.code.suppliers() as u32,
            supplier_set: self.supplier_set(),
            missing_positions: missing,
            snapshot: Some(summary(&report)),
        };
        self.state
            .commit_version(id, version, &rec)
            .map_err(|e| BackupError::Internal(e.to_string()))?;
        // Older snapshots beyond the configured number go, then the packs
        // no snapshot left references (those the newer ones share stay).
        let prune = self.keep_versions(id).await?;
        let pruned = self.prune_packs(id).await.map_err(BackupError::Upkeep)?;
        let catalog_copies = self.upload_catalog().await.map_err(BackupError::Upkeep)?;
        tracing::info!(backup = %id, version, packs_added = stats.packs_added, files_unchanged = stats.files_unchanged, failed = ?report.degraded_positions, catalog_copies, "snapshot done");
        Ok(pb::BackupDone {
            backup_id: id.to_string(),
            version,
            input_bytes: stats.content_bytes,
            stored_bytes: stats.added_stored,
            blocks: stats.packs_added,
            files: stats.files as u32,
            failed_positions: rec.missing_positions,
            warnings: report.skipped,
            pruned_versions: prune,
            snapshot: Some(stats),
            packs_deleted: pruned.packs_deleted,
            bytes_freed: pruned.bytes_freed,
            packs_pending: pruned.packs_pending,
            stages: Some(stage_times(&report.times)),
        })
    }

    /// Restores snapshot `version` of `id` into `to`, or streams its
    /// entries to the caller (`to` is `None`); a backup of user `owner` is
    /// confined to what that user could have made.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn restore_snapshot(
        self: Arc<Self>,
        id: BackupId,
        version: u64,
        to: Option<PathBuf>,
        include: Vec<Vec<u8>>,
        master: bitdust_crypto::MasterKey,
        events: mpsc::Sender<Result<pb::RestoreEvent, Status>>,
        owner: Option<u32>,
        fds: Option<std::os::unix::net::UnixStream>,
    ) -> Result<pb::RestoreDone, RestoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let failed = |reason: String| RestoreError::Failed {
                id,
                version,
                reason,
            };
            let mut roots = me.source(id, version);
            let root =
                snap::best_root(&mut roots, &me.node_id(), id, version).map_err(|reason| {
                    RestoreError::ManifestUnreadable {
                        id,
                        version,
                        reason,
                    }
                })?;
            let key = BackupKey::unwrap_with(&root.root.wrapped_backup_key, master.age_identity())
                .map_err(|e| RestoreError::WrongKey {
                    id,
                    version,
                    reason: e.to_string(),
                })?;
            let mut src = me.source(id, 0);
            let dedup = bitdust_crypto::DedupKeys::derive(&me.identity, &id.0);
            // Packs the index does not know (a recovered machine) are
            // indexed from their sealed lists first.
            snap::rebuild_index(&me.repo, &mut src, &root, &dedup)
                .map_err(|e| failed(e.to_string()))?;
            let mut packs = snap::PackReader::new(&mut src, &root, dedup, key)
                .map_err(|e| failed(e.to_string()))?
                .with_workers(me.config.customer.workers as usize);
            // A user's backup gives back only what that user could have
            // made, whoever restores it (docs/metadata.md, "Security").
            let confine = owner.map(snap::Confine::user);
            let mut in_place = 0;
            let report = match &to {
                Some(to) => snap::restore_snapshot_confined(
                    &me.repo,
                    &mut packs,
                    to,
                    &include,
                    snap::Owners::ByName,
                    confine,
                )
                .map_err(|e| failed(e.to_string()))?,
                None => {
                    let mut out = EventsOut {
                        events: &events,
                        report: snap::SnapshotRestoreReport::default(),
                        fds: fds.map(|c| (c, 0)),
                        written_in_place: 0,
                    };
                    let warning = match confine {
                        Some(rules) => {
                            let mut confined = snap::Confined::new(&mut out, rules);
                            snap::restore_snapshot_to(
                                &me.repo,
                                &mut packs,
                                &include,
                                &mut confined,
                            )
                            .map_err(|e| failed(e.to_string()))?;
                            confined.warning()
                        }
                        None => {
                            snap::restore_snapshot_to(&me.repo, &mut packs, &include, &mut out)
                                .map_err(|e| failed(e.to_string()))?;
                            None
                        }
                    };
                    in_place = out.written_in_place;
                    let mut r = out.report;
                    r.warnings.extend(warning);
                    r.packs_fetched = packs.fetched;
                    r.bytes_fetched = packs.bytes_fetched;
                    r
                }
            };
            drop(packs);
            Ok(pb::RestoreDone {
                backup_id: id.to_string(),
                version,
                bytes: report.bytes,
                files: report.files as u32,
                fragments_fetched: src.fetched,
                fragments_read_around: src.hedged,
                positions_left_out: src
                    .left_out_positions()
                    .into_iter()
                    .map(|p| p as u32)
                    .collect(),
                positions_silent: src
                    .silent_positions()
                    .into_iter()
                    .map(|p| p as u32)
                    .collect(),
                packs_fetched: report.packs_fetched,
                bytes_fetched: report.bytes_fetched,
                warnings: report.warnings,
                files_written_in_place: in_place,
                ..Default::default()
            })
        })
        .await
        .map_err(|e| RestoreError::Internal(e.to_string()))?
    }
}

fn stage_times(t: &bitdust_pipeline::stages::StageTimes) -> pb::StageTimes {
    pb::StageTimes {
        wall: t.wall,
        read_and_cut: t.read_and_cut,
        hash_index_pack: t.hash_index_pack,
        wait_compress: t.wait_compress,
        wait_store: t.wait_store,
        compress: t.compress,
        seal: t.seal,
        store: t.store,
        sync: t.sync,
    }
}

/// Deletes pack fragments at the suppliers.
struct NetPackDeleter {
    rt: Handle,
    links: Links,
    code: bitdust_ecc::Code,
}

impl bitdust_pipeline::prune::PackDeleter for NetPackDeleter {
    fn delete(&mut self, backup: BackupId, pack: u64, position: usize) -> bool {
        // A position with no supplier holds nothing (a supplier hired there
        // later gets only what the rebuilder regenerates).
        let Some(link) = self.links.get(position).cloned().flatten() else {
            return true;
        };
        let names = self
            .code
            .position_fragments(position)
            .into_iter()
            .map(|f| netio::fragment_object(backup, 0, pack, f))
            .collect();
        match self.rt.block_on(link.delete(names, "")) {
            Ok(_) => {
                crash_point("pack-deleted");
                true
            }
            Err(e) => {
                tracing::debug!(position, pack, error = %e, "a pack could not be deleted there now");
                false
            }
        }
    }
}

impl Agent {
    /// One past the highest pack number of backup `id` any supplier
    /// hired now holds a fragment of (0: none), from their listings, a page
    /// at a time.
    async fn packs_held_past(self: &Arc<Self>, id: BackupId) -> u64 {
        let prefix = netio::version_prefix(id, 0);
        let mut past = 0;
        for link in self.links().into_iter().flatten() {
            let mut after = String::new();
            loop {
                let Ok((page, more)) = link.list_page(&prefix, &after).await else {
                    tracing::debug!(supplier = %link.node_id, "cannot list its packs now");
                    break;
                };
                for o in &page {
                    if let Some(pack) = netio::pack_of(&prefix, &o.name) {
                        past = past.max(pack.saturating_add(1));
                    }
                }
                match page.last() {
                    Some(last) if more => after = last.name.clone(),
                    _ => break,
                }
            }
        }
        past
    }

    /// The packs the snapshots of `id` in the catalog reference.
    fn catalog_packs(&self, id: BackupId) -> Result<bitdust_pipeline::repo::PackSet, Status> {
        let mut kept = bitdust_pipeline::repo::PackSet::default();
        for (_, rec) in self.state.versions_of(id).map_err(internal)? {
            if let Some(s) = &rec.snapshot {
                let set = bitdust_pipeline::repo::PackSet::from_ranges(&s.pack_ranges, 1 << 28)
                    .ok_or_else(|| internal(format!("a snapshot of {id} names too many packs")))?;
                for p in set.iter() {
                    kept.insert(p);
                }
            }
        }
        Ok(kept)
    }

    /// Deletes the packs of snapshot backup `id` that no snapshot left in
    /// the catalog references (the caller holds the backup's run lock, so
    /// no run of it is writing packs). Packs some supplier could not delete
    /// now are asked again next time.
    pub(super) async fn prune_packs(
        self: &Arc<Self>,
        id: BackupId,
    ) -> Result<bitdust_pipeline::prune::PruneReport, Status> {
        let kept = self.catalog_packs(id)?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut deleter = NetPackDeleter {
                rt: me.rt.clone(),
                links: me.links(),
                code: me.code.clone(),
            };
            // Every unreferenced pack, however young: no run of this backup
            // is going on.
            bitdust_pipeline::prune::prune(
                &me.repo,
                id,
                &kept,
                u64::MAX,
                me.code.suppliers(),
                &mut deleter,
            )
            .map_err(internal)
        })
        .await
        .map_err(internal)?
    }

    /// Deletes at every supplier hired now the pack fragments of backup
    /// `id` that neither the index nor a snapshot in the catalog knows: a
    /// run killed between storing a pack and recording it leaves them
    /// (the caller holds the run lock, so no run is storing packs now).
    /// Reads the suppliers' listings a page at a time. Returns the
    /// objects and bytes deleted; a supplier that is away is swept at a
    /// later prune.
    pub(super) async fn sweep_unknown_packs(
        self: &Arc<Self>,
        id: BackupId,
    ) -> Result<(u64, u64), Status> {
        let kept = self.catalog_packs(id)?;
        let prefix = netio::version_prefix(id, 0);
        let (mut objects, mut bytes) = (0, 0);
        for link in self.links().into_iter().flatten() {
            let mut after = String::new();
            loop {
                let (page, more) = match link.list_page(&prefix, &after).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!(supplier = %link.node_id, error = %e, "cannot list its packs now");
                        break;
                    }
                };
                if let Some(last) = page.last() {
                    after = last.name.clone();
                }
                let mut unknown = Vec::new();
                for o in page {
                    let Some(pack) = netio::pack_of(&prefix, &o.name) else {
                        continue;
                    };
                    if !kept.contains(pack) && self.repo.pack(id, pack).map_err(internal)?.is_none()
                    {
                        bytes += o.size;
                        unknown.push(o.name);
                    }
                }
                if !unknown.is_empty() {
                    match link.delete(unknown, "").await {
                        Ok(n) => objects += n,
                        Err(e) => {
                            tracing::debug!(supplier = %link.node_id, error = %e, "cannot delete unknown packs there now");
                        }
                    }
                }
                if !more {
                    break;
                }
            }
        }
        Ok((objects, bytes))
    }
}

/// Streams a restored snapshot's entries to the caller, which writes them
/// as itself; large files' content goes into the descriptors it passes,
/// when it connected for that (with the number of the last one asked for).
struct EventsOut<'a> {
    events: &'a mpsc::Sender<Result<pb::RestoreEvent, Status>>,
    report: snap::SnapshotRestoreReport,
    fds: Option<(std::os::unix::net::UnixStream, u64)>,
    /// Files whose content went into a passed descriptor.
    written_in_place: u64,
}

/// The most content bytes in one restore message. gRPC copies each
/// message into a buffer of its size; one of a whole chunk (up to 4 MiB)
/// is a fresh mapping each time, a page fault per 4 KiB, where buffers of
/// 128 KiB come back from the heap (issue 19, session 24).
const RESTORE_PART: usize = 128 << 10;

impl EventsOut<'_> {
    fn send(&self, kind: pb::restore_event::Kind) -> Result<(), SnapshotError> {
        send_event(self.events, kind)
    }
}

/// Sends one restore event, waiting for room.
fn send_event(
    events: &mpsc::Sender<Result<pb::RestoreEvent, Status>>,
    kind: pb::restore_event::Kind,
) -> Result<(), SnapshotError> {
    events
        .blocking_send(Ok(pb::RestoreEvent { kind: Some(kind) }))
        .map_err(|_| SnapshotError::Format("the caller went away".into()))
}

impl NodeSink for EventsOut<'_> {
    fn node(
        &mut self,
        node: &fpb::Node,
        content: &mut dyn snap::Content,
    ) -> Result<(), SnapshotError> {
        snap::check_node(node).map_err(|why| {
            SnapshotError::Format(format!(
                "the entry /{} {why}",
                String::from_utf8_lossy(&node.path)
            ))
        })?;
        let mut plain = node.clone();
        plain.chunks.clear();
        self.send(pb::restore_event::Kind::Node(plain))?;
        match fpb::NodeKind::try_from(node.kind) {
            Ok(fpb::NodeKind::File) => self.report.files += 1,
            Ok(fpb::NodeKind::Directory) => self.report.directories += 1,
            Ok(fpb::NodeKind::Symlink) => self.report.symlinks += 1,
            _ => self.report.specials += 1,
        }
        let reading = |e: io::Error| {
            SnapshotError::Format(format!(
                "reading /{}: {e}",
                String::from_utf8_lossy(&node.path)
            ))
        };
        let mut left = snap::content_len(node);
        if let Some((conn, number)) = &mut self.fds
            && left >= super::fds::MIN_CONTENT
            && node.link.is_empty()
            && node.kind == fpb::NodeKind::File as i32
        {
            *number += 1;
            send_event(self.events, pb::restore_event::Kind::WantFd(*number))?;
            let passing = |e: io::Error| {
                SnapshotError::Format(format!(
                    "the file /{} could not be written where bitdustctl created it: {e}",
                    String::from_utf8_lossy(&node.path)
                ))
            };
            let events = self.events;
            // Declined (a file on FUSE or a network filesystem): its
            // content streams below.
            if let Some(file) =
                super::fds::receive(conn, *number, || events.is_closed()).map_err(passing)?
            {
                let n = snap::write_content(&file, &node.holes, content).map_err(passing)?;
                if n != left {
                    return Err(reading(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("its chunks hold {n} bytes where its size says {left}"),
                    )));
                }
                self.report.bytes += n;
                self.written_in_place += 1;
                return send_event(self.events, pb::restore_event::Kind::Written(n));
            }
        }
        // The chunks go out as they come, in slices of at most
        // RESTORE_PART bytes (slices of the chunk, not copies).
        while left > 0 {
            let max = left.min(RESTORE_PART as u64) as usize;
            let part = content.next_part(max).map_err(reading)?.ok_or_else(|| {
                reading(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "its chunks end before its size",
                ))
            })?;
            left -= part.len() as u64;
            self.report.bytes += part.len() as u64;
            self.send(pb::restore_event::Kind::Content(part))?;
        }
        Ok(())
    }
}
