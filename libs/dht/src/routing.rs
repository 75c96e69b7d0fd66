//! The routing table: 256 k-buckets of the nodes this node knows.

use std::collections::VecDeque;

use bitdust_crypto::NodeId;
use bitdust_proto::dht::v1 as pb;

use crate::K;
use crate::key::Key;

/// A node as this node reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Its node id (ed25519 public key).
    pub id: NodeId,
    /// Its place in the key space.
    pub key: Key,
    /// `host:port` of its QUIC endpoint.
    pub address: String,
}

impl Contact {
    /// The contact of node `id` at `address`.
    pub fn new(id: NodeId, address: impl Into<String>) -> Contact {
        Contact {
            id,
            key: Key::of_node(&id),
            address: address.into(),
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::Contact {
        pb::Contact {
            node_id: self.id.as_bytes().to_vec(),
            address: self.address.clone(),
        }
    }

    /// From the wire form: `None` when the id is not 32 bytes or the
    /// address is not an IP literal with a port. Peers never make a node
    /// resolve a name: that would be a DNS lookup per contact, steered by
    /// whoever sent it.
    pub fn from_proto(p: &pb::Contact) -> Option<Contact> {
        let id = NodeId::try_from(p.node_id.as_slice()).ok()?;
        let addr = peer_address(&p.address)?;
        Some(Contact::new(id, addr.to_string()))
    }
}

/// An address a peer gave: an IP literal and a port, nothing to resolve.
pub fn peer_address(a: &str) -> Option<std::net::SocketAddr> {
    if a.len() > 64 {
        return None;
    }
    a.parse()
        .ok()
        .filter(|s: &std::net::SocketAddr| s.port() != 0)
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    /// A new entry.
    Added,
    /// It was known; now it is the most recently seen of its bucket.
    Refreshed,
    /// Its bucket is full: it waits among the bucket's replacements.
    Replacement,
    /// It is this node.
    Ignored,
}

#[derive(Clone)]
struct Entry {
    contact: Contact,
    failures: u32,
}

#[derive(Default, Clone)]
struct Bucket {
    /// Least recently seen first.
    nodes: VecDeque<Entry>,
    /// Nodes to take the place of one that stops answering, newest last.
    replacements: VecDeque<Contact>,
}

/// Consecutive failed requests after which a contact is dropped even when
/// no replacement is waiting.
pub const MAX_FAILURES: u32 = 3;

/// The k-buckets of the node at `me`.
#[derive(Clone)]
pub struct RoutingTable {
    me: Key,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    /// An empty table for the node at `me`.
    pub fn new(me: Key) -> Self {
        RoutingTable {
            me,
            buckets: vec![Bucket::default(); 256],
        }
    }

    /// This node's key.
    pub fn me(&self) -> Key {
        self.me
    }

    /// Records that `c` was heard from.
    pub fn insert(&mut self, c: Contact) -> Inserted {
        let Some(b) = self.me.bucket_of(&c.key) else {
            return Inserted::Ignored;
        };
        let bucket = &mut self.buckets[b];
        if let Some(i) = bucket.nodes.iter().position(|e| e.contact.id == c.id) {
            bucket.nodes.remove(i);
            bucket.nodes.push_back(Entry {
                contact: c,
                failures: 0,
            });
            return Inserted::Refreshed;
        }
        if bucket.nodes.len() < K {
            bucket.nodes.push_back(Entry {
                contact: c,
                failures: 0,
            });
            return Inserted::Added;
        }
        bucket.replacements.retain(|x| x.id != c.id);
        bucket.replacements.push_back(c);
        if bucket.replacements.len() > K {
            bucket.replacements.pop_front();
        }
        Inserted::Replacement
    }

    /// Records that a request to `id` failed: the contact is replaced by the
    /// newest replacement, or dropped after [`MAX_FAILURES`] in a row.
    pub fn failed(&mut self, id: &NodeId) {
        let key = Key::of_node(id);
        let Some(b) = self.me.bucket_of(&key) else {
            return;
        };
        let bucket = &mut self.buckets[b];
        let Some(i) = bucket.nodes.iter().position(|e| e.contact.id == *id) else {
            bucket.replacements.retain(|x| x.id != *id);
            return;
        };
        bucket.nodes[i].failures += 1;
        if let Some(r) = bucket.replacements.pop_back() {
            bucket.nodes.remove(i);
            bucket.nodes.push_back(Entry {
                contact: r,
                failures: 0,
            });
        } else if bucket.nodes[i].failures >= MAX_FAILURES {
            bucket.nodes.remove(i);
        }
    }

    /// Up to `n` known contacts closest to `target`, closest first.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<Contact> {
        let mut all: Vec<&Contact> = self.iter().collect();
        all.sort_by_cached_key(|c| c.key.distance(target));
        all.into_iter().take(n).cloned().collect()
    }

    /// Every contact in the table.
    pub fn iter(&self) -> impl Iterator<Item = &Contact> {
        self.buckets
            .iter()
            .flat_map(|b| b.nodes.iter().map(|e| &e.contact))
    }

    /// How many contacts the table holds.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    /// Buckets that hold at least one contact.
    pub fn buckets_used(&self) -> usize {
        self.buckets.iter().filter(|b| !b.nodes.is_empty()).count()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The indexes of buckets worth refreshing: from the farthest down to
    /// the one holding this node's closest known neighbour.
    pub fn refresh_targets(&self) -> Vec<usize> {
        let nearest = (0..256).find(|&b| !self.buckets[b].nodes.is_empty());
        match nearest {
            Some(low) => (low..256).rev().collect(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use bitdust_crypto::Identity;

    use super::*;

    #[test]
    fn contacts_from_peers_carry_ip_literals_only() {
        let id = NodeId::try_from([5u8; 32].as_slice()).unwrap();
        let c = |a: &str| {
            Contact::from_proto(&pb::Contact {
                node_id: id.as_bytes().to_vec(),
                address: a.into(),
            })
        };
        assert!(c("192.0.2.7:7900").is_some());
        assert!(c("[2001:db8::1]:7900").is_some());
        for bad in [
            "example.org:7900",
            "localhost:7900",
            "192.0.2.7",
            "192.0.2.7:0",
            "",
            "x",
        ] {
            assert!(c(bad).is_none(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn buckets_hold_k_keep_replacements_and_swap_in_on_failure() {
        let me = Key::random();
        let mut t = RoutingTable::new(me);
        // Contacts in the far half of the space land in bucket 255.
        let far: Vec<Contact> =
            std::iter::repeat_with(|| Contact::new(Identity::generate().node_id(), "127.0.0.1:1"))
                .filter(|c| me.bucket_of(&c.key) == Some(255))
                .take(K + 2)
                .collect();
        for c in &far[..K] {
            assert_eq!(t.insert(c.clone()), Inserted::Added);
        }
        assert_eq!(t.insert(far[K].clone()), Inserted::Replacement);
        assert_eq!(t.insert(far[0].clone()), Inserted::Refreshed);
        assert_eq!(t.len(), K);
        t.failed(&far[1].id);
        assert_eq!(t.len(), K);
        assert!(t.iter().any(|c| c.id == far[K].id));
        assert!(!t.iter().any(|c| c.id == far[1].id));
        // No replacement left: dropped after MAX_FAILURES.
        for _ in 0..MAX_FAILURES {
            t.failed(&far[2].id);
        }
        assert_eq!(t.len(), K - 1);
        let target = Key::random();
        let c = t.closest(&target, 5);
        assert_eq!(c.len(), 5);
        assert!(
            c.windows(2)
                .all(|w| w[0].key.distance(&target) <= w[1].key.distance(&target))
        );
    }
}
