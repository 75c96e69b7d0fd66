//! Relayed paths: the QUIC packets of a connection to a node nobody can
//! dial, carried through a router (a relay) that both nodes reach.
//!
//! Every [`Endpoint`](crate::Endpoint) sends and receives through a
//! [`RelaySocket`]: its real UDP socket, plus the links it holds to
//! routers. A node behind a router is given a stand-in address in
//! 240.0.0.0/4 (reserved, never routed) for each (router, node id) pair;
//! a datagram quinn sends to a stand-in address goes to the router in a
//! relay frame naming the node, and a frame from the router arrives as a
//! datagram from the stand-in address of its sender. quinn runs the inner
//! connection on top as on any path: its TLS is end to end between the two
//! nodes (pinned ids, as direct), and the router sees ids, sizes and timing
//! only.
//!
//! A link is one QUIC connection to the router (ALPN [`ALPN`]) from the
//! endpoint's own socket, so the router sees the same NAT mapping as
//! everyone else. Its first stream carries a `Hello`, a `Welcome`, then
//! relay frames both ways (see `proto/bitdust/router/v1/router.proto`):
//! `[u16 length][u8 type][32-byte node id][packet]`. Frames queue in
//! bounded channels both ways, and a full queue drops the packet, as a busy
//! UDP path would: the inner QUIC connection's congestion control and
//! retransmission handle it.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bitdust_crypto::NodeId;
use bitdust_proto::router::v1 as pb;
use prost::bytes::{BufMut, Bytes, BytesMut};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Connection, UdpPoller};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::{NetError, frame};

/// The ALPN protocol of routers.
pub const ALPN: &[u8] = b"bitdust/router/1";
/// Frame type: a packet of an inner connection.
pub const TYPE_PACKET: u8 = 0;
/// Frame type: a punch request. From a client, the id names the node it
/// wants to reach (the body is empty); from the router, the id names the
/// node that asked and the body is the address the router sees it at
/// (`ip:port` in text). The node asked dials that address back.
pub const TYPE_PUNCH: u8 = 1;
/// Frame type, from the router only: the id and instance name a link
/// whose packets the router is about to forward to this node, and the
/// body is the address (`ip:port` in text) the router sees that link
/// come from. A node counts a relayed peer's per-address limits by it.
pub const TYPE_SOURCE: u8 = 2;
/// The header after a frame's length: type, node id and link instance.
pub const HEADER: usize = 1 + 32 + 8;
/// The largest packet a frame carries: above any UDP datagram quinn sends
/// (it never goes beyond 1500-byte Ethernet frames).
pub const MAX_PACKET: usize = 2048;
/// How long a router may take to answer a `Hello`.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a router's dial-back may take.
pub use crate::reachability::DIAL_BACK_TIMEOUT;
/// Frames waiting to go out to one router.
const LINK_QUEUE: usize = 1024;
/// Packets from routers waiting for quinn.
const INBOUND_QUEUE: usize = 2048;
/// (router, node, instance) paths one endpoint keeps stand-in addresses for.
const MAX_PATHS: usize = 4096;
/// A path unused this long may give its stand-in address to a new one
/// (twice the idle timeout: no live connection still uses it).
const PATH_IDLE: Duration = Duration::from_secs(60);

/// Whether `addr` is a stand-in address of a relayed path (240.0.0.0/4).
pub fn is_relayed(addr: &SocketAddr) -> bool {
    match addr.ip().to_canonical() {
        IpAddr::V4(v4) => v4.octets()[0] >= 240 && v4 != Ipv4Addr::BROADCAST,
        IpAddr::V6(_) => false,
    }
}

/// A router's node id and address.
pub type Router = (NodeId, SocketAddr);

/// Loopback (0), private or link-local (1), or anything else (2): a router
/// may ask for a dial-back only to an address of its own scope, so one on
/// the internet cannot point its clients at their loopback or LAN.
fn scope(ip: IpAddr) -> u8 {
    match ip.to_canonical() {
        IpAddr::V4(v) if v.is_loopback() => 0,
        IpAddr::V4(v) if v.is_private() || v.is_link_local() => 1,
        IpAddr::V6(v) if v.is_loopback() => 0,
        IpAddr::V6(v)
            if (v.segments()[0] & 0xfe00) == 0xfc00 || (v.segments()[0] & 0xffc0) == 0xfe80 =>
        {
            1
        }
        _ => 2,
    }
}

/// Splits a contact, `host:port` followed by ` via NODEID@ip:port` for each
/// router the node is reached through, into the direct address and the
/// routers. A router must be an IP literal (never a name a peer sent).
pub fn split_via(contact: &str) -> Result<(&str, Vec<Router>), String> {
    let mut parts = contact.split(" via ");
    let direct = parts.next().unwrap_or_default().trim();
    let mut routers = Vec::new();
    for r in parts {
        routers.push(parse_router(r.trim())?);
    }
    Ok((direct, routers))
}

/// Parses `NODEID@ip:port`, a router's contact.
pub fn parse_router(s: &str) -> Result<Router, String> {
    let bad = || format!("{s:?} is not a router's NODEID@ip:port");
    let (id, addr) = s.split_once('@').ok_or_else(bad)?;
    let id = id.parse::<NodeId>().map_err(|_| bad())?;
    let addr = addr.parse::<SocketAddr>().map_err(|_| bad())?;
    if addr.port() == 0 || addr.ip().is_unspecified() || is_relayed(&addr) {
        return Err(bad());
    }
    Ok((id, addr))
}

/// A relay frame: `[u16 length][u8 type][32-byte id][u64 instance][body]`.
/// The instance names one link of that node at the router: 0 is the link
/// that holds its reservation; the router gives every other link a number
/// of its own, so two endpoints of one node id (a customer-agent and its
/// rebuilder) each get their own answers.
pub fn encode_frame(kind: u8, id: &NodeId, instance: u64, body: &[u8]) -> Bytes {
    let mut f = BytesMut::with_capacity(2 + HEADER + body.len());
    // The callers keep `body` under MAX_PACKET, far below u16::MAX.
    f.put_u16(u16::try_from(HEADER + body.len()).unwrap_or(u16::MAX));
    f.put_u8(kind);
    f.put_slice(id.as_bytes());
    f.put_u64(instance);
    f.put_slice(body);
    f.freeze()
}

/// A relay frame read from a stream.
#[derive(Debug)]
pub struct RelayFrame {
    /// Its type.
    pub kind: u8,
    /// The node it is to (from a client) or from (from the router).
    pub id: NodeId,
    /// Which link of that node (0: the one holding its reservation).
    pub instance: u64,
    /// The packet.
    pub body: Bytes,
}

/// Reads the next relay frame; `Ok(None)` at a clean end of the stream. A
/// length too short for the header or too long for [`MAX_PACKET`] is an
/// error: the peer broke the protocol.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> io::Result<Option<RelayFrame>> {
    let len = match r.read_u16().await {
        Ok(n) => usize::from(n),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if !(HEADER..=HEADER + MAX_PACKET).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a relay frame of {len} bytes is outside {HEADER}..={}",
                HEADER + MAX_PACKET
            ),
        ));
    }
    let mut buf = BytesMut::zeroed(len);
    r.read_exact(&mut buf).await?;
    let kind = buf[0];
    let mut id = [0u8; 32];
    id.copy_from_slice(&buf[1..33]);
    let mut inst = [0u8; 8];
    inst.copy_from_slice(&buf[33..HEADER]);
    let body = buf.split_off(HEADER).freeze();
    Ok(Some(RelayFrame {
        kind,
        id: NodeId::from_bytes(id),
        instance: u64::from_be_bytes(inst),
        body,
    }))
}

/// Writes frames from `rx` to `send` until either ends, several at a time
/// when they queue up.
pub async fn pump_frames(mut rx: mpsc::Receiver<Bytes>, mut send: quinn::SendStream) {
    let mut batch = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < 60 * 1024 {
            match rx.try_recv() {
                Ok(f) => batch.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        if send.write_all(&batch).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// One relayed path: the router, the node, which of its links, and when
/// it last carried a packet.
#[derive(Debug, Clone, Copy)]
struct Path {
    router: NodeId,
    peer: NodeId,
    instance: u64,
    used: Instant,
    /// Where the router sees the peer's link come from, when it said.
    source: Option<SocketAddr>,
}

/// The stand-in addresses and the links to routers of one endpoint.
#[derive(Debug, Default)]
struct Paths {
    next: u32,
    by_addr: HashMap<SocketAddr, Path>,
    by_key: HashMap<(NodeId, NodeId, u64), SocketAddr>,
    /// Router id -> (the link's connection id, its outgoing frames).
    links: HashMap<NodeId, (usize, mpsc::Sender<Bytes>)>,
}

impl Paths {
    /// The stand-in address of `peer`'s link `instance` behind `router`,
    /// made up if new. When every address is taken, one unused for
    /// [`PATH_IDLE`] is given to it; with none, `None`.
    fn addr_for(&mut self, router: NodeId, peer: NodeId, instance: u64) -> Option<SocketAddr> {
        let now = Instant::now();
        if let Some(a) = self.by_key.get(&(router, peer, instance)).copied() {
            if let Some(p) = self.by_addr.get_mut(&a) {
                p.used = now;
            }
            return Some(a);
        }
        if self.by_key.len() >= MAX_PATHS {
            let idle = self
                .by_addr
                .iter()
                .filter(|(_, p)| now.duration_since(p.used) >= PATH_IDLE)
                .min_by_key(|(_, p)| p.used)
                .map(|(a, p)| (*a, *p))?;
            self.by_addr.remove(&idle.0);
            self.by_key
                .remove(&(idle.1.router, idle.1.peer, idle.1.instance));
        }
        let addr = loop {
            // 240.0.0.1 ..= 255.255.255.254, skipping the broadcast address
            // (which is not a stand-in) and any still taken.
            self.next = self.next.wrapping_add(1) & 0x0fff_ffff;
            if self.next == 0 || self.next == 0x0fff_ffff {
                continue;
            }
            let a = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xf000_0000 | self.next)), 1);
            if !self.by_addr.contains_key(&a) {
                break a;
            }
        };
        self.by_key.insert((router, peer, instance), addr);
        self.by_addr.insert(
            addr,
            Path {
                router,
                peer,
                instance,
                used: now,
                source: None,
            },
        );
        Some(addr)
    }
}

/// What an endpoint's socket shares with the endpoint: paths and the
/// packets routers sent.
#[derive(Debug)]
pub(crate) struct Relays {
    paths: Mutex<Paths>,
    inbound_tx: mpsc::Sender<(SocketAddr, Bytes)>,
    inbound_rx: Mutex<mpsc::Receiver<(SocketAddr, Bytes)>>,
    /// Whether the socket is IPv6 (stand-in addresses are then v4-mapped).
    v6: bool,
    /// Where punch requests from routers go (an endpoint that listens).
    punches: Mutex<Option<mpsc::Sender<(NodeId, SocketAddr)>>>,
}

impl Relays {
    pub(crate) fn new(v6: bool) -> Arc<Relays> {
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        Arc::new(Relays {
            paths: Mutex::new(Paths::default()),
            inbound_tx,
            inbound_rx: Mutex::new(inbound_rx),
            v6,
            punches: Mutex::new(None),
        })
    }

    fn paths(&self) -> MutexGuard<'_, Paths> {
        self.paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The address quinn knows a stand-in address by.
    fn outward(&self, addr: SocketAddr) -> SocketAddr {
        match (self.v6, addr.ip()) {
            (true, IpAddr::V4(v4)) => {
                SocketAddr::V6(SocketAddrV6::new(v4.to_ipv6_mapped(), addr.port(), 0, 0))
            }
            _ => addr,
        }
    }

    fn canonical(addr: &SocketAddr) -> SocketAddr {
        SocketAddr::new(addr.ip().to_canonical(), addr.port())
    }

    /// The stand-in address of `peer` through `router`, if the endpoint
    /// holds a link to that router.
    pub(crate) fn path(&self, router: NodeId, peer: NodeId) -> Option<SocketAddr> {
        let mut p = self.paths();
        if !p.links.contains_key(&router) {
            return None;
        }
        p.addr_for(router, peer, 0).map(|a| self.outward(a))
    }

    /// Records where `router` sees `peer`'s link `instance` come from.
    fn set_source(&self, router: NodeId, peer: NodeId, instance: u64, source: SocketAddr) {
        let mut p = self.paths();
        if let Some(a) = p.addr_for(router, peer, instance)
            && let Some(path) = p.by_addr.get_mut(&a)
        {
            path.source = Some(source);
        }
    }

    /// Where the router of stand-in address `addr` sees its peer's link
    /// come from, if it said.
    pub(crate) fn source(&self, addr: &SocketAddr) -> Option<SocketAddr> {
        self.paths()
            .by_addr
            .get(&Self::canonical(addr))
            .and_then(|p| p.source)
    }

    /// Which router and node a stand-in address stands for.
    pub(crate) fn behind(&self, addr: &SocketAddr) -> Option<(NodeId, NodeId)> {
        self.paths()
            .by_addr
            .get(&Self::canonical(addr))
            .map(|p| (p.router, p.peer))
    }

    /// Where punch requests go from now on; `None`: nowhere (which ends
    /// the task that answered them).
    pub(crate) fn set_punches(&self, tx: Option<mpsc::Sender<(NodeId, SocketAddr)>>) {
        *self
            .punches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tx;
    }

    /// A router passed on `peer`'s wish to connect, from `addr`.
    fn punch_request(&self, peer: NodeId, addr: SocketAddr) {
        let p = self
            .punches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = p.as_ref() {
            let _ = tx.try_send((peer, addr));
        }
    }

    /// Asks `router` to have `peer` dial this endpoint back; `false` with
    /// no link to it.
    pub(crate) fn send_punch(&self, router: NodeId, peer: NodeId) -> bool {
        let p = self.paths();
        p.links
            .get(&router)
            .is_some_and(|(_, tx)| tx.try_send(encode_frame(TYPE_PUNCH, &peer, 0, &[])).is_ok())
    }

    fn add_link(&self, router: NodeId, conn_id: usize, tx: mpsc::Sender<Bytes>) {
        self.paths().links.insert(router, (conn_id, tx));
    }

    fn drop_link(&self, router: NodeId, conn_id: usize) {
        let mut p = self.paths();
        if p.links.get(&router).is_some_and(|(id, _)| *id == conn_id) {
            p.links.remove(&router);
        }
    }

    /// Hands a packet from `peer`'s link `instance` through `router` to
    /// quinn; dropped when quinn is behind or there is no room for another
    /// path.
    fn deliver(&self, router: NodeId, peer: NodeId, instance: u64, body: Bytes) {
        let addr = self.paths().addr_for(router, peer, instance);
        if let Some(addr) = addr {
            let _ = self.inbound_tx.try_send((self.outward(addr), body));
        }
    }

    /// Sends a datagram (or several of `segment` bytes) quinn addressed to
    /// a stand-in address; dropped when there is no link or it is full.
    fn send(&self, destination: &SocketAddr, contents: &[u8], segment: Option<usize>) {
        let (tx, path) = {
            let mut p = self.paths();
            let Some(path) = p.by_addr.get_mut(&Self::canonical(destination)) else {
                return;
            };
            path.used = Instant::now();
            let path = *path;
            match p.links.get(&path.router) {
                Some((_, tx)) => (tx.clone(), path),
                None => return,
            }
        };
        let seg = segment.unwrap_or(contents.len()).max(1);
        for packet in contents.chunks(seg) {
            if packet.len() <= MAX_PACKET {
                let _ = tx.try_send(encode_frame(TYPE_PACKET, &path.peer, path.instance, packet));
            }
        }
    }

    /// Fills `bufs` with packets routers sent, as many as are waiting.
    fn poll_inbound(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<usize> {
        let mut rx = self
            .inbound_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            match rx.poll_recv(cx) {
                Poll::Ready(Some((addr, body))) => {
                    if body.len() > bufs[n].len() {
                        continue;
                    }
                    bufs[n][..body.len()].copy_from_slice(&body);
                    meta[n] = RecvMeta {
                        addr,
                        len: body.len(),
                        stride: body.len(),
                        ecn: None,
                        dst_ip: None,
                    };
                    n += 1;
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if n > 0 { Poll::Ready(n) } else { Poll::Pending }
    }
}

/// The socket under every endpoint: the real UDP socket, and relayed paths
/// for stand-in addresses.
pub(crate) struct RelaySocket {
    pub(crate) inner: Arc<dyn AsyncUdpSocket>,
    pub(crate) relays: Arc<Relays>,
    /// Which of the two sources is asked first (they take turns).
    relay_first: AtomicBool,
}

impl RelaySocket {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, relays: Arc<Relays>) -> RelaySocket {
        RelaySocket {
            inner,
            relays,
            relay_first: AtomicBool::new(false),
        }
    }
}

impl fmt::Debug for RelaySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelaySocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for RelaySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if is_relayed(&transmit.destination) {
            self.relays.send(
                &transmit.destination,
                transmit.contents,
                transmit.segment_size,
            );
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // Both sources register the waker when they have nothing.
        if self.relay_first.fetch_xor(true, Ordering::Relaxed) {
            if let Poll::Ready(n) = self.relays.poll_inbound(cx, bufs, meta) {
                return Poll::Ready(Ok(n));
            }
            self.inner.poll_recv(cx, bufs, meta)
        } else {
            match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending => self.relays.poll_inbound(cx, bufs, meta).map(Ok),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A link to a router: the connection, and what the router said.
#[derive(Debug, Clone)]
pub struct RouterLink {
    /// The router's node id.
    pub router: NodeId,
    /// The router's address.
    pub addr: SocketAddr,
    /// The address the router sees this endpoint at.
    pub observed: Option<SocketAddr>,
    /// Whether the link holds a reservation.
    pub reserved: bool,
    /// Whether the router reached this endpoint from a fresh socket, when
    /// it was asked to dial back.
    pub reachable: Option<bool>,
    /// The router's limits, as it announced them.
    pub welcome: pb::Welcome,
    conn: Connection,
    tx: mpsc::Sender<Bytes>,
}

impl RouterLink {
    /// Waits until the link ends, and says why.
    pub async fn closed(&self) -> String {
        self.conn.closed().await.to_string()
    }

    /// Whether the link is still up.
    pub fn is_up(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    /// Sends one raw packet to `to` through the router, outside any QUIC
    /// connection; `false` when the link's queue is full or the packet is
    /// too large. (Tests use it to flood a router.)
    pub fn send_packet(&self, to: &NodeId, packet: &[u8]) -> bool {
        packet.len() <= MAX_PACKET
            && self
                .tx
                .try_send(encode_frame(TYPE_PACKET, to, 0, packet))
                .is_ok()
    }

    /// Ends the link (a reservation with it).
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"done");
    }
}

/// Opens a link to the router at `addr` over `conn` (already connected
/// with ALPN [`ALPN`] and the router's id pinned): the Hello, the Welcome,
/// then the pumps both ways, registered with the endpoint's socket.
pub(crate) async fn open_link(
    relays: Arc<Relays>,
    conn: Connection,
    router: NodeId,
    addr: SocketAddr,
    hello: pb::Hello,
) -> Result<RouterLink, NetError> {
    let reserve = hello.reserve;
    let fail = |reason: String| NetError::Connect { addr, reason };
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| fail(format!("the router closed the connection: {e}")))?;
    frame::write_frame(&mut send, &hello)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let welcome: pb::Welcome = frame::read_frame_within(&mut recv, 4096, WELCOME_TIMEOUT)
        .await
        .map_err(|e| fail(format!("the router did not welcome us: {e}")))?;
    if !welcome.error.is_empty() {
        conn.close(0u32.into(), b"refused");
        return Err(fail(format!("the router refused: {}", welcome.error)));
    }
    let (tx, rx) = mpsc::channel(LINK_QUEUE);
    let conn_id = conn.stable_id();
    relays.add_link(router, conn_id, tx.clone());
    tokio::spawn(pump_frames(rx, send));
    let reader_relays = relays.clone();
    let reader_conn = conn.clone();
    tokio::spawn(async move {
        let mut recv = tokio::io::BufReader::with_capacity(64 * 1024, recv);
        loop {
            match read_frame(&mut recv).await {
                Ok(Some(f)) if f.kind == TYPE_PACKET => {
                    reader_relays.deliver(router, f.id, f.instance, f.body);
                }
                Ok(Some(f)) if f.kind == TYPE_PUNCH => {
                    if let Some(addr) = std::str::from_utf8(&f.body)
                        .ok()
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                        .map(|a| Relays::canonical(&a))
                        .filter(|a| {
                            !is_relayed(a)
                                && !a.ip().is_unspecified()
                                && scope(a.ip()) == scope(addr.ip())
                        })
                    {
                        reader_relays.punch_request(f.id, addr);
                    }
                }
                Ok(Some(f)) if f.kind == TYPE_SOURCE => {
                    if let Some(source) = std::str::from_utf8(&f.body)
                        .ok()
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                        .map(|a| Relays::canonical(&a))
                        .filter(|a| !is_relayed(a) && !a.ip().is_unspecified())
                    {
                        reader_relays.set_source(router, f.id, f.instance, source);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%router, error = %e, "the router link broke");
                    break;
                }
            }
        }
        reader_relays.drop_link(router, conn_id);
        reader_conn.close(0u32.into(), b"link ended");
    });
    Ok(RouterLink {
        router,
        addr,
        observed: welcome
            .observed
            .parse::<SocketAddr>()
            .ok()
            .map(|a| Relays::canonical(&a)),
        reserved: reserve,
        reachable: welcome.dial_back.as_ref().map(|d| d.reachable),
        welcome,
        conn,
        tx,
    })
}
