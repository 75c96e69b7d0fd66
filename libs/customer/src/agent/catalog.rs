//! The catalog as a caller sees it: which versions, which one, deleting.

use super::*;

impl Agent {
    /// The versions `caller` may see, in catalog order.
    pub(super) fn visible_versions(
        &self,
        caller: Caller,
    ) -> Result<Vec<(BackupId, u64, VersionRecord)>, SelectError> {
        let mut all = self
            .state
            .versions()
            .map_err(|e| SelectError::Catalog(e.to_string()))?;
        all.retain(|(_, _, r)| caller.may_see(r.owner));
        Ok(all)
    }

    /// Resolves a backup id (hex or unique prefix; empty: the only backup)
    /// and a version (0: the newest) among the versions `caller` may see.
    pub(super) fn select(
        &self,
        caller: Caller,
        id: &str,
        version: u64,
    ) -> Result<(BackupId, u64, VersionRecord), SelectError> {
        let all = self.visible_versions(caller)?;
        let ids: BTreeMap<BackupId, ()> = all.iter().map(|(b, _, _)| (*b, ())).collect();
        let matching: Vec<BackupId> = ids
            .keys()
            .filter(|b| b.to_string().starts_with(&id.to_ascii_lowercase()))
            .copied()
            .collect();
        let bid = match matching.as_slice() {
            [one] => *one,
            [] if all.is_empty() => return Err(SelectError::NoBackups),
            [] => return Err(SelectError::NoSuchBackup(id.to_owned())),
            _ => {
                return Err(SelectError::Ambiguous {
                    given: id.to_owned(),
                    count: matching.len(),
                });
            }
        };
        let versions: Vec<(u64, VersionRecord)> = all
            .into_iter()
            .filter(|(b, _, _)| *b == bid)
            .map(|(_, v, r)| (v, r))
            .collect();
        let found = if version == 0 {
            versions.into_iter().next_back()
        } else {
            versions.into_iter().find(|(v, _)| *v == version)
        };
        let (v, rec) = found.ok_or(SelectError::NoSuchVersion { id: bid, version })?;
        Ok((bid, v, rec))
    }

    /// Deletes versions from the catalog and from every supplier: each is
    /// retired (out of the catalog, its objects pending at every supplier
    /// hired now) in one transaction, then the attempt collector deletes
    /// them; a supplier that is away is asked again at the next check.
    pub(super) async fn delete_versions(
        self: &Arc<Self>,
        id: BackupId,
        versions: &[u64],
    ) -> Result<(), Status> {
        let nodes: Vec<String> = self
            .links()
            .iter()
            .flatten()
            .map(|l| l.node_id.to_string())
            .collect();
        for &v in versions {
            self.state
                .retire_version(id, v, &nodes, now())
                .map_err(internal)?;
        }
        if !versions.is_empty() {
            crash_point("retired");
            self.clone().collect_attempts().await;
        }
        Ok(())
    }

    /// Every backup `caller` may see, with its versions.
    pub(super) fn list(&self, caller: Caller) -> Result<pb::ListReply, Status> {
        let mut by_id: BTreeMap<BackupId, pb::BackupInfo> = BTreeMap::new();
        for (id, v, r) in self.visible_versions(caller)? {
            let entry = by_id.entry(id).or_insert_with(|| pb::BackupInfo {
                backup_id: id.to_string(),
                owner: caller::owner_label(r.owner),
                paths: r.paths.clone(),
                versions: Vec::new(),
            });
            entry.versions.push(pb::VersionInfo {
                version: v,
                time: r.time,
                input_bytes: r.input_bytes,
                stored_bytes: r.stored_bytes,
                blocks: r.blocks,
                scheme: r.scheme.clone(),
                suppliers: r.suppliers,
                missing_fragments: r.missing_positions.len() as u64 * r.owed_blocks(),
                missing_positions: r.missing_positions.clone(),
                snapshot: super::snapshot::stats_of(&r),
                packs: r.snapshot.as_ref().map_or(0, |s| s.packs),
                pack_ranges: r
                    .snapshot
                    .as_ref()
                    .map(|s| s.pack_ranges.clone())
                    .unwrap_or_default(),
            });
        }
        Ok(pb::ListReply {
            backups: by_id.into_values().collect(),
        })
    }

    /// Deletes one version of a backup `caller` may see, or every version
    /// (`version` 0), from the suppliers and the catalog.
    pub(super) async fn delete(
        self: &Arc<Self>,
        caller: Caller,
        req: pb::DeleteRequest,
    ) -> Result<pb::DeleteReply, Status> {
        let (id, _, _) = self.select(caller, &req.backup_id, req.version)?;
        let versions: Vec<u64> = if req.version == 0 {
            self.state
                .versions_of(id)
                .map_err(internal)?
                .into_iter()
                .map(|(v, _)| v)
                .collect()
        } else {
            vec![req.version]
        };
        // Held while deleting: no run of the backup may reuse a pack the
        // prune below deletes.
        let _held = self.hold(id, "delete")?;
        self.delete_versions(id, &versions).await?;
        // Then the packs no snapshot left references.
        let pruned = self.prune_packs(id).await?;
        self.upload_catalog().await?;
        Ok(pb::DeleteReply {
            deleted_versions: versions,
            packs_deleted: pruned.packs_deleted,
            bytes_freed: pruned.bytes_freed,
            packs_pending: pruned.packs_pending,
        })
    }
}
