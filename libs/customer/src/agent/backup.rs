//! Backing up the archive a caller streams, as one reserved version.

use super::snapshot::GrpcLink;
use super::*;

/// What a caller streams: a tar archive, or a snapshot's entries.
pub(super) enum Input {
    Archive(StreamedArchive),
    Snapshot { raw: Vec<Vec<u8>>, link: GrpcLink },
}

impl Agent {
    pub(super) fn backup_options(&self) -> BackupOptions {
        let c = &self.config.customer;
        BackupOptions {
            scheme: self.code.scheme(),
            suppliers: self.code.suppliers(),
            zstd_level: c.zstd_level,
            block_size: c.block_size.0 as usize,
            max_block_size: bitdust_pipeline::DEFAULT_MAX_BLOCK_SIZE.max(c.block_size.0 as usize),
        }
    }

    /// Runs a backup of the archive `caller` streams, sending progress to
    /// `events`.
    pub(super) async fn backup(
        self: Arc<Self>,
        caller: Caller,
        mut stream: tonic::Streaming<pb::BackupInput>,
        events: mpsc::Sender<Result<pb::BackupEvent, Status>>,
    ) -> Result<pb::BackupDone, BackupError> {
        let start = caller::read_start(&mut stream).await?;
        if start.paths.is_empty() {
            return Err(BackupError::BadRequest(
                "name at least one path to back up".into(),
            ));
        }
        if let Some(why) = self.recovery() {
            return Err(BackupError::Recovering(why));
        }
        let _running = self.backups.start(caller).map_err(BackupError::Busy)?;
        let mut raw = start
            .paths
            .iter()
            .map(|p| caller::checked_path(p))
            .collect::<Result<Vec<_>, _>>()?;
        raw.sort();
        raw.dedup();
        let owner = caller.owner();
        let id = caller::backup_id(&self.node_id(), owner, &raw);
        if !lock(&self.running).insert(id) {
            return Err(BackupError::AlreadyRunning(id));
        }
        let input = if start.snapshot {
            let rx = caller::forward(stream, &self.rt, false);
            Input::Snapshot {
                raw,
                link: GrpcLink::new(rx, events.clone(), self.rt.clone()),
            }
        } else {
            Input::Archive(StreamedArchive::new(raw, stream, self.rt.clone()))
        };
        let result = self
            .clone()
            .backup_locked(id, owner, input, start.bytes_total, events)
            .await;
        lock(&self.running).remove(&id);
        result
    }

    pub(super) async fn backup_locked(
        self: Arc<Self>,
        id: BackupId,
        owner: Option<u32>,
        input: Input,
        total: u64,
        events: mpsc::Sender<Result<pb::BackupEvent, Status>>,
    ) -> Result<pb::BackupDone, BackupError> {
        let links = self.links();
        let hired = links.iter().flatten().count();
        let n = self.code.suppliers();
        let need = n - self.code.tolerance();
        if hired < need {
            return Err(BackupError::TooFewSuppliers {
                hired,
                positions: n,
                need,
            });
        }
        // Leftovers of failed attempts go from suppliers that are back.
        self.spawn_collector().map_err(BackupError::Upkeep)?;
        // A supplier that ended our service (it stored nothing for a while,
        // as before the first backup) is asked for it again first.
        self.reachability().await;
        let previous = self.state.versions_of(id).map_err(inner)?;
        // Record, then act: the version is reserved durably before the
        // first fragment leaves, so a retry after a failure (or a crash)
        // never writes under the failed attempt's names.
        let holders: Vec<String> = links
            .iter()
            .flatten()
            .map(|l| l.node_id.to_string())
            .collect();
        let version = {
            let mut attempting = lock(&self.attempting);
            let v = self
                .state
                .reserve_version(id, &holders, now(), 0)
                .map_err(inner)?;
            attempting.insert((id, v));
            v
        };
        let result = match input {
            Input::Archive(input) => {
                self.clone()
                    .backup_attempt(id, owner, version, input, total, &previous, links, events)
                    .await
            }
            Input::Snapshot { raw, link } => {
                self.clone()
                    .snapshot_attempt(
                        id, owner, version, raw, link, total, &previous, links, events,
                    )
                    .await
            }
        };
        // Committed to the catalog, or abandoned: either way no longer
        // running (an abandoned attempt is never committed later).
        lock(&self.attempting).remove(&(id, version));
        if result.is_err() {
            // The attempt's fragments are deleted now where possible, and
            // later from suppliers that were away.
            tokio::spawn(self.clone().collect_attempts());
        }
        result
    }

    /// One attempt at version `version` (already reserved) of backup `id`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn backup_attempt(
        self: Arc<Self>,
        id: BackupId,
        owner: Option<u32>,
        version: u64,
        mut input: StreamedArchive,
        total: u64,
        previous: &[(u64, VersionRecord)],
        links: Links,
        events: mpsc::Sender<Result<pb::BackupEvent, Status>>,
    ) -> Result<pb::BackupDone, BackupError> {
        // The backup key of the newest version, a full copy's or a
        // snapshot's (every version of a backup has one key).
        let (key, _, _) = self.snapshot_key(id, previous).await?;
        let paths: Vec<String> = input
            .source_paths()
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let counter = Arc::new(Counter(AtomicU64::new(0)));
        let ticker = spawn_ticker(counter.clone(), total, events.clone(), |p| {
            pb::BackupEvent {
                kind: Some(pb::backup_event::Kind::Progress(p)),
            }
        });
        let me = self.clone();
        let opts = self.backup_options();
        let result = tokio::task::spawn_blocking(move || {
            let mut sink = me.sink(links, id, version);
            bitdust_pipeline::backup(
                me.identity.clone(),
                &key,
                id,
                version,
                &mut input,
                &opts,
                &mut sink,
                counter.as_ref(),
            )
        })
        .await
        .map_err(inner)?;
        ticker.abort();
        let report = result.map_err(|e| BackupError::Failed(e.to_string()))?;
        let m = &report.manifest;
        let rec = VersionRecord {
            owner,
            paths,
            time: now(),
            input_bytes: report.content_bytes,
            stored_bytes: m.stored_bytes,
            blocks: m.blocks,
            files: report.files,
            scheme: m.scheme.to_string(),
            suppliers: m.suppliers as u32,
            supplier_set: self.supplier_set(),
            missing_positions: report
                .degraded_positions
                .iter()
                .map(|&p| p as u32)
                .collect(),
            snapshot: None,
        };
        self.state
            .commit_version(id, version, &rec)
            .map_err(inner)?;
        let prune = self.keep_versions(id).await?;
        let catalog_copies = self.upload_catalog().await.map_err(BackupError::Upkeep)?;
        tracing::info!(backup = %id, version, blocks = m.blocks, failed = ?report.degraded_positions, catalog_copies, "backup done");
        Ok(pb::BackupDone {
            backup_id: id.to_string(),
            version,
            input_bytes: report.content_bytes,
            stored_bytes: m.stored_bytes,
            blocks: m.blocks,
            files: report.files as u32,
            failed_positions: rec.missing_positions,
            warnings: report.skipped,
            pruned_versions: prune,
            ..Default::default()
        })
    }

    /// Deletes the oldest versions of `id` beyond the configured number;
    /// returns them.
    pub(super) async fn keep_versions(
        self: &Arc<Self>,
        id: BackupId,
    ) -> Result<Vec<u64>, BackupError> {
        let keep = self.config.customer.keep_versions as usize;
        let versions = self.state.versions_of(id).map_err(inner)?;
        let prune: Vec<u64> = if versions.len() > keep {
            versions[..versions.len() - keep]
                .iter()
                .map(|(v, _)| *v)
                .collect()
        } else {
            Vec::new()
        };
        self.delete_versions(id, &prune)
            .await
            .map_err(BackupError::Upkeep)?;
        Ok(prune)
    }
}

/// A failure of the agent itself (its catalog, a task), as a backup error.
fn inner(e: impl std::fmt::Display) -> BackupError {
    BackupError::Internal(e.to_string())
}
