//! The router role (`[router] enabled = true`): a public node forwards the
//! packets of QUIC connections between nodes that proved their keys, so a
//! node nobody can dial still serves (docs/nat.md).
//!
//! A client links to the router over QUIC (ALPN `bitdust/router/1`), says
//! `Hello` and is welcomed or refused; then relay frames go both ways on
//! that stream (`bitdust_net::relay`). A frame from A names its destination
//! B; the router hands it to B with A's id in its place. It never looks
//! into a packet: the inner connection's TLS is between A and B.
//!
//! Limits, all in [`Limits`]:
//! - a frame is forwarded only to a node that holds a reservation, or to
//!   one that sent to the sender within [`ANSWER_WINDOW`] (so a node can
//!   answer whoever reached it);
//! - each client has a token bucket of bytes; what goes beyond it is
//!   dropped, so a flood costs its sender and not the others;
//! - a connection ends after `max_bytes` relayed or `max_secs`;
//! - clients and reservations are capped in all and per source address
//!   (an IPv4 address or an IPv6 /64); one node id has one connection (a
//!   new one replaces the old).
//!
//! Every queue is bounded and a full queue drops the packet, as a busy UDP
//! path would; the inner connections' congestion control slows down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bitdust_crypto::NodeId;
use bitdust_dht::store::address_key;
use bitdust_net::relay::{self, TYPE_PACKET, TYPE_PUNCH, TYPE_SOURCE};
use bitdust_net::{Connection, Endpoint, frame};
use bitdust_proto::router::v1 as pb;
use prost::bytes::Bytes;
use tokio::sync::mpsc;

/// How long a node may answer a node that sent to it, without a
/// reservation of its own... or the other way round.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(60);
/// Frames waiting to go to one client.
const CLIENT_QUEUE: usize = 512;
/// Nodes one client sent to that are remembered for answers.
const MAX_ANSWERS: usize = 1024;
/// Dial-backs in flight at once.
const MAX_DIAL_BACKS: usize = 8;

/// What a router allows.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Clients connected at once, in all.
    pub max_clients: usize,
    /// Reservations held at once, in all.
    pub max_reservations: usize,
    /// Clients from one source address.
    pub max_clients_per_address: usize,
    /// Reservations from one source address.
    pub max_reservations_per_address: usize,
    /// Each client's token bucket: bytes per second...
    pub rate_bytes_per_sec: u64,
    /// ...and the bucket's size.
    pub burst_bytes: u64,
    /// Bytes a connection may send through the router before it is ended
    /// (0: no cap).
    pub max_bytes: u64,
    /// Seconds a connection may live (0: no cap).
    pub max_secs: u64,
}

/// What a router has carried since it started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections taken.
    pub accepted: AtomicU64,
    /// Connections refused by a limit.
    pub refused: AtomicU64,
    /// Connections ended by the byte or time cap.
    pub capped: AtomicU64,
    /// Packets and bytes forwarded.
    pub packets: AtomicU64,
    /// Bytes forwarded.
    pub bytes: AtomicU64,
    /// Packets dropped: over the sender's rate.
    pub dropped_rate: AtomicU64,
    /// Packets dropped: to a node not here, or not taking them.
    pub dropped_unreachable: AtomicU64,
    /// Packets dropped: the receiver's queue was full.
    pub dropped_full: AtomicU64,
    /// Punch requests passed on.
    pub punches: AtomicU64,
    /// Dial-backs tried, and those that reached their node.
    pub dial_backs: AtomicU64,
    /// Dial-backs that reached their node.
    pub dial_backs_reached: AtomicU64,
}

/// One connected client (one link: a node may hold several).
struct Client {
    id: NodeId,
    /// This link's instance: what frames from it carry, so answers reach
    /// this link and not another of the same node. 0 for the link holding
    /// the node's reservation, which everyone addresses as 0.
    instance: u64,
    conn: Connection,
    /// The per-address limits' key of the address it connected from.
    address: String,
    reserved: bool,
    since: Instant,
    tx: mpsc::Sender<Bytes>,
    /// Bytes it sent through the router.
    sent: AtomicU64,
    /// Bytes of its packets forwarded (within its bucket, to a node that
    /// takes them).
    forwarded: AtomicU64,
    /// Nodes it sent to lately: they may answer it.
    answers: Mutex<HashMap<NodeId, Instant>>,
    /// The links whose source address it was told (`TYPE_SOURCE`), and
    /// the address told, at most [`MAX_SOURCES`].
    sources: Mutex<HashMap<(NodeId, u64), SocketAddr>>,
}

/// Sources a client is told of and remembered, at most; beyond, the
/// memory starts afresh (and sources are told again).
const MAX_SOURCES: usize = 4096;

impl Client {
    fn answers(&self) -> MutexGuard<'_, HashMap<NodeId, Instant>> {
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `from` may send to this client.
    fn takes_from(&self, from: &NodeId) -> bool {
        self.reserved
            || self
                .answers()
                .get(from)
                .is_some_and(|t| t.elapsed() < ANSWER_WINDOW)
    }

    fn sent_to(&self, to: NodeId) {
        let mut a = self.answers();
        if a.len() >= MAX_ANSWERS && !a.contains_key(&to) {
            a.retain(|_, t| t.elapsed() < ANSWER_WINDOW);
            if a.len() >= MAX_ANSWERS {
                return;
            }
        }
        a.insert(to, Instant::now());
    }
}

#[derive(Default)]
struct State {
    /// Each node's reserved link.
    reserved: HashMap<NodeId, Arc<Client>>,
    /// Links without a reservation, by instance.
    others: HashMap<u64, Arc<Client>>,
    /// Per node id: its links without a reservation.
    others_of: HashMap<NodeId, Vec<u64>>,
    /// Per source address: clients, reservations.
    per_address: HashMap<String, (usize, usize)>,
    reservations: usize,
}

impl State {
    fn count(&self) -> usize {
        self.reserved.len() + self.others.len()
    }
}

/// Links one node id may hold without a reservation (a customer-agent and
/// its rebuilder each have one); a new one beyond replaces the oldest.
const MAX_LINKS_PER_ID: usize = 4;

/// A client as the status shows it.
#[derive(Debug, Clone)]
pub struct ClientStatus {
    /// Its node id.
    pub id: NodeId,
    /// The address it connects from.
    pub observed: SocketAddr,
    /// Whether it holds a reservation.
    pub reserved: bool,
    /// Bytes it sent through the router.
    pub sent: u64,
    /// Of those, the bytes forwarded.
    pub forwarded: u64,
    /// Seconds since it connected.
    pub secs: u64,
}

/// The router.
pub struct Router {
    limits: Limits,
    /// Its node identity, for dial-backs.
    identity: bitdust_crypto::Identity,
    /// Dial-backs in flight at most.
    dial_backs: tokio::sync::Semaphore,
    state: Mutex<State>,
    /// The address it advertises (empty until it knows one).
    address: Mutex<String>,
    /// What it carried.
    pub counters: Counters,
}

impl Router {
    /// A router with `limits`, dialing back as `identity`.
    pub fn new(limits: Limits, identity: &bitdust_crypto::Identity) -> Arc<Router> {
        Arc::new(Router {
            limits,
            identity: bitdust_crypto::Identity::from_secret(&identity.secret()),
            dial_backs: tokio::sync::Semaphore::new(MAX_DIAL_BACKS),
            state: Mutex::new(State::default()),
            address: Mutex::new(String::new()),
            counters: Counters::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The address it advertises (empty until it knows one).
    pub fn address(&self) -> String {
        self.address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The clients connected now.
    pub fn clients(&self) -> Vec<ClientStatus> {
        let s = self.state();
        s.reserved
            .values()
            .chain(s.others.values())
            .map(|c| ClientStatus {
                id: c.id,
                // Where its packets come from now (QUIC follows a NAT's
                // new mapping).
                observed: canonical(c.conn.remote_address()),
                reserved: c.reserved,
                sent: c.sent.load(Ordering::Relaxed),
                forwarded: c.forwarded.load(Ordering::Relaxed),
                secs: c.since.elapsed().as_secs(),
            })
            .collect()
    }

    /// Whether it takes new reservations now.
    pub fn accepting(&self) -> bool {
        self.state().reservations < self.limits.max_reservations
    }

    /// Admits a client, or says which limit refuses it. A node's new
    /// reserved link replaces its old one; a new link without a
    /// reservation beyond [`MAX_LINKS_PER_ID`] replaces its oldest such.
    /// The replaced link is closed only when the new one is admitted.
    fn admit(&self, client: Arc<Client>) -> Result<(), String> {
        let l = &self.limits;
        let mut s = self.state();
        let replaced: Option<Arc<Client>> = if client.reserved {
            s.reserved.get(&client.id).cloned()
        } else {
            s.others_of
                .get(&client.id)
                .filter(|v| v.len() >= MAX_LINKS_PER_ID)
                .and_then(|v| v.first())
                .and_then(|i| s.others.get(i).cloned())
        };
        // The limits as they stand without the replaced link.
        let (mut clients, mut reservations) = s
            .per_address
            .get(&client.address)
            .copied()
            .unwrap_or((0, 0));
        let mut total = s.count();
        let mut held = s.reservations;
        if let Some(old) = &replaced {
            total -= 1;
            held -= usize::from(old.reserved);
            if old.address == client.address {
                clients -= 1;
                reservations -= usize::from(old.reserved);
            }
        }
        if total >= l.max_clients {
            return Err(format!(
                "the router serves {} clients, its limit",
                l.max_clients
            ));
        }
        if clients >= l.max_clients_per_address {
            return Err(format!(
                "{} clients from {} already, the limit per address",
                clients, client.address
            ));
        }
        if client.reserved {
            if held >= l.max_reservations {
                return Err(format!(
                    "the router holds {} reservations, its limit",
                    l.max_reservations
                ));
            }
            if reservations >= l.max_reservations_per_address {
                return Err(format!(
                    "{} reservations from {} already, the limit per address",
                    reservations, client.address
                ));
            }
        }
        if let Some(old) = replaced {
            Self::remove(&mut s, &old);
            old.conn.close(0u32.into(), b"replaced by a new connection");
        }
        if client.reserved {
            s.reservations += 1;
        }
        let e = s.per_address.entry(client.address.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(client.reserved);
        if client.reserved {
            s.reserved.insert(client.id, client);
        } else {
            s.others_of
                .entry(client.id)
                .or_default()
                .push(client.instance);
            s.others.insert(client.instance, client);
        }
        Ok(())
    }

    /// Removes `c` (which must be in the state) and releases its counts.
    fn remove(s: &mut State, c: &Client) {
        if c.reserved {
            s.reserved.remove(&c.id);
            s.reservations = s.reservations.saturating_sub(1);
        } else {
            s.others.remove(&c.instance);
            if let Some(v) = s.others_of.get_mut(&c.id) {
                v.retain(|i| *i != c.instance);
                if v.is_empty() {
                    s.others_of.remove(&c.id);
                }
            }
        }
        if let Some(e) = s.per_address.get_mut(&c.address) {
            e.0 = e.0.saturating_sub(1);
            if c.reserved {
                e.1 = e.1.saturating_sub(1);
            }
            if e.0 == 0 {
                s.per_address.remove(&c.address);
            }
        }
    }

    /// Forgets `c` if it is still in the state (not replaced).
    fn leave(&self, c: &Arc<Client>) {
        let mut s = self.state();
        let current = if c.reserved {
            s.reserved.get(&c.id)
        } else {
            s.others.get(&c.instance)
        };
        if current.is_some_and(|now| Arc::ptr_eq(now, c)) {
            Self::remove(&mut s, c);
        }
    }

    /// The link a frame to `id`'s link `instance` goes to.
    fn link_of(&self, id: &NodeId, instance: u64) -> Option<Arc<Client>> {
        let s = self.state();
        if instance == 0 {
            s.reserved.get(id).cloned()
        } else {
            s.others.get(&instance).filter(|c| c.id == *id).cloned()
        }
    }

    /// Passes `from`'s punch request on to `to`, with the address `from`
    /// connects from; only to a node holding a reservation.
    fn punch(&self, from: &Client, to: NodeId) {
        let Some(dest) = self.link_of(&to, 0) else {
            self.counters
                .dropped_unreachable
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        from.sent_to(to);
        let body = canonical(from.conn.remote_address()).to_string();
        if dest
            .tx
            .try_send(relay::encode_frame(
                TYPE_PUNCH,
                &from.id,
                from.instance,
                body.as_bytes(),
            ))
            .is_ok()
        {
            self.counters.punches.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Dials `id` back at `to` from a fresh socket (another port than
    /// its link's), speaking `alpn`: whether a stranger reaches it there.
    /// `None` when it is not tried (too many at once, or an ALPN that is
    /// not 1 to 64 bytes): the client learns nothing and asks again later.
    async fn dial_back(&self, id: NodeId, to: SocketAddr, alpn: &str) -> Option<pb::DialBack> {
        let no = |error: String| pb::DialBack {
            reachable: false,
            error,
        };
        if alpn.is_empty() || alpn.len() > 64 {
            return None;
        }
        let Ok(_slot) = self.dial_backs.try_acquire() else {
            return None;
        };
        self.counters.dial_backs.fetch_add(1, Ordering::Relaxed);
        let r = bitdust_net::reachability::dial_back(&self.identity, to, id, alpn.as_bytes()).await;
        if r.is_ok() {
            self.counters
                .dial_backs_reached
                .fetch_add(1, Ordering::Relaxed);
        }
        Some(match r {
            Ok(()) => pb::DialBack {
                reachable: true,
                error: String::new(),
            },
            Err(e) => no(e),
        })
    }

    /// Forwards one packet from `from` to `to`'s link `instance`.
    fn forward(&self, from: &Client, to: NodeId, instance: u64, body: &[u8]) {
        let Some(dest) = self
            .link_of(&to, instance)
            .filter(|d| d.takes_from(&from.id))
        else {
            self.counters
                .dropped_unreachable
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        from.sent_to(to);
        // Before the first packet of a link (and after its NAT maps it
        // anew), the receiver learns where the router sees it come from.
        let source = canonical(from.conn.remote_address());
        let told = {
            let mut s = dest
                .sources
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if s.len() >= MAX_SOURCES {
                s.clear();
            }
            s.insert((from.id, from.instance), source) == Some(source)
        };
        if !told
            && dest
                .tx
                .try_send(relay::encode_frame(
                    TYPE_SOURCE,
                    &from.id,
                    from.instance,
                    source.to_string().as_bytes(),
                ))
                .is_err()
        {
            // Told with a later packet, then.
            dest.sources
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&(from.id, from.instance));
        }
        match dest.tx.try_send(relay::encode_frame(
            TYPE_PACKET,
            &from.id,
            from.instance,
            body,
        )) {
            Ok(()) => {
                from.forwarded
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                self.counters.packets.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// `a` with an IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// A token bucket of bytes.
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn new(rate: u64, burst: u64) -> Bucket {
        Bucket {
            tokens: burst as f64,
            last: Instant::now(),
            rate: rate as f64,
            burst: burst as f64,
        }
    }

    fn take(&mut self, n: usize) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// The record kind of a router's advertisement in the DHT.
pub const KIND: &str = "router";
/// Seconds between fresh advertisements; each lives three times as long.
pub const PUBLISH_SECS: u64 = 600;

/// Publishes the router in the DHT (a `RouterOffer` of kind [`KIND`]) and
/// keeps it fresh. The address is `fixed`, or else the IP the DHT's peers
/// see this node at with `port` (a router must be public: a peer's word is
/// enough, since a client that cannot dial it just tries another).
pub async fn advertise(
    peer: Arc<crate::DhtPeer>,
    router: Arc<Router>,
    fixed: Option<SocketAddr>,
    port: u16,
) {
    loop {
        let addr = fixed.or_else(|| {
            peer.node
                .observed()
                .first()
                .map(|(_, a)| SocketAddr::new(a.ip(), port))
        });
        let wait = match addr {
            None => Duration::from_secs(5),
            Some(a) => {
                *router
                    .address
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = a.to_string();
                let payload = prost::Message::encode_to_vec(&pb::RouterOffer {
                    address: a.to_string(),
                    accepting: router.accepting(),
                });
                let record = peer.sign(KIND, PUBLISH_SECS * 3, payload);
                match peer.publish(record, true).await {
                    Ok((n, _)) if n > 1 => {
                        tracing::info!(address = %a, stored_on = n, "advertised the router in the DHT");
                        Duration::from_secs(PUBLISH_SECS)
                    }
                    Ok(_) => Duration::from_secs(5),
                    Err(e) => {
                        tracing::warn!("cannot advertise the router: {e}");
                        Duration::from_secs(60)
                    }
                }
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Serves router clients on `endpoint` (ALPN `bitdust/router/1`) until it
/// closes.
pub async fn serve(endpoint: Endpoint, router: Arc<Router>) {
    while let Some((conn, id)) = endpoint.accept().await {
        let router = router.clone();
        tokio::spawn(async move {
            let observed = conn.remote_address();
            if let Err(e) = client(router, conn.clone(), id).await {
                tracing::debug!(%id, %observed, "router client: {e}");
            }
            conn.close(0u32.into(), b"");
        });
    }
}

async fn client(router: Arc<Router>, conn: Connection, id: NodeId) -> Result<(), String> {
    let (mut send, mut recv) = tokio::time::timeout(relay::WELCOME_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| "no hello in time".to_string())?
        .map_err(|e| e.to_string())?;
    let hello: pb::Hello = frame::read_frame_within(&mut recv, 1024, relay::WELCOME_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let observed = canonical(conn.remote_address());
    let l = router.limits.clone();
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    let me = Arc::new(Client {
        id,
        // A link without a reservation is told apart from the node's
        // others by a number of its own.
        instance: if hello.reserve {
            0
        } else {
            rand::random::<u64>().max(1)
        },
        conn: conn.clone(),
        address: address_key(observed.ip()),
        reserved: hello.reserve,
        since: Instant::now(),
        tx,
        sent: AtomicU64::new(0),
        forwarded: AtomicU64::new(0),
        answers: Mutex::new(HashMap::new()),
        sources: Mutex::new(HashMap::new()),
    });
    let mut welcome = pb::Welcome {
        error: String::new(),
        observed: observed.to_string(),
        rate_bytes_per_sec: l.rate_bytes_per_sec,
        burst_bytes: l.burst_bytes,
        max_bytes: l.max_bytes,
        max_secs: l.max_secs,
        dial_back: None,
    };
    // The dial-back comes first: a reservation is admitted (and others can
    // send to it) only once its link is about to carry frames.
    if !hello.dial_back_alpn.is_empty() {
        let to = match u16::try_from(hello.dial_back_port) {
            Ok(0) => Some(observed),
            Ok(port) => Some(SocketAddr::new(observed.ip(), port)),
            Err(_) => None,
        };
        welcome.dial_back = match to {
            Some(to) => router.dial_back(id, to, &hello.dial_back_alpn).await,
            None => Some(pb::DialBack {
                reachable: false,
                error: format!(
                    "dial_back_port {} is not a port: send 1-65535, or 0 for the port the router sees",
                    hello.dial_back_port
                ),
            }),
        };
    }
    if let Err(why) = router.admit(me.clone()) {
        router.counters.refused.fetch_add(1, Ordering::Relaxed);
        welcome.error = why.clone();
        let _ = frame::write_frame(&mut send, &welcome).await;
        let _ = send.finish();
        // Let the refusal reach the client before the connection closes.
        let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
        return Err(why);
    }
    router.counters.accepted.fetch_add(1, Ordering::Relaxed);
    let result = async {
        frame::write_frame(&mut send, &welcome)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(relay::pump_frames(rx, send));
        relay_from(&router, &me, recv).await
    }
    .await;
    router.leave(&me);
    result
}

/// Reads a client's frames and forwards them, within its bucket and caps.
async fn relay_from(
    router: &Router,
    me: &Client,
    recv: bitdust_net::RecvStream,
) -> Result<(), String> {
    let l = &router.limits;
    let mut recv = tokio::io::BufReader::with_capacity(64 * 1024, recv);
    let mut bucket = Bucket::new(l.rate_bytes_per_sec, l.burst_bytes);
    let deadline =
        (l.max_secs > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(l.max_secs));
    loop {
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, relay::read_frame(&mut recv))
                    .await
                    .ok(),
                None => Some(relay::read_frame(&mut recv).await),
            }
        };
        let f = match next.await {
            None => {
                router.counters.capped.fetch_add(1, Ordering::Relaxed);
                me.conn
                    .close(1u32.into(), b"the connection reached its time cap");
                return Err("time cap reached".into());
            }
            Some(Ok(Some(f))) => f,
            Some(Ok(None)) => return Ok(()),
            Some(Err(e)) => return Err(e.to_string()),
        };
        if f.kind == TYPE_PUNCH {
            // A punch request costs as much as a full packet.
            if bucket.take(relay::MAX_PACKET) {
                router.punch(me, f.id);
            } else {
                router.counters.dropped_rate.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        if f.kind != TYPE_PACKET {
            continue;
        }
        let sent = me.sent.fetch_add(f.body.len() as u64, Ordering::Relaxed) + f.body.len() as u64;
        if l.max_bytes > 0 && sent > l.max_bytes {
            router.counters.capped.fetch_add(1, Ordering::Relaxed);
            me.conn
                .close(1u32.into(), b"the connection reached its byte cap");
            return Err("byte cap reached".into());
        }
        if !bucket.take(f.body.len()) {
            router.counters.dropped_rate.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        router.forward(me, f.id, f.instance, &f.body);
    }
}
