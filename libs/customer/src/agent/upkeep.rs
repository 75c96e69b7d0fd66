//! What the rebuilder asks of the agent: checks of the suppliers (pings and
//! audits, recorded in the statistics) and the record of repaired positions.

use bitdust_block::BackupId;
use std::future::Future;

use rand::Rng;

use super::*;

impl Agent {
    /// The suppliers with their statistics; `reach` as from a ping of all.
    pub(super) fn supplier_infos(
        &self,
        reach: &[Option<Result<bitdust_proto::peer::v1::Pong, PeerError>>],
    ) -> Result<Vec<pb::SupplierInfo>, Status> {
        let mut out = Vec::new();
        let links = self.links();
        for (p, rec) in self.state.positions().map_err(internal)? {
            let s = self.state.stats(p).map_err(internal)?;
            let path = match links.get(p as usize).and_then(|l| l.as_ref()?.route()) {
                None => String::new(),
                Some(None) => "direct".into(),
                Some(Some(router)) => format!("router {router}"),
            };
            out.push(pb::SupplierInfo {
                position: p,
                node_id: rec.node_id,
                address: rec.address,
                reachable: matches!(reach.get(p as usize), Some(Some(Ok(_)))),
                last_seen: s.last_seen,
                failures: s.failures,
                audits_passed: s.audits_passed,
                audits_failed: s.audits_failed,
                quota_bytes: rec.quota,
                used_bytes: s.used,
                last_error: s.last_error,
                failures_in_a_row: s.failures_in_a_row,
                hired_at: rec.hired_at,
                path,
            });
        }
        Ok(out)
    }

    /// Starts [`Agent::collect_attempts`] on its own task when any attempt
    /// is recorded.
    pub(super) fn spawn_collector(self: &Arc<Self>) -> Result<(), Status> {
        if !self.state.attempts().map_err(internal)?.is_empty() {
            tokio::spawn(self.clone().collect_attempts());
        }
        Ok(())
    }

    /// Deletes the fragments of attempts that never made it into the
    /// catalog (failed, or cut by a crash) from the suppliers that may
    /// hold them, skipping attempts running now. A supplier that is away is
    /// asked again at a later call; one no longer hired holds nothing of
    /// ours. Returns the suppliers that confirmed a deletion.
    pub async fn collect_attempts(self: Arc<Self>) -> usize {
        let (attempts, running) = {
            let attempting = lock(&self.attempting);
            match self.state.attempts() {
                Ok(a) => (a, attempting.clone()),
                Err(e) => {
                    tracing::warn!("cannot read the failed backup attempts: {e}");
                    return 0;
                }
            }
        };
        let links = self.links();
        let mut set = tokio::task::JoinSet::new();
        for (id, version, rec) in attempts {
            if running.contains(&(id, version)) {
                continue;
            }
            for node in rec.pending {
                let link = links
                    .iter()
                    .flatten()
                    .find(|l| l.node_id.to_string() == node)
                    .cloned();
                set.spawn(async move {
                    let done = match link {
                        None => true,
                        Some(l) => l
                            .delete(Vec::new(), &netio::version_prefix(id, version))
                            .await
                            .is_ok(),
                    };
                    (id, version, node, done)
                });
            }
        }
        let mut cleaned = 0;
        while let Some(Ok((id, version, node, done))) = set.join_next().await {
            if done {
                cleaned += 1;
                if let Err(e) = self.state.attempt_cleaned(id, version, &node) {
                    tracing::warn!("cannot record a cleaned attempt: {e}");
                }
            } else {
                tracing::debug!(backup = %id, version, supplier = %node, "the fragments of a failed attempt could not be deleted there yet");
            }
        }
        if cleaned > 0 {
            tracing::info!(
                suppliers = cleaned,
                "deleted the fragments of failed backup attempts"
            );
        }
        cleaned
    }

    /// Pings every supplier and, with `audit`, audits each that answered.
    pub async fn check_suppliers(
        self: &Arc<Self>,
        audit: bool,
    ) -> Result<pb::ListSuppliersReply, Status> {
        self.spawn_collector()?;
        let reach = self.reachability().await;
        if audit {
            let mut set = tokio::task::JoinSet::new();
            for (p, r) in reach.iter().enumerate() {
                if matches!(r, Some(Ok(_)))
                    && let Some(job) = self.audit_job(p)?
                {
                    set.spawn(job);
                }
            }
            while let Some(Ok((p, outcome))) = set.join_next().await {
                match outcome {
                    Ok(()) => {
                        let _ = self.state.update_stats(p as u32, |s| s.audits_passed += 1);
                    }
                    Err(AuditFailure::Failed(why)) => {
                        tracing::warn!(position = p, "supplier failed an audit: {why}");
                        let _ = self.state.update_stats(p as u32, |s| {
                            s.audits_failed += 1;
                            s.last_error = format!("audit failed: {why}");
                        });
                    }
                    // Unreachable now: the pings count that, not the audit.
                    Err(AuditFailure::Unreachable) => {}
                }
            }
        }
        Ok(pb::ListSuppliersReply {
            positions: self.code.suppliers() as u32,
            suppliers: self.supplier_infos(&reach)?,
        })
    }

    /// An audit of position `p`: one random block of one random version
    /// it should hold, its data fragment fetched and checked against the
    /// block's signed header. `None` when it should hold nothing yet.
    fn audit_job(
        &self,
        p: usize,
    ) -> Result<Option<impl Future<Output = AuditOutcome> + use<>>, Status> {
        let Some(link) = self.links().get(p).cloned().flatten() else {
            return Ok(None);
        };
        let held: Vec<(BackupId, u64, VersionRecord)> = self
            .state
            .versions()
            .map_err(internal)?
            .into_iter()
            .filter(|(_, _, r)| {
                r.owed_blocks() > 0
                    && !r.missing_positions.contains(&(p as u32))
                    && r.supplier_set
                        .get(p)
                        .is_some_and(|s| *s == link.node_id.to_string())
            })
            .collect();
        if held.is_empty() {
            return Ok(None);
        }
        let mut rng = rand::rng();
        let (id, version, rec) = held[rng.random_range(0..held.len())].clone();
        // A snapshot's blocks are its packs: blocks of version 0.
        let (version, block) = match &rec.snapshot {
            Some(s) => match netio::nth_pack(&s.pack_ranges, rng.random_range(0..s.packs)) {
                Some(pack) => (0, pack),
                None => return Ok(None),
            },
            None => (version, rng.random_range(0..rec.blocks)),
        };
        let Ok(code) = rec
            .scheme
            .parse::<Scheme>()
            .map_err(|_| ())
            .and_then(|s| Code::new(s, rec.suppliers as usize).map_err(|_| ()))
        else {
            return Ok(None);
        };
        let f = code.position_fragments(p)[0];
        let customer = self.node_id();
        let state = self.state.clone();
        Ok(Some(async move {
            let name = netio::fragment_object(id, version, block, f);
            let r = match link.get(&name, MAX_FRAGMENT_OBJECT).await {
                Ok(Some(bytes)) => {
                    bitdust_block::check_fragment(&bytes, &customer, id, version, block, f, None)
                        .map(|_| ())
                        .map_err(|e| AuditFailure::Failed(format!("{name}: {e}")))
                }
                Ok(None) => Err(AuditFailure::Failed(format!("it lost {name}"))),
                Err(e @ PeerError::Unreachable(_)) => {
                    netio::record(&state, p, Err(&e));
                    Err(AuditFailure::Unreachable)
                }
                Err(e) => Err(AuditFailure::Failed(format!("{name}: {e}"))),
            };
            (p, r)
        }))
    }

    /// Records that the supplier `node_id` at `position` holds every
    /// fragment of `position` of the version.
    pub fn mark_repaired(&self, req: &pb::MarkRepairedRequest) -> Result<Vec<u32>, Status> {
        let id: BackupId = req.backup_id.parse().map_err(|_| {
            Status::invalid_argument(format!("{:?} is not a backup id", req.backup_id))
        })?;
        let missing = self
            .state
            .mark_repaired(id, req.version, req.position, &req.node_id)
            .map_err(catalog_status)?;
        // A snapshot's packs no longer owe the position: later snapshots
        // that share them do not inherit the repair.
        if let Some(rec) = self
            .state
            .versions_of(id)
            .map_err(internal)?
            .into_iter()
            .find(|(v, _)| *v == req.version)
            .map(|(_, r)| r)
            && let Some(s) = rec.snapshot
            && req.position < 64
        {
            for r in s.pack_ranges.chunks_exact(2) {
                for pack in r[0]..r[0].saturating_add(r[1]) {
                    self.repo
                        .repaired(id, pack, 1 << req.position)
                        .map_err(internal)?;
                }
            }
        }
        Ok(missing)
    }
}

/// The position audited and how it went.
type AuditOutcome = (usize, Result<(), AuditFailure>);

/// Why an audit did not pass.
enum AuditFailure {
    /// The supplier did not answer (counted by the pings).
    Unreachable,
    /// It answered wrongly, or lost the fragment.
    Failed(String),
}
