//! The customer-agent: holds the keys and the supplier set, runs backups and
//! restores through the pipeline over the network, keeps the catalog, and
//! serves `bitdust.customer.v1.Customer` to bitdustctl.
//!
//! By concern: [`grpc`] (the handlers, which find out who calls and
//! delegate), `caller` (who calls, the streamed archive), `backup`,
//! `restore`, `catalog` (the versions a caller sees, deleting),
//! `suppliers` (hire, fire, ping), `network` (supplier list, catalog copy,
//! recovery) and `upkeep` (audits, leftovers of failed attempts).

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

mod backup;
mod caller;
mod catalog;
mod commands;
mod errors;
pub mod fds;
mod grpc;
mod jobs;
mod network;
mod restore;
mod snapshot;
mod suppliers;
mod upkeep;

pub use caller::Caller;
use caller::StreamedArchive;
pub use errors::{
    BackupError, FireError, HireError, NotSystem, PositionError, RecoverError, RestoreError,
    SelectError,
};
pub use grpc::CustomerService;

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
    /// The snapshots' index and files cache (`repo/` in the state
    /// directory).
    repo: Arc<bitdust_pipeline::repo::Repo>,
    links: Mutex<Links>,
    running: Mutex<HashSet<BackupId>>,
    /// Backups, restores and listings running, per caller (see [`jobs`]).
    backups: jobs::Jobs,
    restores: jobs::Jobs,
    listings: jobs::Jobs,
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
    /// The restores waiting for their caller's descriptor connection.
    fds: Arc<fds::FdOffers>,
}

impl Agent {
    /// Serves the descriptor socket (`RestoreRequest.pass_fds`) bound at
    /// `path`.
    pub async fn serve_fds(self: Arc<Self>, listener: tokio::net::UnixListener, path: PathBuf) {
        self.fds.clone().serve(listener, path).await
    }
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

/// A crash point for tests: with `BITDUST_TEST_ABORT_AT=NAME[:N]` in its
/// environment, the agent aborts (as `kill -9` would: no destructor, no
/// flush) the `N`-th time (default the first) it passes the point `NAME`.
/// Unset, it does nothing. The points: `retired` (versions out of the
/// catalog, their objects not yet deleted), `pack-deleted` (a pack's
/// fragments deleted at one supplier), `catalog-added` and
/// `root-rewritten` (a repack's root rewrite, either side of the root's
/// upload), `repack-step` (a repack's durable step).
fn crash_point(name: &str) {
    static PASSED: Mutex<Option<std::collections::HashMap<String, u32>>> = Mutex::new(None);
    let Ok(want) = std::env::var("BITDUST_TEST_ABORT_AT") else {
        return;
    };
    let (point, n) = match want.split_once(':') {
        Some((p, n)) => (p, n.parse().unwrap_or(1)),
        None => (want.as_str(), 1),
    };
    if point != name {
        return;
    }
    let mut passed = lock(&PASSED);
    let count = passed
        .get_or_insert_with(Default::default)
        .entry(name.to_owned())
        .or_insert(0);
    *count += 1;
    if *count >= n {
        tracing::warn!(point = name, passed = *count, "test crash point: aborting");
        std::process::abort();
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses `NODEID@host:port` or `host:port`.
pub fn parse_address(s: &str) -> Result<(Option<NodeId>, String), String> {
    // ` via NODEID@ip:port` routers may follow (a supplier behind a NAT);
    // they stay in the address the link dials.
    let (first, routers) = bitdust_net::relay::split_via(s)?;
    let vias = &s[s.find(" via ").unwrap_or(s.len())..];
    if !routers.is_empty() && !first.contains('@') {
        return Err(format!(
            "{s:?}: a supplier reached through routers needs its NODEID@"
        ));
    }
    let s = first;
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
    Ok((id, format!("{addr}{vias}")))
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
        repo: Arc<bitdust_pipeline::repo::Repo>,
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
            repo,
            links: Mutex::new(links),
            running: Mutex::new(HashSet::new()),
            backups: jobs::Jobs::new("backups"),
            restores: jobs::Jobs::new("restores"),
            listings: jobs::Jobs::new("listings (ls, diff)"),
            attempting: Mutex::new(HashSet::new()),
            recovery: Mutex::new(recovery),
            code,
            rt: Handle::current(),
            timeout,
            dht: Dht::new(&config_dht_socket),
            list_changed: tokio::sync::Notify::new(),
            fds: Arc::default(),
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
                        tracing::warn!(position = p, address = %addr, error = %e, retry_in = ?delay, "cannot hire the supplier from the config yet");
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

    /// What recovery waits for, while the agent recovers (hiring, backing
    /// up or firing then could replace the only pointer to the old backups).
    fn recovery(&self) -> Option<String> {
        lock(&self.recovery).clone()
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

    /// The node id at each position now (empty where none is hired).
    fn supplier_set(&self) -> Vec<String> {
        self.links()
            .iter()
            .map(|l| {
                l.as_ref()
                    .map(|l| l.node_id.to_string())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Fetches the fragments of `id`@`version` from the suppliers hired now
    /// (on a blocking thread).
    fn source(&self, id: BackupId, version: u64) -> NetSource {
        NetSource::new(
            self.rt.clone(),
            self.links(),
            id,
            version,
            MAX_FRAGMENT_OBJECT,
            self.state.clone(),
        )
    }

    /// Sends the fragments of `id`@`version` to `links` (on a blocking
    /// thread).
    fn sink(&self, links: Links, id: BackupId, version: u64) -> NetSink {
        NetSink::new(
            self.rt.clone(),
            links,
            self.code.clone(),
            id,
            version,
            self.state.clone(),
        )
    }
}
