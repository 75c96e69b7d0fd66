//! Restoring a version: into a directory, or streamed back to the caller.

use super::*;

/// The largest piece of archive one restore event carries.
const ARCHIVE_CHUNK: usize = 1 << 20;

impl Agent {
    /// The caller's descriptor connection, when it makes one in time after
    /// it is offered (else the content streams).
    async fn fds_of(
        &self,
        caller: Caller,
        events: &mpsc::Sender<Result<pb::RestoreEvent, Status>>,
    ) -> Option<std::os::unix::net::UnixStream> {
        let (offer, mut waiting) = self.fds.offer(caller)?;
        let event = pb::RestoreEvent {
            kind: Some(pb::restore_event::Kind::FdOffer(offer)),
        };
        events.send(Ok(event)).await.ok()?;
        match tokio::time::timeout(super::fds::CONNECT_WAIT, &mut waiting.rx).await {
            Ok(Ok(conn)) => Some(conn),
            _ => {
                tracing::debug!(
                    "the caller did not connect to the descriptor socket; the content streams"
                );
                None
            }
        }
    }

    pub(super) async fn restore(
        self: Arc<Self>,
        caller: Caller,
        req: pb::RestoreRequest,
        events: mpsc::Sender<Result<pb::RestoreEvent, Status>>,
    ) -> Result<pb::RestoreDone, RestoreError> {
        // No target: stream the archive back for the caller to extract.
        let to = (!req.to.is_empty()).then(|| PathBuf::from(&req.to));
        if to.is_some() {
            caller.require_system(
                "restore into a directory as the agent; run bitdustctl restore, which extracts as you",
            )?;
        }
        if let Some(to) = &to
            && !to.is_absolute()
        {
            return Err(RestoreError::RelativeTarget(req.to));
        }
        let (id, version, rec) = self.select(caller, &req.backup_id, req.version)?;
        let _running = self.restores.start(caller).map_err(RestoreError::Busy)?;
        let master = self
            .keys
            .master_key()
            .map_err(|e| RestoreError::NoMasterKey(e.to_string()))?;
        if rec.snapshot.is_some() {
            let total = pb::Progress {
                bytes_done: 0,
                bytes_total: rec.input_bytes,
            };
            let _ = events
                .send(Ok(pb::RestoreEvent {
                    kind: Some(pb::restore_event::Kind::Progress(total)),
                }))
                .await;
            let fds = match to.is_none() && req.pass_fds {
                true => self.fds_of(caller, &events).await,
                false => None,
            };
            return self
                .restore_snapshot(id, version, to, req.include, master, events, rec.owner, fds)
                .await;
        }
        if !req.include.is_empty() {
            return Err(RestoreError::Failed {
                id,
                version,
                reason: "only a snapshot restores part of its tree; restore the whole version"
                    .into(),
            });
        }
        let counter = Arc::new(Counter(AtomicU64::new(0)));
        let total = rec.input_bytes;
        let progress = |p| pb::RestoreEvent {
            kind: Some(pb::restore_event::Kind::Progress(p)),
        };
        // Writing the files itself, the agent reports progress; streaming,
        // only the caller knows how far extraction got, so it learns the total.
        let ticker = match &to {
            Some(_) => Some(spawn_ticker(
                counter.clone(),
                total,
                events.clone(),
                progress,
            )),
            None => {
                let p = pb::Progress {
                    bytes_done: 0,
                    bytes_total: total,
                };
                let _ = events.send(Ok(progress(p))).await;
                None
            }
        };
        let me = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut src = me.source(id, version);
            let manifest =
                bitdust_pipeline::load_manifest(&mut src, &me.node_id()).map_err(|e| {
                    RestoreError::ManifestUnreadable {
                        id,
                        version,
                        reason: e.to_string(),
                    }
                })?;
            // No fragment is fetched (or allocated for) beyond what the
            // signed manifest allows.
            src.bound_by(&manifest, RestoreOptions::default().max_block_size);
            let key = BackupKey::unwrap_with(&manifest.wrapped_backup_key, master.age_identity())
                .map_err(|e| RestoreError::WrongKey {
                id,
                version,
                reason: e.to_string(),
            })?;
            let failed = |e: bitdust_pipeline::RestoreError| RestoreError::Failed {
                id,
                version,
                reason: e.to_string(),
            };
            let report = match &to {
                Some(to) => bitdust_pipeline::restore(
                    &mut src,
                    &manifest,
                    &key,
                    to,
                    &RestoreOptions::default(),
                    counter.as_ref(),
                )
                .map_err(failed)?,
                None => {
                    let mut emit = |plain: Vec<u8>| {
                        plain.chunks(ARCHIVE_CHUNK).all(|c| {
                            let ev = pb::RestoreEvent {
                                kind: Some(pb::restore_event::Kind::Archive(c.to_vec())),
                            };
                            events.blocking_send(Ok(ev)).is_ok()
                        })
                    };
                    bitdust_pipeline::restore_blocks(
                        &mut src,
                        &manifest,
                        &key,
                        &RestoreOptions::default(),
                        &mut emit,
                    )
                    .map_err(failed)?
                    .into()
                }
            };
            let left_out = (src.left_out_positions(), src.silent_positions());
            Ok::<_, RestoreError>((report, (src.fetched, src.hedged, left_out)))
        })
        .await
        .map_err(|e| RestoreError::Internal(e.to_string()))?;
        if let Some(t) = ticker {
            t.abort();
        }
        let (report, (fetched, read_around, (left_out, silent))) = result?;
        Ok(pb::RestoreDone {
            backup_id: id.to_string(),
            version,
            bytes: report.bytes,
            files: report.files as u32,
            fragments_fetched: fetched,
            fragments_read_around: read_around,
            positions_left_out: left_out.into_iter().map(|p| p as u32).collect(),
            positions_silent: silent.into_iter().map(|p| p as u32).collect(),
            blocks_repaired: report.decoded_blocks,
            stale_fragments: report.stale_fragments,
            warnings: report
                .skipped
                .into_iter()
                .chain(report.rejected_fragments)
                .collect(),
            ..Default::default()
        })
    }
}
