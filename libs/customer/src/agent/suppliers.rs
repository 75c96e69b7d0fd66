//! Hiring and firing suppliers, and asking them who is there.

use super::errors::{FireError, HireError, PositionError};
use super::*;

/// `position` if it exists and is free, or the first free position when
/// `None`; the error says what to do otherwise.
pub(super) fn free_position(links: &Links, position: Option<u32>) -> Result<u32, PositionError> {
    let n = links.len();
    match position {
        Some(p) if p as usize >= n => Err(PositionError::NoSuch {
            position: p,
            last: n - 1,
        }),
        Some(p) if links[p as usize].is_some() => Err(PositionError::Held(p)),
        Some(p) => Ok(p),
        None => links
            .iter()
            .position(Option::is_none)
            .map(|p| p as u32)
            .ok_or(PositionError::Full(n)),
    }
}

impl Agent {
    /// Binds a supplier to a position after it accepted our service request.
    pub async fn hire(
        &self,
        address: &str,
        position: Option<u32>,
    ) -> Result<pb::SupplierInfo, HireError> {
        if let Some(why) = self.recovery() {
            return Err(HireError::Recovering(why));
        }
        let (pinned, addr) = parse_address(address).map_err(HireError::BadAddress)?;
        let n = self.code.suppliers();
        let node_id = match pinned {
            Some(id) => id,
            None => SupplierLink::discover(&self.endpoint, &addr, self.timeout)
                .await
                .map_err(|e| HireError::Unreachable {
                    address: addr.clone(),
                    reason: e.to_string(),
                })?,
        };
        if node_id == self.node_id() {
            return Err(HireError::Itself);
        }
        let position = {
            let links = lock(&self.links);
            if let Some(p) = links
                .iter()
                .position(|l| l.as_ref().is_some_and(|l| l.node_id == node_id))
            {
                return Err(HireError::AlreadyHired {
                    node_id: node_id.to_string(),
                    position: p,
                });
            }
            free_position(&links, position)?
        };
        let link = Arc::new(SupplierLink::new(
            self.endpoint.clone(),
            node_id,
            addr.clone(),
            self.timeout,
        ));
        let needed = self.config.customer.needed_space.0;
        let accepted = link
            .request_service(needed, n as u32)
            .await
            .map_err(|e| match e {
                PeerError::Refused { message, .. } => HireError::Refused {
                    node_id: node_id.to_string(),
                    address: addr.clone(),
                    message,
                },
                other => HireError::Unreachable {
                    address: addr.clone(),
                    reason: other.to_string(),
                },
            })?;
        let rec = PositionRecord {
            node_id: node_id.to_string(),
            address: addr.clone(),
            hired_at: now(),
            quota: accepted.quota_bytes,
        };
        // Another hire may have taken the position, or this supplier, while
        // the service request was on its way.
        let clash = {
            let mut links = lock(&self.links);
            if links.iter().flatten().any(|l| l.node_id == node_id) {
                // The other hire holds the same service: leave it be.
                return Err(HireError::Raced(format!(
                    "supplier {node_id} was hired at another position meanwhile"
                )));
            }
            if links[position as usize].is_some() {
                Some(format!(
                    "position {position} was taken by another hire meanwhile; try again"
                ))
            } else {
                self.state
                    .set_position(position, &rec)
                    .map_err(|e| HireError::Catalog(e.to_string()))?;
                links[position as usize] = Some(link.clone());
                None
            }
        };
        if let Some(why) = clash {
            // Nobody else holds this supplier: end the service just asked for.
            let _ = link.cancel_service().await;
            return Err(HireError::Raced(why));
        }
        netio::record(&self.state, position as usize, Ok(()));
        self.list_changed.notify_one();
        tracing::info!(position, supplier = %node_id, %addr, quota = accepted.quota_bytes, "hired a supplier");
        Ok(pb::SupplierInfo {
            position,
            node_id: node_id.to_string(),
            address: addr,
            reachable: true,
            last_seen: now(),
            quota_bytes: accepted.quota_bytes,
            used_bytes: accepted.used_bytes,
            ..Default::default()
        })
    }

    /// Ends the service of the supplier at `position`.
    pub async fn fire(&self, position: u32) -> Result<pb::FireSupplierReply, FireError> {
        if let Some(why) = self.recovery() {
            return Err(FireError::Recovering(why));
        }
        let link = lock(&self.links)
            .get(position as usize)
            .cloned()
            .flatten()
            .ok_or(FireError::NotHeld(position))?;
        // Record, then act: the position is unbound and missing in every
        // version (one transaction) before the supplier deletes anything.
        let t = now();
        self.state.fire_position(
            position,
            &link.node_id.to_string(),
            t,
            t.saturating_sub(FIRED_MEMORY_SECS),
        )?;
        lock(&self.links)[position as usize] = None;
        let deleted = match link.cancel_service().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(position, error = %e, "the fired supplier did not confirm; its objects may stay there");
                0
            }
        };
        link.reset().await;
        self.list_changed.notify_one();
        tracing::info!(position, supplier = %link.node_id, "fired a supplier");
        Ok(pb::FireSupplierReply {
            node_id: link.node_id.to_string(),
            objects_deleted: deleted,
        })
    }

    /// Pings every hired supplier; which answered.
    pub(super) async fn reachability(
        &self,
    ) -> Vec<Option<Result<bitdust_proto::peer::v1::Pong, PeerError>>> {
        let links = self.links();
        let mut set = tokio::task::JoinSet::new();
        for (p, l) in links.iter().enumerate() {
            if let Some(l) = l.clone() {
                set.spawn(async move { (p, netio::ping_pong(&l).await) });
            }
        }
        let mut out = vec![None; links.len()];
        while let Some(Ok((p, r))) = set.join_next().await {
            netio::record(&self.state, p, r.as_ref().map(|_| ()));
            if let Ok(pong) = &r {
                let used = pong.used_bytes;
                let _ = self.state.update_stats(p as u32, |s| s.used = used);
            }
            out[p] = Some(r);
        }
        self.renew_ended(&links, &out).await;
        out
    }

    /// Asks again for the service of every supplier whose answer says it
    /// serves us no more (a quota of 0): a supplier ends a service that
    /// stores nothing for a while, as an agent's is until its first backup.
    async fn renew_ended(
        &self,
        links: &Links,
        pongs: &[Option<Result<bitdust_proto::peer::v1::Pong, PeerError>>],
    ) {
        let needed = self.config.customer.needed_space.0;
        let n = self.code.suppliers() as u32;
        let mut set = tokio::task::JoinSet::new();
        for (p, r) in pongs.iter().enumerate() {
            if let (Some(Ok(pong)), Some(Some(l))) = (r, links.get(p))
                && pong.quota_bytes == 0
            {
                let l = l.clone();
                set.spawn(async move { (p, l.node_id, l.request_service(needed, n).await) });
            }
        }
        while let Some(Ok((p, node, r))) = set.join_next().await {
            match r {
                Ok(a) => {
                    tracing::info!(position = p, supplier = %node, quota = a.quota_bytes, "renewed the service the supplier had ended (it stored nothing yet)");
                }
                Err(e) => {
                    tracing::warn!(position = p, supplier = %node, error = %e, "the supplier no longer serves us and refused to again");
                }
            }
        }
    }

    /// This agent, its suppliers and the backups `caller` may see, in
    /// numbers.
    pub(super) async fn status(&self, caller: Caller) -> Result<pb::StatusReply, Status> {
        let reach = self.reachability().await;
        let versions = self.visible_versions(caller)?;
        let backups: HashSet<BackupId> = versions.iter().map(|(b, _, _)| *b).collect();
        Ok(pb::StatusReply {
            node_id: self.node_id().to_string(),
            positions: self.code.suppliers() as u32,
            hired: self.links().iter().flatten().count() as u32,
            reachable: reach.iter().filter(|r| matches!(r, Some(Ok(_)))).count() as u32,
            needed_bytes: self.config.customer.needed_space.0,
            backups: backups.len() as u32,
            versions: versions.len() as u32,
            missing_fragments: versions
                .iter()
                .map(|(_, _, r)| r.missing_positions.len() as u64 * r.owed_blocks())
                .sum(),
            scheme: self.code.scheme().to_string(),
            tolerance: self.code.tolerance() as u32,
            recovering: self.is_recovering(),
            recovery: lock(&self.recovery).clone().unwrap_or_default(),
        })
    }
}
