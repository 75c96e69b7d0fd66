//! The agent's side of the network without a central server: hiring
//! suppliers found through the DHT, publishing its supplier list under its
//! own id, storing its catalog (encrypted to its master key) on its
//! suppliers, and recovering all of that from the key alone.

use std::collections::HashSet;
use std::time::Duration;

use bitdust_block::BackupId;
use bitdust_crypto::NodeId;
use bitdust_proto::dht::v1 as dpb;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::errors::HireError;
use super::suppliers::free_position;
use super::*;

/// Random lookups a hire from the DHT makes before giving up.
const HIRE_ROUNDS: u32 = 6;
/// Offers asked for per lookup.
const OFFERS_PER_ROUND: u32 = 16;
/// Service requests sent per lookup.
const TRIES_PER_ROUND: usize = 3;
/// The catalog object on every supplier.
pub const CATALOG_OBJECT: &str = "catalog";
/// The largest catalog read back.
const MAX_CATALOG: usize = 64 << 20;

/// The catalog as stored on the suppliers (JSON, then age-encrypted to the
/// customer's master key).
#[derive(Serialize, Deserialize)]
struct Catalog {
    format: u32,
    customer: String,
    /// Bumped on every upload; the newest copy wins.
    generation: u64,
    positions: u32,
    versions: Vec<CatalogEntry>,
    /// The next version each backup may reserve: a recovered agent never
    /// reuses the number of an attempt that failed before the loss.
    #[serde(default)]
    next_versions: Vec<(String, u64)>,
}

#[derive(Serialize, Deserialize)]
struct CatalogEntry {
    backup_id: String,
    version: u64,
    record: VersionRecord,
}

impl Agent {
    /// Hires a supplier found through the DHT for `position` (or the first
    /// free one): looks up random points of the key space, picks random
    /// offers found there with room for our share, and sends each a service
    /// request until one accepts; gives up after a bounded number of
    /// lookups with an error saying what was tried.
    pub async fn hire_from_dht(
        &self,
        position: Option<u32>,
    ) -> Result<pb::SupplierInfo, HireError> {
        let n = self.code.suppliers();
        free_position(&lock(&self.links), position)?;
        let share = self.config.customer.needed_space.0 * 2 / n as u64;
        let mut tried: HashSet<NodeId> = self.links().iter().flatten().map(|l| l.node_id).collect();
        tried.insert(self.node_id());
        // Suppliers fired lately are not taken back.
        let since = now().saturating_sub(FIRED_MEMORY_SECS);
        for id in self
            .state
            .fired_since(since)
            .map_err(|e| HireError::Catalog(e.to_string()))?
        {
            if let Ok(id) = id.parse() {
                tried.insert(id);
            }
        }
        let (mut seen, mut asked, mut last) = (0usize, 0usize, String::new());
        for round in 0..HIRE_ROUNDS {
            let mut offers: Vec<_> = self
                .dht
                .offers(OFFERS_PER_ROUND)
                .await
                .map_err(|s| HireError::Dht(s.message().to_owned()))?
                .into_iter()
                .filter(|o| !tried.contains(&o.node_id))
                .collect();
            seen += offers.len();
            offers.retain(|o| o.offer.accepting && o.offer.free_bytes >= share);
            offers.shuffle(&mut rand::rng());
            for o in offers.into_iter().take(TRIES_PER_ROUND) {
                tried.insert(o.node_id);
                asked += 1;
                let mut addr = format!("{}@{}", o.node_id, o.offer.address);
                for r in &o.offer.routers {
                    addr.push_str(" via ");
                    addr.push_str(r);
                }
                match self.hire(&addr, position).await {
                    Ok(info) => return Ok(info),
                    Err(e) if e.is_request_error() => return Err(e),
                    Err(e) => {
                        tracing::debug!(supplier = %o.node_id, error = %e, "an offered supplier did not take us");
                        last = e.to_string();
                    }
                }
            }
            if round + 1 < HIRE_ROUNDS {
                tokio::time::sleep(Duration::from_millis(250 << round.min(4))).await;
            }
        }
        let last = if last.is_empty() {
            String::new()
        } else {
            format!(" (the last refusal: {last})")
        };
        Err(HireError::NoOffer {
            rounds: HIRE_ROUNDS,
            seen,
            asked,
            share,
            last,
        })
    }

    /// Fills every free position that the config does not reserve for a
    /// listed supplier with suppliers from the DHT; retries (5 s, doubling
    /// up to 5 min) until every position is held.
    pub async fn fill_from_dht(self: Arc<Self>) {
        let reserved = self.config.customer.supplier_addresses.len();
        let mut delay = Duration::from_secs(5);
        loop {
            let free: Vec<u32> = self
                .links()
                .iter()
                .enumerate()
                .filter(|(p, l)| l.is_none() && *p >= reserved)
                .map(|(p, _)| p as u32)
                .collect();
            if free.is_empty() {
                return;
            }
            let mut failed = false;
            for p in free {
                match self.hire_from_dht(Some(p)).await {
                    Ok(s) => {
                        tracing::info!(position = p, supplier = %s.node_id, "hired a supplier found in the DHT")
                    }
                    Err(e) if e.is_no_position() => {}
                    Err(e) => {
                        tracing::warn!(position = p, retry_in = ?delay, "cannot hire a supplier from the DHT yet: {e}");
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(300));
            }
        }
    }

    /// The supplier list as published.
    fn supplier_list(&self) -> dpb::SupplierList {
        dpb::SupplierList {
            positions: self.code.suppliers() as u32,
            slots: self
                .links()
                .iter()
                .enumerate()
                .filter_map(|(p, l)| {
                    l.as_ref().map(|l| dpb::SupplierSlot {
                        position: p as u32,
                        node_id: l.node_id.as_bytes().to_vec(),
                        address: l.address.clone(),
                    })
                })
                .collect(),
        }
    }

    /// Publishes the supplier list now and whenever it changes, and
    /// re-signs it daily; retries every 5 s while the dht-peer is not there.
    pub async fn keep_list_published(self: Arc<Self>) {
        let mut warned = false;
        loop {
            let list = self.supplier_list();
            // Nothing is published under this id while recovering: the list
            // in the DHT is the only pointer to the old backups.
            if list.slots.is_empty() || self.is_recovering() {
                self.list_changed.notified().await;
                continue;
            }
            let last = self.state.meta("list_sequence").ok().flatten().unwrap_or(0);
            let seq = bitdust_dht::record::now().max(last + 1);
            match self.dht.publish_list(&self.identity, seq, &list).await {
                Ok(n) => {
                    let _ = self.state.set_meta("list_sequence", seq);
                    warned = false;
                    tracing::info!(
                        suppliers = list.slots.len(),
                        stored_on = n,
                        "published the supplier list in the DHT"
                    );
                    let _ = tokio::time::timeout(
                        Duration::from_secs(24 * 3600),
                        self.list_changed.notified(),
                    )
                    .await;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(
                            "cannot publish the supplier list yet (retrying every 5 s): {}",
                            e.message()
                        );
                        warned = true;
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), self.list_changed.notified())
                            .await;
                }
            }
        }
    }

    /// Stores the catalog, encrypted to the master key, on every hired
    /// supplier. Best effort: a supplier that misses one gets the next.
    pub async fn upload_catalog(&self) -> Result<usize, Status> {
        let generation = self
            .state
            .meta("catalog_generation")
            .map_err(internal)?
            .unwrap_or(0)
            + 1;
        self.state
            .set_meta("catalog_generation", generation)
            .map_err(internal)?;
        let catalog = Catalog {
            format: 1,
            customer: self.node_id().to_string(),
            generation,
            positions: self.code.suppliers() as u32,
            versions: self
                .state
                .versions()
                .map_err(internal)?
                .into_iter()
                .map(|(id, version, record)| CatalogEntry {
                    backup_id: id.to_string(),
                    version,
                    record,
                })
                .collect(),
            next_versions: self
                .state
                .next_versions()
                .map_err(internal)?
                .into_iter()
                .map(|(id, next)| (id.to_string(), next))
                .collect(),
        };
        if catalog.versions.is_empty() {
            // Nothing to recover: no catalog is left behind either.
            let mut set = tokio::task::JoinSet::new();
            for l in self.links().into_iter().flatten() {
                set.spawn(async move { l.delete(vec![CATALOG_OBJECT.to_owned()], "").await });
            }
            while set.join_next().await.is_some() {}
            return Ok(0);
        }
        let json = serde_json::to_vec(&catalog).map_err(internal)?;
        let mut sealed = Vec::new();
        bitdust_crypto::seal_into(
            self.keys.master_recipient().age_recipient(),
            &json,
            &mut sealed,
        )
        .map_err(internal)?;
        let sealed = Arc::new(sealed);
        let mut set = tokio::task::JoinSet::new();
        for l in self.links().into_iter().flatten() {
            let sealed = sealed.clone();
            set.spawn(async move { (l.node_id, l.put(CATALOG_OBJECT, &sealed).await) });
        }
        let mut stored = 0;
        while let Some(Ok((who, r))) = set.join_next().await {
            match r {
                Ok(_) => stored += 1,
                Err(e) => {
                    tracing::warn!(supplier = %who, error = %e, "could not store the catalog there")
                }
            }
        }
        Ok(stored)
    }

    /// A fresh machine holding only the exported key: finds this customer's
    /// supplier list in the DHT, binds those suppliers again, and reads the
    /// newest catalog back from them. Returns the versions recovered.
    pub async fn recover(&self) -> Result<usize, RecoverError> {
        let catalog = |e: crate::state::StateError| RecoverError::Catalog(e.to_string());
        let me = self.node_id();
        let (seq, list) = self
            .dht
            .find_list(&me)
            .await
            .map_err(RecoverError::Dht)?
            .ok_or_else(|| RecoverError::NoList(me.to_string()))?;
        let n = self.code.suppliers();
        if list.positions as usize != n {
            return Err(RecoverError::Positions {
                listed: list.positions,
                configured: n,
            });
        }
        self.state.set_meta("list_sequence", seq).map_err(catalog)?;
        for slot in &list.slots {
            let (Ok(id), p) = (
                NodeId::try_from(slot.node_id.as_slice()),
                slot.position as usize,
            ) else {
                continue;
            };
            if p >= n || lock(&self.links)[p].is_some() {
                continue;
            }
            let rec = PositionRecord {
                node_id: id.to_string(),
                address: slot.address.clone(),
                hired_at: now(),
                quota: 0,
            };
            self.state.set_position(p as u32, &rec).map_err(catalog)?;
            lock(&self.links)[p] = Some(Arc::new(SupplierLink::new(
                self.endpoint.clone(),
                id,
                slot.address.clone(),
                self.timeout,
            )));
        }
        let master = self
            .keys
            .master_key()
            .map_err(|e| RecoverError::NoMasterKey(e.to_string()))?;
        let mut set = tokio::task::JoinSet::new();
        for l in self.links().into_iter().flatten() {
            set.spawn(async move { l.get(CATALOG_OBJECT, MAX_CATALOG as u64 + 4096).await });
        }
        let mut best: Option<Catalog> = None;
        while let Some(Ok(r)) = set.join_next().await {
            let Ok(Some(sealed)) = r else { continue };
            let Ok(json) = bitdust_crypto::open(master.age_identity(), &sealed, MAX_CATALOG) else {
                tracing::warn!("a supplier's catalog copy does not decrypt with this key; skipped");
                continue;
            };
            let Ok(c) = serde_json::from_slice::<Catalog>(&json) else {
                continue;
            };
            if c.customer == me.to_string()
                && best.as_ref().is_none_or(|b| c.generation > b.generation)
            {
                best = Some(c);
            }
        }
        let found = best.ok_or(RecoverError::NoCatalog)?;
        self.state
            .set_meta("catalog_generation", found.generation)
            .map_err(catalog)?;
        for (id, next) in &found.next_versions {
            if let Ok(id) = id.parse::<BackupId>() {
                self.state.raise_next_version(id, *next).map_err(catalog)?;
            }
        }
        let mut n_versions = 0;
        for e in found.versions {
            if let Ok(id) = e.backup_id.parse::<BackupId>() {
                self.state
                    .put_version(id, e.version, &e.record)
                    .map_err(catalog)?;
                n_versions += 1;
            }
        }
        self.list_changed.notify_one();
        Ok(n_versions)
    }

    /// At start: recovers while recovering (see [`RECOVERING`]), then hires
    /// the listed suppliers and fills the rest from the DHT, and keeps the
    /// supplier list published. Recovery is retried (5 s, doubling up to a
    /// minute) until it finds the supplier list and a catalog, or until the
    /// user gives it up ([`Agent::start_afresh`]); until then nothing is
    /// hired or published, so the only pointer to the old backups is never
    /// replaced.
    pub async fn start_network(self: Arc<Self>) {
        tokio::spawn(self.clone().keep_list_published());
        let mut delay = Duration::from_secs(5);
        while self.is_recovering() {
            match self.recover().await {
                Ok(n) => {
                    let mut recovery = lock(&self.recovery);
                    if recovery.is_some() {
                        if let Err(e) = self.state.set_meta(RECOVERING, 0) {
                            tracing::warn!("cannot record the end of recovery: {e}");
                        }
                        *recovery = None;
                    }
                    drop(recovery);
                    self.list_changed.notify_one();
                    tracing::info!(
                        versions = n,
                        "recovered the supplier set and the catalog from the DHT and the suppliers"
                    );
                }
                Err(e) => {
                    // Only the user mends a wrong config or key set: said
                    // as a warning, though retried (the config may change).
                    if e.needs_the_user() {
                        tracing::warn!("recovery cannot succeed as configured: {e}");
                    } else {
                        tracing::info!(
                            "recovery not possible yet (retrying in {} s): {e}",
                            delay.as_secs()
                        );
                    }
                    if let Some(why) = lock(&self.recovery).as_mut() {
                        *why = format!(
                            "{}; retrying every {} s",
                            e.to_string().trim_end_matches('.'),
                            delay.as_secs()
                        );
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
        let listed = tokio::spawn(self.clone().hire_listed());
        let _ = listed.await;
        // Attempts cut by a crash or left by a failure before the restart.
        tokio::spawn(self.clone().collect_attempts());
        if self.config.customer.hire_from_dht {
            self.fill_from_dht().await;
        }
    }
}
