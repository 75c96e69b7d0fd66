//! The `bitdust-dht-peer` daemon: one node of BitDust's Kademlia DHT.
//!
//! - [`quic`]: the DHT protocol over QUIC (ALPN `bitdust/dht/1`), on the
//!   node's own ed25519 identity.
//! - [`persist`]: the routing table and records, kept in LMDB (heed) so a
//!   restart loses nothing.
//! - [`seeds`]: bootstrap seeds resolved through DNS (A/AAAA, SRV).
//! - [`grpc`]: the local `bitdust.dht.v1.Dht` service.
//! - [`reach`]: whether strangers reach it (dial-backs by its peers), and
//!   so whether it gives others an address.
//! - [`run`]: the whole daemon, for the thin `bitdust-dht-peer` binary.

pub mod grpc;
pub mod persist;
pub mod quic;
pub mod reach;
pub mod router;
pub mod seeds;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bitdust_config::Config;
use bitdust_crypto::Identity;
use bitdust_dht::node::DhtError;
use bitdust_dht::record::{now, record_key};
use bitdust_dht::store::Limits;
use bitdust_dht::{Contact, Key, Node, Record};
use bitdust_proto::dht::v1::dht_server::DhtServer;
use tokio::sync::mpsc;

use crate::persist::{Db, Records};
use crate::quic::QuicTransport;
use crate::seeds::{Seed, SeedResolver};

/// A running DHT node with its database.
pub struct DhtPeer {
    /// The node.
    pub node: Arc<Node<QuicTransport>>,
    transport: Arc<QuicTransport>,
    db: Arc<Db>,
    identity: Identity,
    published: Mutex<HashMap<Key, Record>>,
    /// When the daemon started.
    pub started: Instant,
    /// The router role, when enabled.
    pub router: Option<Arc<router::Router>>,
    /// Whether strangers reach it, as [`reach`] found.
    pub reach: tokio::sync::watch::Sender<reach::Reach>,
    /// The dial-backs it makes for its peers.
    pub dial_backs: Arc<quic::DialBacks>,
}

/// A record could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A newer record of the same owner and kind is held.
    #[error(
        "a newer record (sequence {held}) of this owner and kind is held; sign one with a higher sequence"
    )]
    Stale {
        /// The sequence held.
        held: u64,
    },
    /// This node's own store refused it.
    #[error("{0}")]
    Refused(String),
}

fn lock<X>(m: &Mutex<X>) -> std::sync::MutexGuard<'_, X> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl DhtPeer {
    /// Records this node keeps republishing.
    pub fn published_count(&self) -> usize {
        lock(&self.published).len()
    }

    /// A record of `kind` signed with this node's key, with a sequence
    /// newer than any it signed before.
    pub fn sign(&self, kind: &str, lifetime: u64, payload: Vec<u8>) -> Record {
        let me = self.identity.node_id();
        let held = self
            .node
            .local(&record_key(&me, kind))
            .map_or(0, |r| r.sequence);
        let seq = now().max(held + 1);
        Record::sign(&self.identity, kind, seq, lifetime, payload)
    }

    /// Keeps `record` here, stores it on the nodes closest to its key, and
    /// (when `keep`) republishes it until it expires. Returns how many
    /// nodes hold it (this one included) and the first refusal.
    pub async fn publish(
        &self,
        record: Record,
        keep: bool,
    ) -> Result<(usize, Option<DhtError>), PublishError> {
        if let Some(held) = self.node.local(&record.key())
            && (held.sequence > record.sequence
                || (held.sequence == record.sequence && held != record))
        {
            return Err(PublishError::Stale {
                held: held.sequence,
            });
        }
        self.node
            .keep(record.clone())
            .map_err(|e| PublishError::Refused(e.to_string()))?;
        if keep {
            lock(&self.published).insert(record.key(), record.clone());
        }
        let (db, saved) = (self.db.clone(), record.clone());
        let r = tokio::task::spawn_blocking(move || {
            let one = std::slice::from_ref(&saved);
            db.put(Records::Held, one)?;
            if keep {
                db.put(Records::Published, one)?;
            }
            Ok::<_, persist::DbError>(())
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot save a published record: {e}"),
            Err(e) => tracing::warn!("cannot save a published record: {e}"),
        }
        let (n, refusal) = self.node.put(&record).await;
        Ok((n + 1, refusal))
    }

    /// Stores every record this node publishes on the nodes now closest
    /// to it again, and forgets the expired ones.
    pub async fn republish(&self) {
        let t = now();
        let records: Vec<Record> = {
            let mut p = lock(&self.published);
            p.retain(|_, r| r.expires > t);
            p.values().cloned().collect()
        };
        for r in records {
            let (n, refusal) = self.node.put(&r).await;
            tracing::debug!(kind = %r.kind, owner = %r.owner, stored_on = n, refusal = ?refusal, "republished");
        }
    }

    /// Joins through `seeds`: each is resolved, dialed (learning its node
    /// id, or checking the pinned one), then the node looks itself up and
    /// refreshes its buckets. Returns the size of the routing table.
    pub async fn bootstrap(&self, resolver: Option<&SeedResolver>, seeds: &[Seed]) -> usize {
        let mut contacts = Vec::new();
        for seed in seeds {
            let addrs = match (resolver, seed) {
                (_, Seed::Address { id, host, port })
                    if host.parse::<std::net::IpAddr>().is_ok() =>
                {
                    host.parse()
                        .map(|ip| vec![(*id, SocketAddr::new(ip, *port))])
                        .unwrap_or_default()
                }
                (Some(r), _) => match r.resolve(seed).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("{e}");
                        continue;
                    }
                },
                (None, _) => continue,
            };
            for (id, addr) in addrs {
                let id = match id {
                    Some(id) => id,
                    None => match self.transport.probe(addr).await {
                        Ok(id) => id,
                        Err(e) => {
                            tracing::warn!(%addr, "bootstrap seed: {e}");
                            continue;
                        }
                    },
                };
                if id != self.node.contact().id {
                    contacts.push(Contact::new(id, addr.to_string()));
                }
            }
        }
        let n = self.node.bootstrap(&contacts).await;
        tracing::info!(seeds = contacts.len(), routing_table = n, "bootstrapped");
        n
    }

    /// A digest of the routing table, to save it only when it changed.
    fn table_digest(&self) -> [u8; 32] {
        self.node.with_table(|t| {
            let mut h = blake3::Hasher::new();
            for c in t.iter() {
                h.update(c.id.as_bytes());
                h.update(c.address.as_bytes());
            }
            *h.finalize().as_bytes()
        })
    }

    fn save_table(&self) {
        let contacts: Vec<Contact> = self.node.with_table(|t| t.iter().cloned().collect());
        if let Err(e) = self.db.save_contacts(&contacts) {
            tracing::warn!("cannot save the routing table: {e}");
        }
    }
}

/// Saves the records other nodes store here, in batches.
async fn save_held(db: Arc<Db>, mut rx: mpsc::Receiver<Record>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
            if batch.len() >= 256 {
                break;
            }
        }
        let db = db.clone();
        match tokio::task::spawn_blocking(move || db.put(Records::Held, &batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot save records: {e}"),
            Err(e) => tracing::warn!("cannot save records: {e}"),
        }
    }
}

/// Runs the dht-peer daemon until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let state = config.dht_state();
    let mut daemon = bitdust_daemon::Daemon::new("dht-peer");
    let identity = daemon.identity(&state)?;
    let node_id = identity.node_id();
    let d = &config.dht;
    let seeds = d
        .bootstrap
        .iter()
        .map(|s| Seed::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("config file {}: key dht.bootstrap", config.path.display()))?;
    let resolver = if seeds.iter().any(
        |s| !matches!(s, Seed::Address { host, .. } if host.parse::<std::net::IpAddr>().is_ok()),
    ) {
        Some(SeedResolver::new(d.resolver.as_deref())?)
    } else {
        None
    };
    let db = Arc::new({
        let state = state.clone();
        tokio::task::spawn_blocking(move || Db::open(&state)).await??
    });

    let endpoint = bitdust_net::Endpoint::bind(&identity, d.listen, bitdust_dht::ALPN, true)?;
    let listen = endpoint.local_addr()?;
    let address = d.advertise.clone().unwrap_or_else(|| listen.to_string());
    // With no address configured it only asks until a peer's dial-back
    // reaches it (reach::keep_checking).
    let configured = d.advertise.is_some() || !listen.ip().is_unspecified();
    let transport = Arc::new(QuicTransport::new(endpoint.clone()));
    let limits = Limits {
        max_records: d.max_records,
        burst: f64::from(d.store_burst),
        ..Limits::default()
    };
    let node = Arc::new(Node::new(
        node_id,
        if configured { &address } else { "" },
        transport.clone(),
        limits,
    ));
    // What the last run knew.
    let contacts = db.contacts()?;
    let known = contacts.len();
    node.with_table(|t| {
        for c in contacts {
            if c.id != node_id {
                t.insert(c);
            }
        }
    });
    let held = db.load(Records::Held, now())?;
    let n_held = held.len();
    for r in held {
        let _ = node.keep(r);
    }
    let published: HashMap<Key, Record> = db
        .load(Records::Published, now())?
        .into_iter()
        .map(|r| (r.key(), r))
        .collect();
    let router = if config.router.enabled {
        let r = &config.router;
        let ep = bitdust_net::Endpoint::bind(&identity, r.listen, bitdust_net::relay::ALPN, true)?;
        let listen = ep.local_addr()?;
        let router = router::Router::new(
            router::Limits {
                max_clients: r.max_clients,
                max_reservations: r.max_reservations,
                max_clients_per_address: r.max_clients_per_address,
                max_reservations_per_address: r.max_reservations_per_address,
                rate_bytes_per_sec: r.rate.0,
                burst_bytes: r.burst.0,
                max_bytes: r.max_bytes_per_connection.0,
                max_secs: r.max_connection_secs,
            },
            &identity,
        );
        // What other nodes dial: the configured address, or listen's when
        // its IP is specific, or else the IP DHT peers see with its port.
        let dht_ip = address
            .parse::<SocketAddr>()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let fixed = match &r.advertise {
            Some(a) => Some(a.parse::<SocketAddr>()?),
            None if !listen.ip().is_unspecified() => Some(listen),
            None => dht_ip.map(|ip| SocketAddr::new(ip, listen.port())),
        };
        Some((router, ep, fixed, listen.port()))
    } else {
        None
    };
    let dial_backs = Arc::new(quic::DialBacks::new(&identity));
    let peer = Arc::new(DhtPeer {
        node: node.clone(),
        transport,
        db: db.clone(),
        identity,
        published: Mutex::new(published),
        started: Instant::now(),
        router: router.as_ref().map(|(r, ..)| r.clone()),
        reach: tokio::sync::watch::Sender::new(reach::Reach::default()),
        dial_backs,
    });
    let portmap = if configured {
        None
    } else {
        bitdust_net::portmap::PortMap::start(
            listen.port(),
            bitdust_config::PortMapping::allowed(&d.port_mapping).into(),
        )
    };

    let socket = config.dht_socket();
    let service = DhtServer::new(grpc::DhtService { peer: peer.clone() });
    daemon
        .serve(&socket, &["bitdust.dht.v1.Dht"], |r| r.add_service(service))
        .await?;
    let (held_tx, held_rx) = mpsc::channel(4096);
    daemon.supervise("the record saver", save_held(db.clone(), held_rx));
    daemon.supervise(
        "the DHT server",
        quic::serve(
            endpoint.clone(),
            node.clone(),
            held_tx,
            peer.dial_backs.clone(),
        ),
    );
    if !configured {
        let mapping = portmap.as_ref().map_or_else(
            || tokio::sync::watch::channel(Default::default()).1,
            |m| m.state(),
        );
        daemon.supervise(
            "the reachability check",
            reach::keep_checking(peer.clone(), listen.port(), mapping),
        );
    }
    daemon.supervise(
        "the DHT maintenance",
        maintain(
            peer.clone(),
            resolver,
            seeds,
            Duration::from_secs(d.refresh_secs),
            Duration::from_secs(d.republish_secs),
        ),
    );
    if let Some((router, ep, fixed, port)) = router {
        daemon.supervise("the router", router::serve(ep.clone(), router.clone()));
        daemon.supervise(
            "the router's advertisement",
            router::advertise(peer.clone(), router, fixed, port),
        );
    }
    tracing::info!(%node_id, %listen, %address, socket = %socket.display(), known, records = n_held, "dht-peer ready");
    let stopped = daemon.run(&format!("DHT node on {listen}")).await;
    if let Some(m) = portmap {
        m.release(Duration::from_secs(3)).await;
    }
    peer.save_table();
    let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.shutdown()).await;
    Ok(stopped?)
}

/// Joins, then keeps the node healthy: retries the bootstrap while the
/// routing table is empty, refreshes buckets, saves the table, drops
/// expired records and republishes this node's records.
async fn maintain(
    peer: Arc<DhtPeer>,
    resolver: Option<SeedResolver>,
    seeds: Vec<Seed>,
    refresh: Duration,
    republish: Duration,
) {
    // The routing table is saved within a second of any change, from its
    // own task, so a kill -9 loses at most that second.
    let saver = {
        let peer = peer.clone();
        tokio::spawn(async move {
            let mut saved = [0u8; 32];
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let d = peer.table_digest();
                if d != saved {
                    let p = peer.clone();
                    let _ = tokio::task::spawn_blocking(move || p.save_table()).await;
                    saved = d;
                }
            }
        })
    };
    let _saver = AbortOnDrop(saver);
    let mut n = peer.bootstrap(resolver.as_ref(), &seeds).await;
    peer.republish().await;
    let mut retry = Duration::from_secs(2);
    let mut last_refresh = Instant::now();
    let mut last_republish = Instant::now();
    let mut last_expire = Instant::now();
    loop {
        let wait = if n == 0 && !seeds.is_empty() {
            retry
        } else {
            Duration::from_secs(5)
        };
        tokio::time::sleep(wait).await;
        if n == 0 && !seeds.is_empty() {
            n = peer.bootstrap(resolver.as_ref(), &seeds).await;
            retry = (retry * 2).min(refresh).min(Duration::from_secs(300));
            if n > 0 {
                peer.republish().await;
                last_republish = Instant::now();
            }
            continue;
        }
        if last_refresh.elapsed() >= refresh {
            peer.node.refresh().await;
            n = peer.node.with_table(|t| t.len());
            last_refresh = Instant::now();
        }
        if last_republish.elapsed() >= republish {
            peer.republish().await;
            last_republish = Instant::now();
        }
        if last_expire.elapsed() >= Duration::from_secs(60) {
            let dropped = peer.node.expire();
            let db = peer.db.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for which in [Records::Held, Records::Published] {
                    if let Err(e) = db.drop_expired(which, now()) {
                        tracing::warn!("{e}");
                    }
                }
            })
            .await;
            if dropped > 0 {
                tracing::debug!(dropped, "expired records dropped");
            }
            last_expire = Instant::now();
        }
    }
}

/// Aborts a task when dropped (when the task that owns it is aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
