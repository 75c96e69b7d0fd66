//! An in-process network of nodes for simulations: every request and
//! answer is still encoded and decoded as on the wire, only the QUIC hop is
//! left out.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use bitdust_crypto::NodeId;
use bitdust_proto::dht::v1 as pb;
use prost::Message;

use crate::node::{Contact, DhtError, Node, Transport};
use crate::store::Limits;

/// The nodes of one simulated network, by id.
#[derive(Default)]
pub struct MemNet {
    nodes: RwLock<HashMap<NodeId, Arc<Node<MemTransport>>>>,
    down: RwLock<HashSet<NodeId>>,
    /// Requests delivered.
    pub delivered: AtomicU64,
}

/// The transport of one node on a [`MemNet`].
pub struct MemTransport {
    net: Weak<MemNet>,
    me: NodeId,
}

impl MemNet {
    /// An empty network.
    pub fn new() -> Arc<MemNet> {
        Arc::new(MemNet::default())
    }

    /// Adds a node with id `id`. Its address is an IP literal from the
    /// IPv6 documentation prefix (peers accept only IP literals), made from
    /// the id; it is never dialed: the transport delivers by node id.
    pub fn add(self: &Arc<Self>, id: NodeId, limits: Limits) -> Arc<Node<MemTransport>> {
        let t = Arc::new(MemTransport {
            net: Arc::downgrade(self),
            me: id,
        });
        let b = id.as_bytes();
        let ip = std::net::Ipv6Addr::new(
            0x2001,
            0x0db8,
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
            u16::from_be_bytes([b[4], b[5]]),
            u16::from_be_bytes([b[6], b[7]]),
            u16::from_be_bytes([b[8], b[9]]),
            u16::from_be_bytes([b[10], b[11]]),
        );
        let address = std::net::SocketAddr::new(ip.into(), 7900).to_string();
        let node = Arc::new(Node::new(id, &address, t, limits));
        if let Ok(mut n) = self.nodes.write() {
            n.insert(id, node.clone());
        }
        node
    }

    /// Takes node `id` off the network: requests to it fail from now on.
    pub fn take_down(&self, id: &NodeId) {
        if let Ok(mut d) = self.down.write() {
            d.insert(*id);
        }
    }

    fn deliver(&self, from: &NodeId, to: &Contact, bytes: &[u8]) -> Result<Vec<u8>, DhtError> {
        if self.down.read().is_ok_and(|d| d.contains(&to.id)) {
            return Err(DhtError::Unreachable(format!("{} is down", to.id)));
        }
        let node = self
            .nodes
            .read()
            .ok()
            .and_then(|n| n.get(&to.id).cloned())
            .ok_or_else(|| DhtError::Unreachable(format!("no node {}", to.id)))?;
        let req = pb::Request::decode(bytes).map_err(|e| DhtError::BadAnswer(e.to_string()))?;
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(node.handle(from, None, req).encode_to_vec())
    }
}

impl Transport for MemTransport {
    async fn call(&self, to: &Contact, req: pb::Request) -> Result<pb::Response, DhtError> {
        let net = self
            .net
            .upgrade()
            .ok_or_else(|| DhtError::Unreachable("the network is gone".into()))?;
        let answer = net.deliver(&self.me, to, &req.encode_to_vec())?;
        pb::Response::decode(answer.as_slice()).map_err(|e| DhtError::BadAnswer(e.to_string()))
    }
}
