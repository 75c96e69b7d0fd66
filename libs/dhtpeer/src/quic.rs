//! The DHT protocol over QUIC: a [`Transport`] that dials other nodes
//! (pinning the node id of each contact), and the server side that answers
//! them. One request per bidirectional stream, one frame each way.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bitdust_crypto::NodeId;
use bitdust_dht::node::DhtError;
use bitdust_dht::store::address_key;
use bitdust_dht::{Contact, Node, Record, Transport};
use bitdust_net::frame::{read_frame, write_frame};
use bitdust_net::{Connection, Endpoint};
use bitdust_proto::dht::v1 as pb;
use tokio::sync::mpsc;

/// The largest DHT message either side reads.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// How long a request may take, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections kept open to other nodes at most.
const MAX_CONNECTIONS: usize = 256;

/// Dials other DHT nodes over one QUIC endpoint, reusing connections.
pub struct QuicTransport {
    endpoint: Endpoint,
    conns: Mutex<HashMap<NodeId, Connection>>,
}

fn unreachable(e: impl std::fmt::Display) -> DhtError {
    DhtError::Unreachable(e.to_string())
}

impl QuicTransport {
    /// A transport dialing from `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        QuicTransport {
            endpoint,
            conns: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, id: &NodeId) -> Option<Connection> {
        let conns = self.conns.lock().ok()?;
        conns
            .get(id)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    fn remember(&self, id: NodeId, conn: Connection) {
        if let Ok(mut conns) = self.conns.lock() {
            if conns.len() >= MAX_CONNECTIONS {
                conns.retain(|_, c| c.close_reason().is_none());
                if conns.len() >= MAX_CONNECTIONS {
                    // Drop an arbitrary one; it is dialed again when needed.
                    if let Some(k) = conns.keys().next().copied()
                        && let Some(c) = conns.remove(&k)
                    {
                        c.close(0u32.into(), b"too many connections");
                    }
                }
            }
            conns.insert(id, conn);
        }
    }

    async fn connection(&self, to: &Contact) -> Result<Connection, DhtError> {
        if let Some(c) = self.cached(&to.id) {
            return Ok(c);
        }
        let addr = resolve(&to.address).await?;
        let conn = self
            .endpoint
            .connect(addr, Some(to.id))
            .await
            .map_err(unreachable)?;
        self.remember(to.id, conn.clone());
        Ok(conn)
    }

    /// Dials `addr` without knowing who answers (a bootstrap seed given by
    /// address only) and returns the node id its certificate proves.
    pub async fn probe(&self, addr: SocketAddr) -> Result<NodeId, DhtError> {
        let conn = tokio::time::timeout(CALL_TIMEOUT, self.endpoint.connect(addr, None))
            .await
            .map_err(|_| unreachable(format!("{addr} did not answer in time")))?
            .map_err(unreachable)?;
        let id = bitdust_net::peer_id(&conn)
            .ok_or_else(|| unreachable(format!("{addr} presented no node certificate")))?;
        self.remember(id, conn);
        Ok(id)
    }

    /// Asks `to` to dial this node back from a fresh socket at the IP it
    /// sees this request come from and `port`: `Ok(true)` when that
    /// reached this node, `Ok(false)` when not, `Err` when `to` did not
    /// try (busy, or it does not dial back).
    pub async fn dial_back(&self, to: &Contact, port: u16) -> Result<bool, DhtError> {
        let req = pb::Request {
            from_address: String::new(),
            kind: Some(pb::request::Kind::DialBack(pb::DialBack {
                port: u32::from(port),
            })),
        };
        // The peer waits up to its dial-back timeout before it answers.
        let within = CALL_TIMEOUT + bitdust_net::reachability::DIAL_BACK_TIMEOUT;
        let answer = tokio::time::timeout(within, self.exchange(to, &req))
            .await
            .map_err(|_| unreachable(format!("{} did not answer in time", to.id)))??;
        match answer.kind {
            Some(pb::response::Kind::DialedBack(d)) => Ok(d.reachable),
            Some(pb::response::Kind::Error(e)) => Err(DhtError::Refused {
                code: pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified),
                message: e.message,
            }),
            other => Err(DhtError::BadAnswer(format!("{other:?}"))),
        }
    }

    async fn exchange(&self, to: &Contact, req: &pb::Request) -> Result<pb::Response, DhtError> {
        let conn = self.connection(to).await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(unreachable)?;
        write_frame(&mut send, req).await.map_err(unreachable)?;
        let _ = send.finish();
        read_frame::<pb::Response>(&mut recv, MAX_MESSAGE)
            .await
            .map_err(|e| DhtError::BadAnswer(e.to_string()))
    }
}

/// A contact's address: always an IP literal (contacts from peers are
/// checked when they arrive, seeds are resolved once at start), so no DNS
/// lookup ever runs on what a peer sent.
async fn resolve(address: &str) -> Result<SocketAddr, DhtError> {
    bitdust_dht::routing::peer_address(address)
        .ok_or_else(|| unreachable(format!("{address} is not an IP address and port")))
}

impl Transport for QuicTransport {
    async fn call(&self, to: &Contact, req: pb::Request) -> Result<pb::Response, DhtError> {
        match tokio::time::timeout(CALL_TIMEOUT, self.exchange(to, &req)).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(format!(
                "{} at {} did not answer in time",
                to.id, to.address
            ))),
        }
    }
}

/// The dial-backs this node makes for its peers (`DialBack` requests).
pub struct DialBacks {
    identity: bitdust_crypto::Identity,
    slots: tokio::sync::Semaphore,
    /// Dial-backs made since the start.
    pub made: std::sync::atomic::AtomicU64,
    /// Those of them that reached the peer.
    pub reached: std::sync::atomic::AtomicU64,
}

/// Dial-backs made at once, at most; more are refused as busy.
const MAX_DIAL_BACKS: usize = 8;

impl DialBacks {
    /// Dial-backs made as `identity`.
    pub fn new(identity: &bitdust_crypto::Identity) -> Self {
        DialBacks {
            identity: bitdust_crypto::Identity::from_secret(&identity.secret()),
            slots: tokio::sync::Semaphore::new(MAX_DIAL_BACKS),
            made: 0.into(),
            reached: 0.into(),
        }
    }

    /// Dials `peer` back at `remote`'s IP and `port` from a fresh socket.
    async fn answer(&self, peer: NodeId, remote: SocketAddr, port: u32) -> pb::Response {
        use std::sync::atomic::Ordering;
        let error = |code: pb::ErrorCode, message: String| pb::Response {
            kind: Some(pb::response::Kind::Error(pb::Error {
                code: code as i32,
                message,
            })),
        };
        let port = match u16::try_from(port) {
            Ok(p) if p > 0 => p,
            _ => {
                return error(
                    pb::ErrorCode::BadRequest,
                    format!("dial-back port {port} is not 1-65535"),
                );
            }
        };
        let Ok(_slot) = self.slots.try_acquire() else {
            return error(
                pb::ErrorCode::RateLimited,
                "busy with other dial-backs; ask again later".into(),
            );
        };
        self.made.fetch_add(1, Ordering::Relaxed);
        // Only ever the IP the request came from: a peer cannot send this
        // node's packets anywhere else.
        let to = SocketAddr::new(remote.ip(), port);
        let r =
            bitdust_net::reachability::dial_back(&self.identity, to, peer, bitdust_dht::ALPN).await;
        if r.is_ok() {
            self.reached.fetch_add(1, Ordering::Relaxed);
        }
        pb::Response {
            kind: Some(pb::response::Kind::DialedBack(pb::DialedBack {
                reachable: r.is_ok(),
                error: r.err().unwrap_or_default(),
            })),
        }
    }
}

/// Connections a DHT peer serves at most. A newcomer past it is served,
/// and the oldest connection of the source address holding the most is
/// closed (its peer dials again when it next asks something): a seed that
/// many nodes keep connections to stays open to newcomers, one that floods
/// it pushes out its own connections first, and what peers can make it
/// hold stays bounded (each connection's unread bytes by
/// [`bitdust_net::CONNECTION_WINDOW`]).
pub const MAX_SERVED: usize = 4096;
/// Connections served from one source address (an IPv4 address or an IPv6
/// /64) at most: past it, that address's oldest is closed for the
/// newcomer. Node ids cost nothing, so one host cannot hold more, and
/// nodes behind one NAT still get in.
pub const MAX_SERVED_PER_ADDRESS: usize = 64;
/// The application close code of a connection closed at a cap.
pub const CLOSE_BUSY: u32 = 3;

/// The connections a DHT peer serves, per source address, oldest first.
#[derive(Default)]
struct Served {
    total: usize,
    by_address: HashMap<String, BTreeMap<u64, Connection>>,
}

impl Served {
    /// Serves `conn` (number `n`) from `address`, closing what it
    /// displaces.
    fn admit(&mut self, address: &str, n: u64, conn: Connection) {
        let here = self.by_address.get(address).map_or(0, BTreeMap::len);
        if here >= MAX_SERVED_PER_ADDRESS {
            self.close_oldest(
                address,
                b"the DHT peer serves as many connections from your address as it allows; dial again when needed",
            );
        }
        while self.total >= MAX_SERVED {
            let Some(most) = self
                .by_address
                .iter()
                .max_by_key(|(_, m)| m.len())
                .map(|(a, _)| a.clone())
            else {
                break;
            };
            self.close_oldest(
                &most,
                b"the DHT peer serves as many connections as it can; dial again when needed",
            );
        }
        self.by_address
            .entry(address.to_owned())
            .or_default()
            .insert(n, conn);
        self.total += 1;
    }

    fn close_oldest(&mut self, address: &str, why: &[u8]) {
        if let Some(m) = self.by_address.get_mut(address) {
            if let Some((_, oldest)) = m.pop_first() {
                oldest.close(CLOSE_BUSY.into(), why);
                self.total -= 1;
            }
            if m.is_empty() {
                self.by_address.remove(address);
            }
        }
    }

    /// Connection `n` from `address` has ended.
    fn ended(&mut self, address: &str, n: u64) {
        if let Some(m) = self.by_address.get_mut(address) {
            if m.remove(&n).is_some() {
                self.total -= 1;
            }
            if m.is_empty() {
                self.by_address.remove(address);
            }
        }
    }
}

fn lock(s: &Mutex<Served>) -> std::sync::MutexGuard<'_, Served> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Answers DHT requests arriving on `endpoint` until it closes. Records
/// that the node takes are also sent to `stored`, to be saved; dial-backs
/// are made by `dial_backs`. Connections are capped as [`MAX_SERVED`] and
/// [`MAX_SERVED_PER_ADDRESS`] say.
pub async fn serve<T: Transport>(
    endpoint: Endpoint,
    node: Arc<Node<T>>,
    stored: mpsc::Sender<Record>,
    dial_backs: Arc<DialBacks>,
) {
    let served: Arc<Mutex<Served>> = Arc::default();
    let mut next = 0u64;
    while let Some((conn, peer)) = endpoint.accept().await {
        // A node through a router counts at the address the router sees.
        let address = address_key(endpoint.source_of(&conn).ip());
        let n = next;
        next += 1;
        lock(&served).admit(&address, n, conn.clone());
        let (node, stored, dial_backs, served) = (
            node.clone(),
            stored.clone(),
            dial_backs.clone(),
            served.clone(),
        );
        tokio::spawn(async move {
            serve_connection(conn, peer, node, stored, dial_backs).await;
            lock(&served).ended(&address, n);
        });
    }
}

async fn serve_connection<T: Transport>(
    conn: Connection,
    peer: NodeId,
    node: Arc<Node<T>>,
    stored: mpsc::Sender<Record>,
    dial_backs: Arc<DialBacks>,
) {
    let remote = conn.remote_address();
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let (node, stored, dial_backs) = (node.clone(), stored.clone(), dial_backs.clone());
        tokio::spawn(async move {
            let req = match tokio::time::timeout(
                CALL_TIMEOUT,
                read_frame::<pb::Request>(&mut recv, MAX_MESSAGE),
            )
            .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "bad DHT request");
                    let answer = pb::Response {
                        kind: Some(pb::response::Kind::Error(pb::Error {
                            code: pb::ErrorCode::BadRequest as i32,
                            message: format!("cannot read the request: {e}"),
                        })),
                    };
                    let _ = write_frame(&mut send, &answer).await;
                    let _ = send.finish();
                    return;
                }
                Err(_) => return,
            };
            if let Some(pb::request::Kind::DialBack(d)) = &req.kind {
                let answer = dial_backs.answer(peer, remote, d.port).await;
                let _ = write_frame(&mut send, &answer).await;
                let _ = send.finish();
                return;
            }
            let req = with_seen_address(req, remote);
            let record = match &req.kind {
                Some(pb::request::Kind::Store(s)) => s.record.clone(),
                _ => None,
            };
            let answer = node.handle(&peer, Some(remote), req);
            if let (Some(r), Some(pb::response::Kind::Stored(_))) = (record, &answer.kind)
                && let Ok(r) = Record::from_proto(r)
            {
                // Saved in the background; when the writer is behind,
                // the record is still served, only not kept on disk.
                let _ = stored.try_send(r);
            }
            let _ = write_frame(&mut send, &answer).await;
            let _ = send.finish();
        });
    }
}

/// A sender that listens on an unspecified IP (0.0.0.0 or ::) is reached
/// at the IP its request came from, on the port it names.
fn with_seen_address(mut req: pb::Request, remote: SocketAddr) -> pb::Request {
    if let Ok(a) = req.from_address.parse::<SocketAddr>()
        && a.ip().is_unspecified()
    {
        req.from_address = SocketAddr::new(remote.ip(), a.port()).to_string();
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_becomes_the_seen_one() {
        let req = pb::Request {
            from_address: "0.0.0.0:7900".into(),
            kind: None,
        };
        let remote: SocketAddr = "192.0.2.7:40000".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(
            with_seen_address(req, remote).from_address,
            "192.0.2.7:7900"
        );
        let req = pb::Request {
            from_address: "198.51.100.1:7900".into(),
            kind: None,
        };
        assert_eq!(
            with_seen_address(req, remote).from_address,
            "198.51.100.1:7900"
        );
    }
}
