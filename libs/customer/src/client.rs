//! The customer side of the peer protocol: one [`SupplierLink`] per hired
//! supplier, over a QUIC connection pinned to the supplier's node id and
//! re-established when it drops.

use std::net::SocketAddr;
use std::time::Duration;

use bitdust_crypto::NodeId;
use bitdust_net::frame::{self, FrameError};
use bitdust_net::{Connection, Endpoint, RecvStream, relay};
use bitdust_proto::peer::v1 as pb;
use bitdust_proto::peer::v1::{request, response};
use bytes::Bytes;
use tokio::sync::Mutex;

/// Largest response frame the customer reads (a list of 1000 names).
const MAX_RESPONSE: usize = frame::MAX_FRAME;

/// A call to a supplier failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// No connection, a timeout or a broken stream: the supplier is down
    /// or unreachable.
    #[error("{0}")]
    Unreachable(String),
    /// The supplier answered with an error.
    #[error("{message}")]
    Refused {
        /// Its code.
        code: pb::ErrorCode,
        /// Its message.
        message: String,
    },
    /// The supplier answered something that makes no sense.
    #[error("the supplier broke the protocol: {0}")]
    Protocol(String),
}

impl PeerError {
    /// Whether the supplier said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            PeerError::Refused {
                code: pb::ErrorCode::NotFound,
                ..
            }
        )
    }
}

/// How long a hole punch to a supplier that names routers may take in all.
const PUNCH_WINDOW: Duration = Duration::from_secs(3);
/// Routers of one supplier tried at most, in the order its contact names
/// them.
const MAX_ROUTERS: usize = 4;
/// How often a relayed connection tries a hole punch again.
const UPGRADE_EVERY: Duration = Duration::from_secs(120);
/// How long the punch goes alone before the connection through the router
/// is dialed too.
const PUNCH_HEAD: Duration = Duration::from_secs(1);

/// An object as it arrived: QUIC's own buffers, in order, not copied
/// into one. It reads (`std::io::Read`) front to back.
#[derive(Debug, Default)]
pub struct Received {
    parts: std::collections::VecDeque<Bytes>,
    len: usize,
}

impl Received {
    /// Bytes left to read.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is left to read.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes in one buffer.
    pub fn into_vec(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for p in &self.parts {
            out.extend_from_slice(p);
        }
        out
    }
}

impl std::io::Read for Received {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use bytes::Buf;
        while self.parts.front().is_some_and(Bytes::is_empty) {
            self.parts.pop_front();
        }
        let Some(front) = self.parts.front_mut() else {
            return Ok(0);
        };
        let n = front.len().min(buf.len());
        buf[..n].copy_from_slice(&front[..n]);
        front.advance(n);
        if front.is_empty() {
            self.parts.pop_front();
        }
        self.len -= n;
        Ok(n)
    }
}

/// Reads exactly `size` bytes of `recv`, as they come: a supplier that
/// claims a large object makes us hold only what it actually sends.
async fn read_received(
    recv: &mut bitdust_net::RecvStream,
    size: usize,
) -> Result<Received, FrameError> {
    let mut got = Received::default();
    while got.len < size {
        let Some(chunk) = frame::read_chunk(recv, size - got.len).await? else {
            return Err(FrameError::Truncated);
        };
        got.len += chunk.len();
        got.parts.push_back(chunk);
    }
    Ok(got)
}

impl From<FrameError> for PeerError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { .. } | FrameError::Decode(_) => {
                PeerError::Protocol(e.to_string())
            }
            FrameError::Truncated | FrameError::Io(_) | FrameError::TimedOut(_) => {
                PeerError::Unreachable(e.to_string())
            }
        }
    }
}

/// Resolves `host:port` to one socket address.
pub async fn resolve(addr: &str) -> Result<SocketAddr, PeerError> {
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| PeerError::Unreachable(format!("cannot resolve {addr}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| PeerError::Unreachable(format!("{addr} resolves to no address")))
}

/// A connection to one supplier.
pub struct SupplierLink {
    endpoint: Endpoint,
    /// The supplier's node id (pinned).
    pub node_id: NodeId,
    /// Its `host:port`.
    pub address: String,
    timeout: Duration,
    conn: std::sync::Arc<Mutex<Option<Connection>>>,
    /// When a relayed connection last tried to go direct.
    last_punch: std::sync::Mutex<Option<std::time::Instant>>,
    /// Puts sent at once at most ([`PUTS_AT_ONCE`]).
    puts: tokio::sync::Semaphore,
}

/// Puts one link sends at once at most: as many as a supplier lands of a
/// connection at once. Puts beyond those would wait at the supplier with
/// their bytes unread in the connection's flow-control window
/// ([`bitdust_net::CONNECTION_WINDOW`]), and could fill it, leaving the
/// puts it is landing without room for theirs. Every caller sharing the
/// link (concurrent backups, the rebuilder's blocks) counts.
pub const PUTS_AT_ONCE: usize = bitdust_supplier::peer::LANDING_PER_CONNECTION;

/// Which connection a link had open and how much it had heard on it
/// ([`SupplierLink::heard`]). It holds the connection, so that another
/// made meanwhile is never taken for it.
#[derive(Clone, Debug)]
pub struct Heard {
    conn: Connection,
    frames: u64,
}

impl Heard {
    fn of(c: &Connection) -> Heard {
        // Frames counted once their packet decrypted: only the peer can
        // have sent them (a datagram count would include forged ones).
        // A peer that is there acknowledges what it is sent.
        let f = c.stats().frame_rx;
        Heard {
            conn: c.clone(),
            frames: f.acks + f.stream + f.ping + f.max_data + f.max_stream_data,
        }
    }

    /// How many frames the peer had been heard sending at this mark.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Whether this is the same connection as `other`'s.
    pub fn same_connection(&self, other: &Heard) -> bool {
        self.conn.stable_id() == other.conn.stable_id()
    }
}

impl SupplierLink {
    /// A link that connects on first use.
    pub fn new(endpoint: Endpoint, node_id: NodeId, address: String, timeout: Duration) -> Self {
        SupplierLink {
            endpoint,
            node_id,
            address,
            timeout,
            conn: std::sync::Arc::default(),
            last_punch: std::sync::Mutex::new(None),
            puts: tokio::sync::Semaphore::new(PUTS_AT_ONCE),
        }
    }

    /// Connects to `address` without knowing who is there (trust on first
    /// use) and returns the node id it presented.
    pub async fn discover(
        endpoint: &Endpoint,
        address: &str,
        timeout: Duration,
    ) -> Result<NodeId, PeerError> {
        let addr = resolve(address).await?;
        let conn = tokio::time::timeout(timeout, endpoint.connect(addr, None))
            .await
            .map_err(|_| {
                PeerError::Unreachable(format!("{address} did not answer within {timeout:?}"))
            })?
            .map_err(|e| PeerError::Unreachable(e.to_string()))?;
        let id =
            bitdust_net::peer_id(&conn).ok_or_else(|| PeerError::Protocol("no node id".into()))?;
        conn.close(0u32.into(), b"");
        Ok(id)
    }

    async fn connection(&self) -> Result<Connection, PeerError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && c.close_reason().is_none()
        {
            if let Some(router) = self.endpoint.router_of(c) {
                self.try_upgrade(c, router);
            }
            return Ok(c.clone());
        }
        let (direct, routers) = relay::split_via(&self.address).map_err(PeerError::Unreachable)?;
        let conn = if routers.is_empty() {
            self.dial(direct, self.timeout).await?
        } else {
            self.dial_either(direct, &routers).await?
        };
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Dials a supplier that names routers, through each router in turn:
    /// a hole punch (this end dials the supplier's address while the
    /// router asks the supplier to dial back, [`PUNCH_WINDOW`] in all) on
    /// a task of its own, and after [`PUNCH_HEAD`] without a direct
    /// connection, the connection through the router as well. The first
    /// that comes up is used; a punch that succeeds after the relayed
    /// connection came up replaces it (the link goes direct), and the
    /// relayed one closes when its calls end. The punch runs on a task of
    /// its own: a caller that gives up (a ping's short timeout) cancels
    /// only its wait (a connection that comes later is dropped, and the
    /// next call punches again).
    async fn dial_either(
        &self,
        direct: &str,
        routers: &[relay::Router],
    ) -> Result<Connection, PeerError> {
        let mut errors = Vec::new();
        let direct_addr = resolve(direct).await.ok();
        for (id, addr) in routers.iter().take(MAX_ROUTERS) {
            let path = match tokio::time::timeout(
                self.timeout,
                self.endpoint.path_through(*addr, *id, self.node_id),
            )
            .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    errors.push(format!("router {id}@{addr}: {e}"));
                    continue;
                }
                Err(_) => {
                    errors.push(format!(
                        "router {id}@{addr} did not answer within {:?}",
                        self.timeout
                    ));
                    continue;
                }
            };
            *self
                .last_punch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(std::time::Instant::now());
            let mut punch = direct_addr.map(|d| {
                let endpoint = self.endpoint.clone();
                let (router, peer) = (*id, self.node_id);
                let window = PUNCH_WINDOW.min(self.timeout);
                tokio::spawn(async move { endpoint.punch_connect(d, router, peer, window).await })
            });
            if let Some(p) = punch.as_mut()
                && let Ok(done) = tokio::time::timeout(PUNCH_HEAD, &mut *p).await
            {
                match done {
                    Ok(Ok(c)) => return Ok(c),
                    Ok(Err(e)) => errors.push(format!("direct: {e}")),
                    Err(e) => errors.push(format!("direct: {e}")),
                }
                punch = None;
            }
            // The relayed dial, and the punch still going beside it: the
            // first that comes up is used.
            let relayed = tokio::time::timeout(
                self.timeout,
                self.endpoint.connect(path, Some(self.node_id)),
            );
            tokio::pin!(relayed);
            let mut relayed_done = false;
            while !relayed_done || punch.is_some() {
                tokio::select! {
                    r = &mut relayed, if !relayed_done => {
                        relayed_done = true;
                        match r {
                            Ok(Ok(c)) => {
                                if let Some(p) = punch.take() {
                                    self.upgrade_when(p, c.clone());
                                }
                                return Ok(c);
                            }
                            Ok(Err(e)) => errors.push(format!("through router {id}@{addr}: {e}")),
                            Err(_) => errors.push(format!(
                                "through router {id}@{addr}: no answer within {:?}",
                                self.timeout
                            )),
                        }
                    }
                    r = async {
                        match punch.as_mut() {
                            Some(p) => p.await,
                            None => std::future::pending().await,
                        }
                    }, if punch.is_some() => {
                        punch = None;
                        match r {
                            Ok(Ok(c)) => return Ok(c),
                            Ok(Err(e)) => errors.push(format!("direct: {e}")),
                            Err(e) => errors.push(format!("direct: {e}")),
                        }
                    }
                }
            }
        }
        Err(PeerError::Unreachable(format!(
            "supplier {} is reachable neither directly nor through its routers: {}",
            self.node_id,
            errors.join("; ")
        )))
    }

    /// When the punch `p` comes up after the relayed connection `relayed`
    /// did, it replaces it (if the link still uses it).
    fn upgrade_when(
        &self,
        p: tokio::task::JoinHandle<Result<Connection, bitdust_net::NetError>>,
        relayed: Connection,
    ) {
        let slot = self.conn.clone();
        tokio::spawn(async move {
            if let Ok(Ok(direct)) = p.await {
                let mut g = slot.lock().await;
                if g.as_ref()
                    .is_some_and(|now| now.stable_id() == relayed.stable_id())
                {
                    *g = Some(direct);
                } else {
                    direct.close(bitdust_net::CLOSE_DUPLICATE.into(), b"duplicate");
                }
            }
        });
    }

    /// A relayed connection tries a hole punch again every
    /// [`UPGRADE_EVERY`], on a task of its own: when one works, the direct
    /// connection replaces the relayed one.
    fn try_upgrade(&self, relayed: &Connection, router: NodeId) {
        {
            let mut last = self
                .last_punch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < UPGRADE_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let Ok((direct, _)) = relay::split_via(&self.address) else {
            return;
        };
        let Ok(direct) = direct.parse::<SocketAddr>() else {
            return;
        };
        let (endpoint, slot, relayed, peer) = (
            self.endpoint.clone(),
            self.conn.clone(),
            relayed.clone(),
            self.node_id,
        );
        tokio::spawn(async move {
            if let Ok(c) = endpoint
                .punch_connect(direct, router, peer, PUNCH_WINDOW)
                .await
            {
                let mut g = slot.lock().await;
                if g.as_ref()
                    .is_some_and(|now| now.stable_id() == relayed.stable_id())
                {
                    tracing::info!(supplier = %peer, "a hole punch worked: the link goes direct");
                    *g = Some(c);
                } else {
                    c.close(bitdust_net::CLOSE_DUPLICATE.into(), b"duplicate");
                }
            }
        });
    }

    /// Connects to the supplier at `address`, its id pinned.
    async fn dial(&self, address: &str, timeout: Duration) -> Result<Connection, PeerError> {
        let addr = resolve(address).await?;
        tokio::time::timeout(timeout, self.endpoint.connect(addr, Some(self.node_id)))
            .await
            .map_err(|_| {
                PeerError::Unreachable(format!(
                    "supplier {} at {address} did not answer within {timeout:?}",
                    self.node_id
                ))
            })?
            .map_err(|e| PeerError::Unreachable(e.to_string()))
    }

    /// How the link's connection goes now: `None` when there is none (or
    /// it is being made), `Some(None)` direct, `Some(Some(router))` through
    /// that router.
    pub fn route(&self) -> Option<Option<NodeId>> {
        let c = self.conn.try_lock().ok()?;
        c.as_ref()
            .filter(|c| c.close_reason().is_none())
            .map(|c| self.endpoint.router_of(c))
    }

    /// Forgets the connection (the next call reconnects).
    pub async fn reset(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            c.close(0u32.into(), b"");
        }
    }

    /// What the link's open connection has received so far (`None`: none
    /// is open), to tell later with [`Self::reset_if_silent`] whether the
    /// supplier was heard meanwhile.
    pub async fn heard(&self) -> Option<Heard> {
        let c = self.conn.lock().await;
        c.as_ref()
            .filter(|c| c.close_reason().is_none())
            .map(Heard::of)
    }

    /// Forgets the connection after a request went unanswered, unless the
    /// supplier was heard on it since `mark` (or it is another connection
    /// than the one marked, made meanwhile): its QUIC stack acknowledged
    /// or sent something, so it is there, busy or behind a full link, and
    /// closing the connection would only throw away the other requests in
    /// flight on it. One that heard nothing is closed, so that the next
    /// request dials afresh (the supplier may be back at its address as a
    /// new process). Whether it was closed.
    pub async fn reset_if_silent(&self, mark: Option<Heard>) -> bool {
        let mut guard = self.conn.lock().await;
        let Some(c) = guard.as_ref() else {
            return false;
        };
        let now = Heard::of(c);
        let silent = c.close_reason().is_some()
            || mark.is_some_and(|m| m.same_connection(&now) && now.frames <= m.frames);
        if silent && let Some(c) = guard.take() {
            c.close(0u32.into(), b"");
        }
        silent
    }

    /// Sends one request (and payload), returns the response and the stream
    /// to read a payload from.
    async fn call(
        &self,
        req: request::Kind,
        payload: Option<Vec<Bytes>>,
    ) -> Result<(response::Kind, RecvStream), PeerError> {
        let payload_len: u64 = payload.iter().flatten().map(|p| p.len() as u64).sum();
        // Connecting has timeouts of its own (a direct try, a punch, then
        // routers); this bounds them all.
        let limit = self.timeout * 3 + PUNCH_WINDOW;
        let conn = tokio::time::timeout(limit, self.connection())
            .await
            .map_err(|_| {
                PeerError::Unreachable(format!(
                    "supplier {} at {}: no connection within {limit:?}",
                    self.node_id, self.address
                ))
            })??;
        let mark = Some(Heard::of(&conn));
        let fut = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| PeerError::Unreachable(e.to_string()))?;
            frame::write_frame(&mut send, &pb::Request { kind: Some(req) }).await?;
            let mut send_error = None;
            if let Some(mut parts) = payload {
                // The supplier may refuse before reading the payload (it
                // stops the stream); its answer then says why.
                if let Err(e) = send.write_all_chunks(&mut parts).await {
                    send_error = Some(e.to_string());
                }
            }
            let _ = send.finish();
            let resp: pb::Response = match frame::read_frame(&mut recv, MAX_RESPONSE).await {
                Ok(r) => r,
                Err(e) => {
                    return Err(match send_error {
                        Some(s) => PeerError::Unreachable(s),
                        None => e.into(),
                    });
                }
            };
            match resp.kind {
                Some(response::Kind::Error(e)) => Err(PeerError::Refused {
                    code: pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified),
                    message: e.message,
                }),
                Some(k) => Ok((k, recv)),
                None => Err(PeerError::Protocol("an empty response".into())),
            }
        };
        // Puts of large objects get more time: 1 s per MiB on top.
        let extra = Duration::from_secs(payload_len >> 20);
        match tokio::time::timeout(self.timeout + extra, fut).await {
            Ok(r) => r,
            Err(_) => {
                self.reset_if_silent(mark).await;
                Err(PeerError::Unreachable(format!(
                    "supplier {} at {} did not answer within {:?}",
                    self.node_id,
                    self.address,
                    self.timeout + extra
                )))
            }
        }
    }

    fn unexpected(k: &response::Kind) -> PeerError {
        PeerError::Protocol(format!("an unexpected answer {k:?}"))
    }

    /// Asks for storage service.
    pub async fn request_service(
        &self,
        needed: u64,
        suppliers: u32,
    ) -> Result<pb::ServiceAccepted, PeerError> {
        let req = request::Kind::RequestService(pb::RequestService {
            needed_bytes: needed,
            suppliers,
        });
        match self.call(req, None).await?.0 {
            response::Kind::ServiceAccepted(a) => Ok(a),
            k => Err(Self::unexpected(&k)),
        }
    }

    /// Ends the service; the supplier deletes every object.
    pub async fn cancel_service(&self) -> Result<u64, PeerError> {
        match self
            .call(request::Kind::CancelService(pb::CancelService {}), None)
            .await?
            .0
        {
            response::Kind::ServiceCancelled(c) => Ok(c.objects_deleted),
            k => Err(Self::unexpected(&k)),
        }
    }

    /// Stores `data` under `name`; returns once the supplier holds it durably.
    pub async fn put(&self, name: &str, data: &[u8]) -> Result<pb::PutDone, PeerError> {
        self.put_parts(name, vec![Bytes::copy_from_slice(data)])
            .await
    }

    /// Stores the object made of `parts`, one after another, under `name`:
    /// [`SupplierLink::put`] for bytes that are in several buffers already
    /// (a fragment's head and its payload). The buffers go to the
    /// connection as they are, without being copied.
    pub async fn put_parts(&self, name: &str, parts: Vec<Bytes>) -> Result<pb::PutDone, PeerError> {
        let mut hasher = blake3::Hasher::new();
        for p in &parts {
            hasher.update(p);
        }
        let req = request::Kind::Put(pb::PutObject {
            name: name.to_owned(),
            size: parts.iter().map(|p| p.len() as u64).sum(),
            blake3: hasher.finalize().as_bytes().to_vec(),
        });
        // Waiting for a place is not the supplier's delay: the call's
        // timeouts start once the put has one.
        let _place = self
            .puts
            .acquire()
            .await
            .map_err(|_| PeerError::Unreachable("the link is closed".into()))?;
        match self.call(req, Some(parts)).await?.0 {
            response::Kind::PutDone(d) => Ok(d),
            k => Err(Self::unexpected(&k)),
        }
    }

    /// The object `name` (at most `max` bytes), or `None` if the supplier
    /// does not have it. The bytes are checked against the hash the supplier
    /// recorded when it was stored.
    pub async fn get(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>, PeerError> {
        Ok(self
            .get_part(name, max, 0, true)
            .await?
            .map(Received::into_vec))
    }

    /// A fragment object `name` (at most `max` bytes), or `None`: as
    /// [`SupplierLink::get`] but not hashed against the supplier's record,
    /// because the fragment's signed header commits to its payload's hash
    /// and the reader checks that (hashing both would read it twice).
    pub async fn get_fragment(&self, name: &str, max: u64) -> Result<Option<Received>, PeerError> {
        self.get_part(name, max, 0, false).await
    }

    /// The first `len` bytes (fewer if the object is shorter) of object
    /// `name`, or `None` if the supplier does not have it. Nothing checks
    /// them: the caller authenticates what it uses (a fragment's signed
    /// header, a pack's sealed chunk list).
    pub async fn get_prefix(&self, name: &str, len: u64) -> Result<Option<Vec<u8>>, PeerError> {
        Ok(self
            .get_part(name, len, len.max(1), false)
            .await?
            .map(Received::into_vec))
    }

    /// The object, or its first `prefix` bytes when `prefix` > 0; a whole
    /// object is checked against the supplier's hash when `check`.
    async fn get_part(
        &self,
        name: &str,
        max: u64,
        prefix: u64,
        check: bool,
    ) -> Result<Option<Received>, PeerError> {
        let req = request::Kind::Get(pb::GetObject {
            name: name.to_owned(),
            prefix,
        });
        let (kind, mut recv) = match self.call(req, None).await {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let response::Kind::Get(head) = kind else {
            return Err(Self::unexpected(&kind));
        };
        let sent = if prefix > 0 {
            head.size.min(prefix)
        } else {
            head.size
        };
        if sent > max {
            return Err(PeerError::Protocol(format!(
                "object {name} claims {} bytes, over the {max} expected",
                head.size
            )));
        }
        let size = usize::try_from(sent).map_err(|_| PeerError::Protocol("size".into()))?;
        let data = tokio::time::timeout(
            self.timeout + Duration::from_secs(head.size >> 20),
            read_received(&mut recv, size),
        )
        .await
        .map_err(|_| {
            PeerError::Unreachable(format!("reading {name} from {} timed out", self.address))
        })??;
        if check && prefix == 0 {
            let mut hasher = blake3::Hasher::new();
            for p in &data.parts {
                hasher.update(p);
            }
            if hasher.finalize().as_bytes().as_slice() != head.blake3.as_slice() {
                return Err(PeerError::Protocol(format!(
                    "object {name} arrived damaged"
                )));
            }
        }
        Ok(Some(data))
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<pb::ObjectInfo>, PeerError> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let (objects, more) = self.list_page(prefix, &after).await?;
            if let Some(last) = objects.last() {
                after = last.name.clone();
            }
            out.extend(objects);
            if !more {
                return Ok(out);
            }
        }
    }

    /// Up to 1000 objects under `prefix` whose names sort after `after`,
    /// and whether more follow.
    pub async fn list_page(
        &self,
        prefix: &str,
        after: &str,
    ) -> Result<(Vec<pb::ObjectInfo>, bool), PeerError> {
        let req = request::Kind::List(pb::ListObjects {
            prefix: prefix.to_owned(),
            start_after: after.to_owned(),
            limit: 1000,
        });
        let response::Kind::List(l) = self.call(req, None).await?.0 else {
            return Err(PeerError::Protocol("not a list".into()));
        };
        Ok((l.objects, l.truncated))
    }

    /// Deletes `names` and everything under `prefix`.
    pub async fn delete(&self, names: Vec<String>, prefix: &str) -> Result<u64, PeerError> {
        let req = request::Kind::Delete(pb::DeleteObjects {
            names,
            prefix: prefix.to_owned(),
        });
        match self.call(req, None).await?.0 {
            response::Kind::Deleted(d) => Ok(d.deleted),
            k => Err(Self::unexpected(&k)),
        }
    }

    /// BLAKE3(nonce || object) as the supplier computes it now.
    pub async fn audit(&self, name: &str, nonce: &[u8]) -> Result<Vec<u8>, PeerError> {
        let req = request::Kind::Audit(pb::Audit {
            name: name.to_owned(),
            nonce: nonce.to_vec(),
        });
        match self.call(req, None).await?.0 {
            response::Kind::Audit(a) => Ok(a.blake3),
            k => Err(Self::unexpected(&k)),
        }
    }

    /// Whether the supplier answers; its usage and quota for us.
    pub async fn ping(&self) -> Result<pb::Pong, PeerError> {
        match self.call(request::Kind::Ping(pb::Ping {}), None).await?.0 {
            response::Kind::Pong(p) => Ok(p),
            k => Err(Self::unexpected(&k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn received(parts: &[&'static [u8]]) -> Received {
        Received {
            parts: parts.iter().map(|p| Bytes::from_static(p)).collect(),
            len: parts.iter().map(|p| p.len()).sum(),
        }
    }

    #[test]
    fn a_received_object_reads_its_parts_in_order_across_any_reads() {
        let parts: &[&'static [u8]] = &[b"ab", b"", b"cdefg", b"h"];
        assert_eq!(received(parts).into_vec(), b"abcdefgh");
        for step in 1..=9 {
            let mut r = received(parts);
            let mut out = Vec::new();
            let mut buf = vec![0u8; step];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    // The end, never an empty part in the middle.
                    assert!(r.is_empty(), "reads of {step} bytes ended early");
                    break;
                }
                out.extend_from_slice(&buf[..n]);
                assert_eq!(r.len(), 8 - out.len());
            }
            assert_eq!(out, b"abcdefgh", "reads of {step} bytes");
        }
    }
}
