//! The peer transport of BitDust: QUIC through quinn, authenticated both
//! ways by the nodes' ed25519 identities.
//!
//! - [`tls`]: every node's TLS certificate is self-signed with its node key.
//!   Both sides present one (mutual TLS); the peer's [`NodeId`] is the key in
//!   its certificate, and the TLS 1.3 handshake signature proves the peer holds
//!   that key. A dialer pins the node id it expects.
//! - [`frame`]: one request per bidirectional stream, as length-prefixed
//!   protobuf frames with a size limit, payloads streamed after them.
//! - [`Endpoint`]: one UDP socket that accepts and dials connections.
//!   Handshakes run concurrently, each with a timeout, with caps on the
//!   handshakes in flight per source address and in total, so clients that
//!   send a ClientHello and go silent delay nobody else.
//! - [`relay`]: paths through a router to nodes nobody can dial; the
//!   endpoint's socket carries them beside its direct ones.

pub mod frame;
pub mod places;
pub mod portmap;
pub mod reachability;
pub mod relay;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitdust_crypto::{Identity, NodeId};

pub use quinn::{Connection, RecvStream, SendStream};

/// Setting up or using a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TLS configuration could not be built.
    #[error("cannot set up TLS for the node key: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error(
        "cannot listen for QUIC on {addr}: {source}; pick a free port or address in the config"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A connection could not be made.
    #[error("cannot reach {addr}: {reason}")]
    Connect {
        /// The address dialed.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The peer's certificate carries no usable node key.
    #[error("the peer at {0} presented no BitDust node certificate")]
    NoPeerId(SocketAddr),
}

/// A QUIC endpoint bound to one UDP socket, speaking one ALPN protocol.
#[derive(Clone, Debug)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    node_id: NodeId,
    /// Connections whose handshake completed, from the acceptor task
    /// (`None` for an endpoint that only dials).
    accepted: Option<Arc<tokio::sync::Mutex<Accepted>>>,
    /// Stand-in addresses and router links of the endpoint's socket.
    relays: Arc<relay::Relays>,
    /// Dials routers (ALPN [`relay::ALPN`]).
    router_client: quinn::ClientConfig,
    /// Per router: held while a link to it is being opened.
    linking: Arc<Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>>,
    /// Incoming connections awaited by [`Endpoint::punch_connect`], by the
    /// peer's id.
    expected: Expected,
    /// The ALPN protocol it speaks.
    alpn: Vec<u8>,
}

/// Which connections an endpoint accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// None: it only dials.
    Not,
    /// Every node's, handed to [`Endpoint::accept`] (a supplier, a DHT
    /// node, a router); it also answers punch requests routers pass on.
    All,
    /// Only those of peers it is punching a hole to
    /// ([`Endpoint::punch_connect`]); any other is closed at once.
    Expected,
}

/// Incoming connections awaited, by the peer's id (with the token of the
/// punch that awaits it).
type Expected = Arc<Mutex<HashMap<NodeId, (u64, tokio::sync::oneshot::Sender<Connection>)>>>;

/// Removes a punch's entry from [`Expected`] when the punch ends (also when
/// it is cancelled), unless a later punch to the same peer took it over.
struct ExpectGuard {
    expected: Expected,
    peer: NodeId,
    token: u64,
}

impl Drop for ExpectGuard {
    fn drop(&mut self) {
        let mut e = lock(&self.expected);
        if e.get(&self.peer).is_some_and(|(t, _)| *t == self.token) {
            e.remove(&self.peer);
        }
    }
}

/// Punch requests waiting to be dialed back.
const PUNCH_QUEUE: usize = 64;
/// Punch dials in flight at once.
const MAX_PUNCHES: usize = 16;
/// How long a punch dial-back may take.
const PUNCH_DIAL: Duration = Duration::from_secs(5);
/// How long a connection the peer dialed waits for ours, which is kept
/// when both complete.
const PUNCH_GRACE: Duration = Duration::from_millis(500);
/// The application close code of a duplicate connection.
pub const CLOSE_DUPLICATE: u32 = 2;

/// Dials back the nodes routers say want to reach this one, at the
/// address the router sees them at: the packets open this node's NAT
/// towards them, and when theirs lets ours in, the connection is handed to
/// the daemon's accept loop like any other.
async fn answer_punches(
    endpoint: Endpoint,
    mut requests: tokio::sync::mpsc::Receiver<(NodeId, SocketAddr)>,
    to_daemon: tokio::sync::mpsc::Sender<(Connection, NodeId)>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PUNCHES));
    while let Some((peer, addr)) = requests.recv().await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, %addr, "too many punch dials in flight; request dropped");
            continue;
        };
        let (endpoint, to_daemon) = (endpoint.clone(), to_daemon.clone());
        tokio::spawn(async move {
            let r = tokio::time::timeout(PUNCH_DIAL, endpoint.connect(addr, Some(peer))).await;
            drop(slot);
            match r {
                Ok(Ok(conn)) => {
                    tracing::debug!(%peer, %addr, "a punched connection came up");
                    let _ = to_daemon.send((conn, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, %addr, "punch dial failed: {e}"),
                Err(_) => tracing::debug!(%peer, %addr, "punch dial timed out"),
            }
        });
    }
}

/// Where the acceptor task hands over connections that completed their
/// handshake.
type Accepted = tokio::sync::mpsc::Receiver<(Connection, NodeId)>;

/// How long one incoming handshake may take before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Incoming handshakes in flight at most, from all addresses together.
pub const MAX_HANDSHAKES: usize = 256;
/// Incoming handshakes in flight at most from one IP address.
pub const MAX_HANDSHAKES_PER_IP: usize = 16;
/// Completed connections waiting for the daemon's accept loop.
const ACCEPTED_QUEUE: usize = 64;

/// Bytes a peer may have sent on one connection that this node has not
/// read yet: QUIC's connection-level flow-control window. quinn's default
/// is unlimited, which let each of the 256 streams a peer may open fill
/// its own 1.25 MB window, about 320 MB per connection. 16 MiB covers a
/// 400 Mbit/s link at 300 ms round trip (not measured here: no netem).
/// Bytes of streams the daemon has not taken up yet count against it, so
/// a customer sends at most as many puts at once as a supplier lands.
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// How long a connection may stay silent before it is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Keep-alive interval, well inside the idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // The constant fits the VarInt range (below 2^62 ms).
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.receive_window(CONNECTION_WINDOW.into());
    t.max_concurrent_bidi_streams(256u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    Arc::new(t)
}

impl Endpoint {
    /// Binds `addr` (UDP), accepting connections that speak `alpn` and dialing
    /// with it, as `identity`. When `listen` is false the endpoint only dials.
    pub fn bind(
        identity: &Identity,
        addr: SocketAddr,
        alpn: &[u8],
        listen: bool,
    ) -> Result<Endpoint, NetError> {
        let mode = if listen { Listen::All } else { Listen::Not };
        Endpoint::bind_with(identity, addr, alpn, mode)
    }

    /// [`Endpoint::bind`] with a [`Listen`] mode.
    pub fn bind_with(
        identity: &Identity,
        addr: SocketAddr,
        alpn: &[u8],
        mode: Listen,
    ) -> Result<Endpoint, NetError> {
        let listen = mode != Listen::Not;
        let client = tls::client_config(identity, alpn)?;
        let mut client = quinn::ClientConfig::new(client);
        client.transport_config(transport());
        let mut router_client =
            quinn::ClientConfig::new(tls::client_config(identity, relay::ALPN)?);
        router_client.transport_config(transport());
        let server = if listen {
            let mut server = quinn::ServerConfig::with_crypto(tls::server_config(identity, alpn)?);
            server.transport_config(transport());
            Some(server)
        } else {
            None
        };
        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| NetError::Bind { addr, source })?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| NetError::Tls("no async runtime is running".into()))?;
        let relays = relay::Relays::new(addr.is_ipv6());
        let socket = runtime
            .wrap_udp_socket(socket)
            .map_err(|source| NetError::Bind { addr, source })?;
        let socket = Arc::new(relay::RelaySocket::new(socket, relays.clone()));
        let mut inner = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            server,
            socket,
            runtime,
        )
        .map_err(|source| NetError::Bind { addr, source })?;
        inner.set_default_client_config(client);
        let expected: Expected = Arc::default();
        let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
        let accepted = if listen {
            let to_daemon = (mode == Listen::All).then(|| tx.clone());
            tokio::spawn(accept_loop(inner.clone(), to_daemon, expected.clone()));
            (mode == Listen::All).then(|| Arc::new(tokio::sync::Mutex::new(rx)))
        } else {
            None
        };
        let endpoint = Endpoint {
            inner,
            node_id: identity.node_id(),
            accepted,
            relays,
            router_client,
            linking: Arc::default(),
            expected,
            alpn: alpn.to_vec(),
        };
        if mode == Listen::All {
            // Routers pass on punch requests for nodes holding a
            // reservation: dial the asker back, and serve what connects
            // like any accepted connection.
            let (ptx, prx) = tokio::sync::mpsc::channel(PUNCH_QUEUE);
            endpoint.relays.set_punches(Some(ptx));
            tokio::spawn(answer_punches(endpoint.clone(), prx, tx));
        }
        Ok(endpoint)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The bound address (with the port the OS picked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Connects to `addr`, which must prove it holds the key of `expected`;
    /// `None` accepts any node (trust on first use), whose id
    /// [`peer_id`] then tells.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<NodeId>,
    ) -> Result<Connection, NetError> {
        let name = tls::server_name(expected);
        let connecting = self
            .inner
            .connect(addr, &name)
            .map_err(|e| NetError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        connecting.await.map_err(|e| NetError::Connect {
            addr,
            reason: describe_connection_error(&e),
        })
    }

    /// Opens a link to the router `router` at `addr` from this endpoint's
    /// socket; with `reserve`, other nodes may reach this one through it
    /// while the link lives. A link replaces an earlier one to the same
    /// router.
    pub async fn link_router(
        &self,
        addr: SocketAddr,
        router: NodeId,
        reserve: bool,
    ) -> Result<relay::RouterLink, NetError> {
        self.link_router_checked(addr, router, reserve, None).await
    }

    /// [`Endpoint::link_router`], and with `dial_back` the router also
    /// dials this endpoint back from a fresh socket (its ALPN, its id
    /// pinned) and says whether that worked: whether a stranger can reach
    /// this endpoint at the address the router sees
    /// ([`relay::RouterLink::reachable`]). `Some(0)` asks for the port the
    /// router sees, `Some(port)` for another port of the same IP (a port
    /// mapping's).
    pub async fn link_router_checked(
        &self,
        addr: SocketAddr,
        router: NodeId,
        reserve: bool,
        dial_back: Option<u16>,
    ) -> Result<relay::RouterLink, NetError> {
        let hello = bitdust_proto::router::v1::Hello {
            reserve,
            dial_back_alpn: if dial_back.is_some() {
                String::from_utf8_lossy(&self.alpn).into_owned()
            } else {
                String::new()
            },
            dial_back_port: dial_back.map_or(0, u32::from),
        };
        let name = tls::server_name(Some(router));
        let connecting = self
            .inner
            .connect_with(self.router_client.clone(), addr, &name)
            .map_err(|e| NetError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let conn = connecting.await.map_err(|e| NetError::Connect {
            addr,
            reason: describe_connection_error(&e),
        })?;
        relay::open_link(self.relays.clone(), conn, router, addr, hello).await
    }

    /// The address to dial `peer` at through the router `router` at
    /// `addr`, linking to the router (without a reservation) first when
    /// this endpoint holds no link to it.
    pub async fn path_through(
        &self,
        addr: SocketAddr,
        router: NodeId,
        peer: NodeId,
    ) -> Result<SocketAddr, NetError> {
        if let Some(a) = self.relays.path(router, peer) {
            return Ok(a);
        }
        // One link being opened per router at a time; other routers wait
        // for nothing.
        let one = lock(&self.linking).entry(router).or_default().clone();
        let _one_at_a_time = one.lock().await;
        if let Some(a) = self.relays.path(router, peer) {
            return Ok(a);
        }
        self.link_router(addr, router, false).await?;
        self.relays
            .path(router, peer)
            .ok_or_else(|| NetError::Connect {
                addr,
                reason: "the endpoint keeps too many relayed paths".into(),
            })
    }

    /// Connects to `peer` at `direct` while asking it, through `router`
    /// (which this endpoint must hold a link to), to dial this endpoint
    /// back at the address the router sees it at: a hole punch, both ends
    /// dialing at once from their one socket. When both connections come
    /// up, the one this endpoint dialed is kept and the other closed
    /// ([`CLOSE_DUPLICATE`]). Fails when neither comes up within `window`.
    /// The endpoint must listen ([`Listen::Expected`] or [`Listen::All`])
    /// for the peer's dial to be taken.
    pub async fn punch_connect(
        &self,
        direct: SocketAddr,
        router: NodeId,
        peer: NodeId,
        window: Duration,
    ) -> Result<Connection, NetError> {
        let (tx, mut incoming) = tokio::sync::oneshot::channel();
        let token = next_token();
        lock(&self.expected).insert(peer, (token, tx));
        // Its entry goes when it ends, cancelled or not; a peer's connection
        // that comes later is closed as unexpected.
        let _guard = ExpectGuard {
            expected: self.expected.clone(),
            peer,
            token,
        };
        async {
            if !self.relays.send_punch(router, peer) {
                return Err(NetError::Connect {
                    addr: direct,
                    reason: format!("no link to router {router} to punch through"),
                });
            }
            let dial = self.connect(direct, Some(peer));
            tokio::pin!(dial);
            let deadline = tokio::time::Instant::now() + window;
            let mut dial_error = None;
            let mut incoming_open = true;
            loop {
                tokio::select! {
                    r = &mut dial, if dial_error.is_none() => match r {
                        Ok(c) => return Ok(c),
                        Err(e) => dial_error = Some(e),
                    },
                    r = &mut incoming, if incoming_open => {
                        // Another punch to the same peer took the entry
                        // over: its dial-back goes there; ours goes on.
                        let Ok(theirs) = r else {
                            incoming_open = false;
                            continue;
                        };
                        // Ours is kept when it completes too.
                        if dial_error.is_none()
                            && let Ok(Ok(ours)) = tokio::time::timeout(PUNCH_GRACE, &mut dial).await
                        {
                            theirs.close(CLOSE_DUPLICATE.into(), b"duplicate");
                            return Ok(ours);
                        }
                        return Ok(theirs);
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            Err(dial_error.unwrap_or(NetError::Connect {
                addr: direct,
                reason: format!("no hole punched within {window:?}"),
            }))
        }
        .await
    }

    /// The address to dial `peer` at through `router`, if this endpoint
    /// holds a link to that router ([`Endpoint::link_router`]).
    pub fn relayed(&self, router: NodeId, peer: NodeId) -> Option<SocketAddr> {
        self.relays.path(router, peer)
    }

    /// The router a relayed connection's address goes through, or `None`
    /// for a direct one.
    pub fn router_of(&self, conn: &Connection) -> Option<NodeId> {
        self.relays
            .behind(&conn.remote_address())
            .map(|(router, _)| router)
    }

    /// Where `conn`'s peer really is: its remote address, or for a
    /// connection through a router, the address the router sees the
    /// peer's link come from (its stand-in address when the router did
    /// not say). Per-address limits count by this.
    pub fn source_of(&self, conn: &Connection) -> SocketAddr {
        let remote = conn.remote_address();
        self.relays.source(&remote).unwrap_or(remote)
    }

    /// The next incoming connection that completed its handshake, with the
    /// peer's node id; `None` once the endpoint is closed (or it only
    /// dials). Handshakes run on their own tasks (see [`HANDSHAKE_TIMEOUT`],
    /// [`MAX_HANDSHAKES`], [`MAX_HANDSHAKES_PER_IP`]); those that fail or
    /// time out are logged and skipped.
    pub async fn accept(&self) -> Option<(Connection, NodeId)> {
        self.accepted.as_ref()?.lock().await.recv().await
    }

    /// Stops accepting, closes every connection and waits for them to end.
    pub async fn shutdown(&self) {
        // The punch answerer ends (and lets go of its endpoint clone).
        self.relays.set_punches(None);
        self.inner.close(0u32.into(), b"shutting down");
        self.inner.wait_idle().await;
    }
}

/// Takes every incoming connection at once: refused when the caps are
/// reached, otherwise handshaken on its own task with a timeout, and
/// handed to [`Endpoint::accept`] when the peer proved a node key.
async fn accept_loop(
    inner: quinn::Endpoint,
    tx: Option<tokio::sync::mpsc::Sender<(Connection, NodeId)>>,
    expected: Expected,
) {
    // Handshakes in flight, in all and per source IP.
    let handshakes = places::Places::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_IP);
    while let Some(incoming) = inner.accept().await {
        let remote = incoming.remote_address();
        let Ok(slot) = handshakes.take(remote.ip().to_canonical()) else {
            tracing::debug!(%remote, "too many handshakes in flight; connection refused");
            incoming.refuse();
            continue;
        };
        let (tx, expected) = (tx.clone(), expected.clone());
        tokio::spawn(async move {
            let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await;
            drop(slot);
            match result {
                Ok(Ok(conn)) => match peer_id(&conn) {
                    Some(id) => {
                        let waiting = lock(&expected).remove(&id).map(|(_, w)| w);
                        match (waiting, tx) {
                            (Some(w), _) => {
                                if let Err(conn) = w.send(conn) {
                                    conn.close(CLOSE_DUPLICATE.into(), b"duplicate");
                                }
                            }
                            (None, Some(tx)) => {
                                let _ = tx.send((conn, id)).await;
                            }
                            (None, None) => conn.close(1u32.into(), b"not expected"),
                        }
                    }
                    None => {
                        conn.close(1u32.into(), b"no node certificate");
                        tracing::warn!(%remote, "peer presented no node certificate");
                    }
                },
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "handshake failed"),
                Err(_) => tracing::debug!(%remote, "handshake timed out"),
            }
        });
    }
}

/// A token no other punch of this process holds (a counter: it only has
/// to be unique, not secret).
fn next_token() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn lock<X>(m: &Mutex<X>) -> std::sync::MutexGuard<'_, X> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The node id of the peer of an established connection.
pub fn peer_id(conn: &Connection) -> Option<NodeId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    tls::node_id_of(certs.first()?).ok()
}

fn describe_connection_error(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::TimedOut => {
            "no answer (is the node running and the address right?)".into()
        }
        quinn::ConnectionError::TransportError(t) => {
            format!("the handshake failed: {}", t.reason)
        }
        other => other.to_string(),
    }
}
