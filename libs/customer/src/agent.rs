//! The customer-agent: holds the keys and the supplier set, runs backups and
//! restores through the pipeline over the network, keeps the catalog, and
//! serves `bitdust.customer.v1.Customer` to bitdustctl.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitdust_block::BackupId;
use bitdust_config::Config;
use bitdust_crypto::{BackupKey, Identity, KeyRing, NodeId};
use bitdust_ecc::{Code, Scheme};
use bitdust_net::Endpoint;
use bitdust_pipeline::{ArchiveInput, BackupKeyMaterial, BackupOptions, Progress, RestoreOptions};
use bitdust_proto::customer::v1 as pb;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

mod caller;
mod network;
mod upkeep;

pub use caller::Caller;
use caller::StreamedArchive;

pub use network::CATALOG_OBJECT;

use crate::client::{PeerError, SupplierLink};
use crate::discovery::Dht;
use crate::netio::{self, Links, NetSink, NetSource};
use crate::state::{CatalogError, PositionRecord, State, VersionRecord};

/// Largest fragment object fetched (the largest block over 2 suppliers,
/// plus its header).
const MAX_FRAGMENT_OBJECT: u64 = (bitdust_block::MAX_BLOCK_LEN / 2) + (1 << 20);

/// The customer-agent.
pub struct Agent {
    config: Config,
    keys: KeyRing,
    identity: Arc<Identity>,
    endpoint: Endpoint,
    state: Arc<State>,
    links: Mutex<Links>,
    running: Mutex<HashSet<BackupId>>,
    /// Attempts (backup, version) running now. Held while a version is
    /// reserved, and while the collector reads the attempts, so the
    /// collector never sees a running attempt as abandoned.
    attempting: Mutex<HashSet<(BackupId, u64)>>,
    /// `Some(what it waits for)` while recovering from imported keys: no
    /// hire, no backup, no published supplier list until it ends.
    recovery: Mutex<Option<String>>,
    code: Code,
    rt: Handle,
    timeout: Duration,
    dht: Dht,
    list_changed: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// A refused catalog change as the gRPC status its caller acts on.
fn catalog_status(e: CatalogError) -> Status {
    match e {
        CatalogError::NotHeld { .. } => Status::failed_precondition(e.to_string()),
        CatalogError::NoVersion { .. } => Status::not_found(e.to_string()),
        CatalogError::Db(e) => internal(e),
    }
}

/// The meta key set (1) while the agent recovers from imported keys.
pub const RECOVERING: &str = "recovering";

/// How long a fired supplier is not hired again from the DHT.
pub const FIRED_MEMORY_SECS: u64 = 30 * 24 * 3600;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses `NODEID@host:port` or `host:port`.
pub fn parse_address(s: &str) -> Result<(Option<NodeId>, String), String> {
    let (id, addr) = match s.split_once('@') {
        Some((id, addr)) => (
            Some(
                id.parse::<NodeId>()
                    .map_err(|_| format!("{id:?} is not a node id (52 base32 characters)"))?,
            ),
            addr,
        ),
        None => (None, s),
    };
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok {
        return Err(format!("{s:?} is not host:port or NODEID@host:port"));
    }
    Ok((id, addr.to_owned()))
}

/// Progress counted by the pipeline's threads, read by a ticker.
struct Counter(AtomicU64);

impl Progress for Counter {
    fn advance(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Sends the counter's progress as an event every 250 ms until the stream
/// is gone or the returned task is aborted.
fn spawn_ticker<E: Send + 'static>(
    counter: Arc<Counter>,
    total: u64,
    events: mpsc::Sender<Result<E, Status>>,
    event: impl Fn(pb::Progress) -> E + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let p = pb::Progress {
                bytes_done: counter.0.load(Ordering::Relaxed),
                bytes_total: total,
            };
            if events.send(Ok(event(p))).await.is_err() {
                return;
            }
        }
    })
}

impl Agent {
    /// Opens the keys and state and binds the configured suppliers.
    pub async fn new(
        config: Config,
        endpoint: Endpoint,
        keys: KeyRing,
        state: Arc<State>,
    ) -> anyhow::Result<Agent> {
        let config_dht_socket = config.dht_socket();
        let c = &config.customer;
        let scheme: Scheme = c
            .scheme
            .parse()
            .map_err(|_| anyhow::anyhow!("bad scheme {}", c.scheme))?;
        let code = Code::new(scheme, c.suppliers)?;
        match state.meta("positions")? {
            Some(n) if n as usize != c.suppliers => anyhow::bail!(
                "the config asks for {} suppliers but this agent's supplier set has {n} positions; set customer.suppliers = {n}, or fire every supplier first",
                c.suppliers
            ),
            Some(_) => {}
            None => state.set_meta("positions", c.suppliers as u64)?,
        }
        let identity = Arc::new(Identity::from_secret(&keys.identity().secret()));
        let timeout = Duration::from_secs(c.timeout_secs);
        let mut links: Links = vec![None; c.suppliers];
        for (p, rec) in state.positions()? {
            if let (Some(slot), Ok(id)) = (links.get_mut(p as usize), rec.node_id.parse::<NodeId>())
            {
                *slot = Some(Arc::new(SupplierLink::new(
                    endpoint.clone(),
                    id,
                    rec.address,
                    timeout,
                )));
            }
        }
        let recovery = (state.meta(RECOVERING)? == Some(1))
            .then(|| "looking up this customer's supplier list in the DHT".to_owned());
        let agent = Agent {
            config,
            keys,
            identity,
            endpoint,
            state,
            links: Mutex::new(links),
            running: Mutex::new(HashSet::new()),
            attempting: Mutex::new(HashSet::new()),
            recovery: Mutex::new(recovery),
            code,
            rt: Handle::current(),
            timeout,
            dht: Dht::new(&config_dht_socket),
            list_changed: tokio::sync::Notify::new(),
        };
        Ok(agent)
    }

    /// Hires the suppliers listed in the config (`customer.supplier_addresses`)
    /// into their positions where those are free, all at once, and retries
    /// the ones that did not accept (5 s, doubling up to 5 min) until every
    /// listed position is held. Runs after the agent is ready, so a listed
    /// supplier that is down delays nothing.
    pub async fn hire_listed(self: Arc<Self>) {
        let mut delay = Duration::from_secs(5);
        loop {
            let mut set = tokio::task::JoinSet::new();
            for (p, addr) in self.config.customer.supplier_addresses.iter().enumerate() {
                if lock(&self.links).get(p).is_none_or(Option::is_some) {
                    continue;
                }
                let (me, addr) = (self.clone(), addr.clone());
                set.spawn(async move {
                    let r = me.hire(&addr, Some(p as u32)).await;
                    (p, addr, r)
                });
            }
            if set.is_empty() {
                return;
            }
            let mut left = 0;
            while let Some(Ok((p, addr, r))) = set.join_next().await {
                match r {
                    Ok(s) => {
                        tracing::info!(position = p, supplier = %s.node_id, "hired the supplier from the config");
                    }
                    Err(e) => {
                        left += 1;
                        tracing::warn!(position = p, address = %addr, error = %e.message(), retry_in = ?delay, "cannot hire the supplier from the config yet");
                    }
                }
            }
            if left == 0 {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(300));
        }
    }

    /// Whether the agent is recovering (see [`RECOVERING`]).
    pub fn is_recovering(&self) -> bool {
        lock(&self.recovery).is_some()
    }

    /// Refuses `what` while the agent recovers: hiring, backing up or
    /// firing then could replace the only pointer to the old backups.
    fn refuse_while_recovering(&self, what: &str) -> Result<(), Status> {
        match lock(&self.recovery).as_deref() {
            None => Ok(()),
            Some(why) => Err(Status::failed_precondition(format!(
                "cannot {what} while recovering the backups of this key ({why}); wait, or give them up with bitdustctl start-afresh"
            ))),
        }
    }

    /// Ends recovery for good: the old supplier list and catalog are
    /// given up. Refused when not recovering.
    pub fn start_afresh(&self) -> Result<String, Status> {
        let mut recovery = lock(&self.recovery);
        if recovery.is_none() {
            return Err(Status::failed_precondition(
                "this agent is not recovering; there is nothing to give up",
            ));
        }
        self.state.set_meta(RECOVERING, 0).map_err(internal)?;
        *recovery = None;
        drop(recovery);
        self.list_changed.notify_one();
        tracing::warn!("recovery given up by the user: starting afresh under the same key");
        Ok("stopped recovering: the backups made before under this key are no longer reachable from this agent, and the supplier list it publishes from now on replaces the old one".into())
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    fn links(&self) -> Links {
        lock(&self.links).clone()
    }

    /// Binds a supplier to a position after it accepted our service request.
    pub async fn hire(
        &self,
        address: &str,
        position: Option<u32>,
    ) -> Result<pb::SupplierInfo, Status> {
        self.refuse_while_recovering("hire a supplier")?;
        let (pinned, addr) = parse_address(address).map_err(Status::invalid_argument)?;
        let n = self.code.suppliers();
        let node_id = match pinned {
            Some(id) => id,
            None => SupplierLink::discover(&self.endpoint, &addr, self.timeout)
                .await
                .map_err(|e| Status::unavailable(format!("cannot hire {addr}: {e}")))?,
        };
        if node_id == self.node_id() {
            return Err(Status::invalid_argument(
                "a customer cannot be its own supplier",
            ));
        }
        let position = {
            let links = lock(&self.links);
            if let Some(p) = links
                .iter()
                .position(|l| l.as_ref().is_some_and(|l| l.node_id == node_id))
            {
                return Err(Status::already_exists(format!(
                    "supplier {node_id} already holds position {p}"
                )));
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
                PeerError::Refused { message, .. } => Status::failed_precondition(format!(
                    "supplier {node_id} at {addr} refused the service: {message}"
                )),
                other => Status::unavailable(format!("cannot hire {addr}: {other}")),
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
                return Err(Status::aborted(format!(
                    "supplier {node_id} was hired at another position meanwhile"
                )));
            }
            if links[position as usize].is_some() {
                Some(format!(
                    "position {position} was taken by another hire meanwhile; try again"
                ))
            } else {
                self.state.set_position(position, &rec).map_err(internal)?;
                links[position as usize] = Some(link.clone());
                None
            }
        };
        if let Some(why) = clash {
            // Nobody else holds this supplier: end the service just asked for.
            let _ = link.cancel_service().await;
            return Err(Status::aborted(why));
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
    pub async fn fire(&self, position: u32) -> Result<pb::FireSupplierReply, Status> {
        self.refuse_while_recovering("fire a supplier")?;
        let link = lock(&self.links)
            .get(position as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| Status::not_found(format!("no supplier holds position {position}")))?;
        // Record, then act: the position is unbound and missing in every
        // version (one transaction) before the supplier deletes anything.
        let t = now();
        self.state
            .fire_position(
                position,
                &link.node_id.to_string(),
                t,
                t.saturating_sub(FIRED_MEMORY_SECS),
            )
            .map_err(catalog_status)?;
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
    async fn reachability(&self) -> Vec<Option<Result<bitdust_proto::peer::v1::Pong, PeerError>>> {
        let links = self.links();
        let mut set = tokio::task::JoinSet::new();
        for (p, l) in links.iter().enumerate() {
            if let Some(l) = l.clone() {
                set.spawn(async move {
                    let r = tokio::time::timeout(netio::PROBE_TIMEOUT, l.ping())
                        .await
                        .unwrap_or_else(|_| {
                            Err(PeerError::Unreachable("no answer to a ping".into()))
                        });
                    if r.is_err() {
                        l.reset().await;
                    }
                    (p, r)
                });
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
        out
    }

    /// Resolves a backup id (hex or unique prefix; empty: the only backup)
    /// and a version (0: the newest) in the catalog.
    /// The versions `caller` may see, in catalog order.
    fn visible_versions(
        &self,
        caller: Caller,
    ) -> Result<Vec<(BackupId, u64, VersionRecord)>, Status> {
        let mut all = self.state.versions().map_err(internal)?;
        all.retain(|(_, _, r)| caller.may_see(r.owner));
        Ok(all)
    }

    fn select(
        &self,
        caller: Caller,
        id: &str,
        version: u64,
    ) -> Result<(BackupId, u64, VersionRecord), Status> {
        let all = self.visible_versions(caller)?;
        let ids: BTreeMap<BackupId, ()> = all.iter().map(|(b, _, _)| (*b, ())).collect();
        let matching: Vec<BackupId> = ids
            .keys()
            .filter(|b| b.to_string().starts_with(&id.to_ascii_lowercase()))
            .copied()
            .collect();
        let bid = match matching.as_slice() {
            [one] => *one,
            [] if all.is_empty() => {
                return Err(Status::not_found(
                    "there are no backups yet; run bitdustctl backup PATH first",
                ));
            }
            [] => {
                return Err(Status::not_found(format!(
                    "no backup id starts with {id:?}; see bitdustctl list"
                )));
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "{} backups match {id:?}; give more of the id (see bitdustctl list)",
                    matching.len()
                )));
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
        let (v, rec) = found.ok_or_else(|| {
            Status::not_found(format!(
                "backup {bid} has no version {version}; see bitdustctl list"
            ))
        })?;
        Ok((bid, v, rec))
    }

    /// Deletes versions from every supplier and the catalog.
    async fn delete_versions(&self, id: BackupId, versions: &[u64]) -> Result<(), Status> {
        let links = self.links();
        for &v in versions {
            let prefix = netio::version_prefix(id, v);
            let mut set = tokio::task::JoinSet::new();
            for l in links.iter().flatten() {
                let (l, prefix) = (l.clone(), prefix.clone());
                set.spawn(async move { (l.node_id, l.delete(Vec::new(), &prefix).await) });
            }
            while let Some(Ok((who, r))) = set.join_next().await {
                if let Err(e) = r {
                    tracing::warn!(supplier = %who, version = v, error = %e, "could not delete a version there");
                }
            }
            self.state.delete_version(id, v).map_err(internal)?;
        }
        Ok(())
    }

    fn backup_options(&self) -> BackupOptions {
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
    async fn backup(
        self: Arc<Self>,
        caller: Caller,
        mut stream: tonic::Streaming<pb::BackupInput>,
        events: mpsc::Sender<Result<pb::BackupEvent, Status>>,
    ) -> Result<pb::BackupDone, Status> {
        let start = caller::read_start(&mut stream).await?;
        if start.paths.is_empty() {
            return Err(Status::invalid_argument(
                "name at least one path to back up",
            ));
        }
        self.refuse_while_recovering("back up")?;
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
            return Err(Status::aborted(format!(
                "a backup of the same paths (backup {id}) is already running; wait for it to finish"
            )));
        }
        let input = StreamedArchive::new(raw, stream, self.rt.clone());
        let result = self
            .clone()
            .backup_locked(id, owner, input, start.bytes_total, events)
            .await;
        lock(&self.running).remove(&id);
        result
    }

    async fn backup_locked(
        self: Arc<Self>,
        id: BackupId,
        owner: Option<u32>,
        input: StreamedArchive,
        total: u64,
        events: mpsc::Sender<Result<pb::BackupEvent, Status>>,
    ) -> Result<pb::BackupDone, Status> {
        let links = self.links();
        let hired = links.iter().flatten().count();
        let n = self.code.suppliers();
        let need = n - self.code.tolerance();
        if hired < need {
            return Err(Status::failed_precondition(format!(
                "only {hired} of {n} positions have a supplier and a backup needs at least {need}; hire more with bitdustctl suppliers hire ADDR"
            )));
        }
        // Leftovers of failed attempts go from suppliers that are back.
        self.spawn_collector()?;
        let previous = self.state.versions_of(id).map_err(internal)?;
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
                .map_err(internal)?;
            attempting.insert((id, v));
            v
        };
        let result = self
            .clone()
            .backup_attempt(id, owner, version, input, total, &previous, links, events)
            .await;
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
    async fn backup_attempt(
        self: Arc<Self>,
        id: BackupId,
        owner: Option<u32>,
        version: u64,
        mut input: StreamedArchive,
        total: u64,
        previous: &[(u64, VersionRecord)],
        links: Links,
        events: mpsc::Sender<Result<pb::BackupEvent, Status>>,
    ) -> Result<pb::BackupDone, Status> {
        let key = match previous.last() {
            Some((v, _)) => {
                let me = self.clone();
                let v = *v;
                tokio::task::spawn_blocking(move || {
                    let mut src = NetSource::new(
                        me.rt.clone(),
                        me.links(),
                        id,
                        v,
                        MAX_FRAGMENT_OBJECT,
                        me.state.clone(),
                    );
                    let m =
                        bitdust_pipeline::load_manifest(&mut src, &me.node_id()).map_err(|e| {
                            Status::unavailable(format!(
                                "cannot read version {v} of backup {id} to continue it: {e}"
                            ))
                        })?;
                    BackupKeyMaterial::from_manifest(&m).ok_or_else(|| {
                        Status::internal("the previous version's backup key is malformed")
                    })
                })
                .await
                .map_err(internal)??
            }
            None => BackupKeyMaterial::generate(self.keys.master_recipient()).map_err(internal)?,
        };
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
            let mut sink = NetSink::new(
                me.rt.clone(),
                links,
                me.code.clone(),
                id,
                version,
                me.state.clone(),
            );
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
        .map_err(internal)?;
        ticker.abort();
        let report = result.map_err(|e| Status::aborted(format!("backup failed: {e}")))?;
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
            supplier_set: self
                .links()
                .iter()
                .map(|l| {
                    l.as_ref()
                        .map(|l| l.node_id.to_string())
                        .unwrap_or_default()
                })
                .collect(),
            missing_positions: report
                .degraded_positions
                .iter()
                .map(|&p| p as u32)
                .collect(),
        };
        self.state
            .commit_version(id, version, &rec)
            .map_err(internal)?;
        // Keep the configured number of versions.
        let keep = self.config.customer.keep_versions as usize;
        let versions = self.state.versions_of(id).map_err(internal)?;
        let prune: Vec<u64> = if versions.len() > keep {
            versions[..versions.len() - keep]
                .iter()
                .map(|(v, _)| *v)
                .collect()
        } else {
            Vec::new()
        };
        self.delete_versions(id, &prune).await?;
        let catalog_copies = self.upload_catalog().await?;
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
        })
    }

    async fn restore(
        self: Arc<Self>,
        caller: Caller,
        req: pb::RestoreRequest,
        events: mpsc::Sender<Result<pb::RestoreEvent, Status>>,
    ) -> Result<pb::RestoreDone, Status> {
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
            return Err(Status::invalid_argument(format!(
                "{} is not an absolute path; give an absolute directory, or none to receive the archive",
                req.to
            )));
        }
        let (id, version, rec) = self.select(caller, &req.backup_id, req.version)?;
        let master = self
            .keys
            .master_key()
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
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
            let mut src = NetSource::new(
                me.rt.clone(),
                me.links(),
                id,
                version,
                MAX_FRAGMENT_OBJECT,
                me.state.clone(),
            );
            let manifest =
                bitdust_pipeline::load_manifest(&mut src, &me.node_id()).map_err(|e| {
                    Status::unavailable(format!("cannot read the manifest of {id}@{version}: {e}"))
                })?;
            // No fragment is fetched (or allocated for) beyond what the
            // signed manifest allows.
            src.bound_by(&manifest, RestoreOptions::default().max_block_size);
            let key = BackupKey::unwrap_with(&manifest.wrapped_backup_key, master.age_identity())
                .map_err(|e| {
                Status::failed_precondition(format!(
                    "the backup key of {id}@{version} does not open with this master key: {e}"
                ))
            })?;
            let failed = |e| Status::aborted(format!("restore of {id}@{version} failed: {e}"));
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
            Ok::<_, Status>((report, src.fetched))
        })
        .await
        .map_err(internal)?;
        if let Some(t) = ticker {
            t.abort();
        }
        let (report, fetched) = result?;
        Ok(pb::RestoreDone {
            backup_id: id.to_string(),
            version,
            bytes: report.bytes,
            files: report.files as u32,
            fragments_fetched: fetched,
            blocks_repaired: report.decoded_blocks,
            stale_fragments: report.stale_fragments,
            warnings: report
                .skipped
                .into_iter()
                .chain(report.rejected_fragments)
                .collect(),
        })
    }
}

/// The largest piece of archive one restore event carries.
const ARCHIVE_CHUNK: usize = 1 << 20;

/// `position` if it exists and is free, or the first free position when
/// `None`; the error says what to do otherwise.
fn free_position(links: &Links, position: Option<u32>) -> Result<u32, Status> {
    let n = links.len();
    match position {
        Some(p) if p as usize >= n => Err(Status::invalid_argument(format!(
            "position {p} does not exist; positions are 0 to {}",
            n - 1
        ))),
        Some(p) if links[p as usize].is_some() => Err(Status::failed_precondition(format!(
            "position {p} is held by another supplier; fire it first (bitdustctl suppliers fire {p})"
        ))),
        Some(p) => Ok(p),
        None => links
            .iter()
            .position(Option::is_none)
            .map(|p| p as u32)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "all {n} positions have a supplier; fire one first (bitdustctl suppliers fire POSITION)"
                ))
            }),
    }
}

/// The gRPC face of the agent.
pub struct CustomerService(pub Arc<Agent>);

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::customer_server::Customer for CustomerService {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let a = &self.0;
        let caller = Caller::of(&req)?;
        let reach = a.reachability().await;
        let versions = a.visible_versions(caller)?;
        let backups: HashSet<BackupId> = versions.iter().map(|(b, _, _)| *b).collect();
        Ok(Response::new(pb::StatusReply {
            node_id: a.node_id().to_string(),
            positions: a.code.suppliers() as u32,
            hired: a.links().iter().flatten().count() as u32,
            reachable: reach.iter().filter(|r| matches!(r, Some(Ok(_)))).count() as u32,
            needed_bytes: a.config.customer.needed_space.0,
            backups: backups.len() as u32,
            versions: versions.len() as u32,
            missing_fragments: versions
                .iter()
                .map(|(_, _, r)| r.missing_positions.len() as u64 * r.blocks)
                .sum(),
            scheme: a.code.scheme().to_string(),
            tolerance: a.code.tolerance() as u32,
            recovering: a.is_recovering(),
            recovery: lock(&a.recovery).clone().unwrap_or_default(),
        }))
    }

    async fn start_afresh(
        &self,
        req: Request<pb::StartAfreshRequest>,
    ) -> Result<Response<pb::StartAfreshReply>, Status> {
        Caller::of(&req)?.require_system("start afresh")?;
        Ok(Response::new(pb::StartAfreshReply {
            gave_up: self.0.start_afresh()?,
        }))
    }

    type BackupStream = EventStream<pb::BackupEvent>;

    async fn backup(
        &self,
        req: Request<tonic::Streaming<pb::BackupInput>>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let caller = Caller::of(&req)?;
        let (tx, rx) = mpsc::channel(16);
        let agent = self.0.clone();
        let stream = req.into_inner();
        tokio::spawn(async move {
            let r = agent.backup(caller, stream, tx.clone()).await;
            let ev = r.map(|done| pb::BackupEvent {
                kind: Some(pb::backup_event::Kind::Done(done)),
            });
            let _ = tx.send(ev).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type RestoreStream = EventStream<pb::RestoreEvent>;

    async fn restore(
        &self,
        req: Request<pb::RestoreRequest>,
    ) -> Result<Response<Self::RestoreStream>, Status> {
        let caller = Caller::of(&req)?;
        let (tx, rx) = mpsc::channel(16);
        let agent = self.0.clone();
        let req = req.into_inner();
        tokio::spawn(async move {
            let r = agent.restore(caller, req, tx.clone()).await;
            let ev = r.map(|done| pb::RestoreEvent {
                kind: Some(pb::restore_event::Kind::Done(done)),
            });
            let _ = tx.send(ev).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListReply>, Status> {
        let caller = Caller::of(&req)?;
        let mut by_id: BTreeMap<BackupId, pb::BackupInfo> = BTreeMap::new();
        for (id, v, r) in self.0.visible_versions(caller)? {
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
                missing_fragments: r.missing_positions.len() as u64 * r.blocks,
                missing_positions: r.missing_positions.clone(),
            });
        }
        Ok(Response::new(pb::ListReply {
            backups: by_id.into_values().collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let (id, _, _) = self.0.select(caller, &req.backup_id, req.version)?;
        let versions: Vec<u64> = if req.version == 0 {
            self.0
                .state
                .versions_of(id)
                .map_err(internal)?
                .into_iter()
                .map(|(v, _)| v)
                .collect()
        } else {
            vec![req.version]
        };
        if lock(&self.0.running).contains(&id) {
            return Err(Status::aborted(format!(
                "backup {id} is running; delete it after it finishes"
            )));
        }
        self.0.delete_versions(id, &versions).await?;
        self.0.upload_catalog().await?;
        Ok(Response::new(pb::DeleteReply {
            deleted_versions: versions,
        }))
    }

    async fn list_suppliers(
        &self,
        _: Request<pb::ListSuppliersRequest>,
    ) -> Result<Response<pb::ListSuppliersReply>, Status> {
        let a = &self.0;
        let reach = a.reachability().await;
        Ok(Response::new(pb::ListSuppliersReply {
            positions: a.code.suppliers() as u32,
            suppliers: a.supplier_infos(&reach)?,
        }))
    }

    async fn check_suppliers(
        &self,
        req: Request<pb::CheckSuppliersRequest>,
    ) -> Result<Response<pb::ListSuppliersReply>, Status> {
        Ok(Response::new(
            self.0.check_suppliers(req.into_inner().audit).await?,
        ))
    }

    async fn mark_repaired(
        &self,
        req: Request<pb::MarkRepairedRequest>,
    ) -> Result<Response<pb::MarkRepairedReply>, Status> {
        Caller::of(&req)?.require_system("record repairs")?;
        let missing_positions = self.0.mark_repaired(&req.into_inner())?;
        Ok(Response::new(pb::MarkRepairedReply { missing_positions }))
    }

    async fn hire_supplier(
        &self,
        req: Request<pb::HireSupplierRequest>,
    ) -> Result<Response<pb::SupplierInfo>, Status> {
        Caller::of(&req)?.require_system("hire suppliers")?;
        let req = req.into_inner();
        if req.address.is_empty() {
            return Ok(Response::new(self.0.hire_from_dht(req.position).await?));
        }
        Ok(Response::new(
            self.0.hire(&req.address, req.position).await?,
        ))
    }

    async fn fire_supplier(
        &self,
        req: Request<pb::FireSupplierRequest>,
    ) -> Result<Response<pb::FireSupplierReply>, Status> {
        Caller::of(&req)?.require_system("fire suppliers")?;
        Ok(Response::new(self.0.fire(req.into_inner().position).await?))
    }
}
