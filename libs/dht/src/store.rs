//! The records a node keeps for others, with limits per sending peer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use bitdust_crypto::NodeId;

use crate::key::Key;
use crate::record::{Record, RecordError};

/// Limits of a [`RecordStore`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Records held at most.
    pub max_records: usize,
    /// Records one owner may have here (one per kind).
    pub max_per_owner: usize,
    /// Store requests one peer may make in a burst...
    pub burst: f64,
    /// ...refilled at this many per second.
    pub per_second: f64,
    /// Records stored by one source address (an IPv4 address or an IPv6
    /// /64) held at most: identities cost nothing, addresses do.
    pub max_per_address: usize,
    /// Sample requests one peer may make in a burst (each scans up to
    /// 4,096 records)...
    pub sample_burst: f64,
    /// ...refilled at this many per second.
    pub sample_per_second: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_records: 100_000,
            max_per_owner: 16,
            burst: 60.0,
            per_second: 1.0,
            max_per_address: 256,
            sample_burst: 30.0,
            sample_per_second: 2.0,
        }
    }
}

/// Why a store was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The record itself is not acceptable.
    #[error(transparent)]
    Bad(#[from] RecordError),
    /// A record with this sequence or a newer one is held.
    #[error(
        "a record of kind {kind} by {owner} with sequence {held} is held; send a higher sequence"
    )]
    Stale {
        /// Its owner.
        owner: NodeId,
        /// Its kind.
        kind: String,
        /// The sequence held.
        held: u64,
    },
    /// The peer sent too many store or sample requests.
    #[error("too many requests from {0}; slow down")]
    RateLimited(NodeId),
    /// No room.
    #[error("this node holds all the records it will ({0}); try the next closest node")]
    Full(usize),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Records by key.
pub struct RecordStore {
    limits: Limits,
    records: HashMap<Key, Record>,
    per_owner: HashMap<NodeId, usize>,
    senders: HashMap<NodeId, Bucket>,
    samplers: HashMap<NodeId, Bucket>,
    /// Records held per source address, and the address each came from.
    per_address: HashMap<String, usize>,
    origin: HashMap<Key, String>,
}

/// The key per-address limits count by, here and in the supplier's store:
/// an IPv4 address (IPv4-mapped IPv6 too), or the /64 an IPv6 address is in
/// (one host usually holds a whole /64).
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Takes one token from `from`'s bucket in `map`.
fn take(map: &mut HashMap<NodeId, Bucket>, from: &NodeId, burst: f64, rate: f64) -> bool {
    let now = Instant::now();
    let b = map.entry(*from).or_insert(Bucket {
        tokens: burst,
        at: now,
    });
    b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
    b.at = now;
    if b.tokens < 1.0 {
        return false;
    }
    b.tokens -= 1.0;
    // Forget senders whose buckets are full again, so the map stays small.
    if map.len() > 10_000 {
        map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
    }
    true
}

impl RecordStore {
    /// An empty store.
    pub fn new(limits: Limits) -> Self {
        RecordStore {
            limits,
            records: HashMap::new(),
            per_owner: HashMap::new(),
            senders: HashMap::new(),
            samplers: HashMap::new(),
            per_address: HashMap::new(),
            origin: HashMap::new(),
        }
    }

    /// Takes `record` from peer `from`, whose packets come from `source`
    /// (when the transport knows it), at time `now` (Unix seconds).
    pub fn put(
        &mut self,
        from: &NodeId,
        source: Option<IpAddr>,
        record: Record,
        now: u64,
    ) -> Result<(), StoreError> {
        if !take(
            &mut self.senders,
            from,
            self.limits.burst,
            self.limits.per_second,
        ) {
            return Err(StoreError::RateLimited(*from));
        }
        record.verify(now)?;
        let key = record.key();
        match self.records.get(&key) {
            Some(held) if held.sequence > record.sequence => {
                return Err(StoreError::Stale {
                    owner: held.owner,
                    kind: held.kind.clone(),
                    held: held.sequence,
                });
            }
            // The same record again (a republish) is fine.
            Some(held) if held.sequence == record.sequence => {
                if *held == record {
                    return Ok(());
                }
                return Err(StoreError::Stale {
                    owner: held.owner,
                    kind: held.kind.clone(),
                    held: held.sequence,
                });
            }
            Some(_) => {}
            None => {
                if self.records.len() >= self.limits.max_records {
                    self.expire(now);
                    if self.records.len() >= self.limits.max_records {
                        return Err(StoreError::Full(self.limits.max_records));
                    }
                }
                let n = self.per_owner.get(&record.owner).copied().unwrap_or(0);
                if n >= self.limits.max_per_owner {
                    return Err(StoreError::Full(self.limits.max_per_owner));
                }
                let address = source.map(address_key);
                if let Some(a) = &address {
                    if self.per_address.get(a).copied().unwrap_or(0) >= self.limits.max_per_address
                    {
                        return Err(StoreError::Full(self.limits.max_per_address));
                    }
                    *self.per_address.entry(a.clone()).or_default() += 1;
                    self.origin.insert(key, a.clone());
                }
                *self.per_owner.entry(record.owner).or_default() += 1;
            }
        }
        self.records.insert(key, record);
        Ok(())
    }

    /// Takes `record` without counting it against a sender's rate: a
    /// record read back from disk at start, or one this node publishes.
    pub fn restore(&mut self, record: Record, now: u64) -> Result<(), StoreError> {
        record.verify(now)?;
        let key = record.key();
        match self.records.get(&key) {
            Some(held) if held.sequence >= record.sequence => return Ok(()),
            Some(_) => {}
            None => *self.per_owner.entry(record.owner).or_default() += 1,
        }
        self.records.insert(key, record);
        Ok(())
    }

    /// Up to `max` unexpired records of `kind` for peer `from`, from a
    /// random place in the store (at most 4,096 records are looked at);
    /// rate-limited per peer.
    pub fn sample(
        &mut self,
        from: &NodeId,
        kind: &str,
        max: usize,
        now: u64,
    ) -> Result<Vec<Record>, StoreError> {
        let l = &self.limits;
        if !take(
            &mut self.samplers,
            from,
            l.sample_burst,
            l.sample_per_second,
        ) {
            return Err(StoreError::RateLimited(*from));
        }
        Ok(self.sample_any(kind, max, now))
    }

    fn sample_any(&self, kind: &str, max: usize, now: u64) -> Vec<Record> {
        let skip = if self.records.is_empty() {
            0
        } else {
            rand::random_range(0..self.records.len())
        };
        self.records
            .values()
            .cycle()
            .skip(skip)
            .take(self.records.len().min(4096))
            .filter(|r| r.kind == kind && r.expires > now)
            .take(max)
            .cloned()
            .collect()
    }

    /// Every record held.
    pub fn iter(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    /// The unexpired record at `key`.
    pub fn get(&self, key: &Key, now: u64) -> Option<&Record> {
        self.records.get(key).filter(|r| r.expires > now)
    }

    /// Drops expired records; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.records.len();
        let per_owner = &mut self.per_owner;
        let (per_address, origin) = (&mut self.per_address, &mut self.origin);
        self.records.retain(|k, r| {
            let keep = r.expires > now;
            if !keep {
                if let Some(n) = per_owner.get_mut(&r.owner) {
                    *n -= 1;
                    if *n == 0 {
                        per_owner.remove(&r.owner);
                    }
                }
                if let Some(a) = origin.remove(k)
                    && let Some(n) = per_address.get_mut(&a)
                {
                    *n -= 1;
                    if *n == 0 {
                        per_address.remove(&a);
                    }
                }
            }
            keep
        });
        before - self.records.len()
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use bitdust_crypto::Identity;

    use super::*;
    use crate::record::now;

    #[test]
    fn newer_sequences_replace_older_ones_and_limits_hold() {
        let owner = Identity::generate();
        let peer = Identity::generate().node_id();
        let mut s = RecordStore::new(Limits {
            max_per_owner: 2,
            burst: 6.0,
            per_second: 0.0,
            ..Limits::default()
        });
        let r1 = Record::sign(&owner, "supplier", 1, 60, b"a".to_vec());
        let r2 = Record::sign(&owner, "supplier", 2, 60, b"b".to_vec());
        s.put(&peer, None, r2.clone(), now()).unwrap();
        assert!(matches!(
            s.put(&peer, None, r1, now()),
            Err(StoreError::Stale { held: 2, .. })
        ));
        s.put(&peer, None, r2.clone(), now()).unwrap();
        assert_eq!(s.get(&r2.key(), now()), Some(&r2));
        let mut forged = r2.clone();
        forged.sequence = 9;
        assert!(matches!(
            s.put(&peer, None, forged, now()),
            Err(StoreError::Bad(RecordError::BadSignature(_)))
        ));
        s.put(
            &peer,
            None,
            Record::sign(&owner, "k2", 1, 60, vec![]),
            now(),
        )
        .unwrap();
        assert!(matches!(
            s.put(
                &peer,
                None,
                Record::sign(&owner, "k3", 1, 60, vec![]),
                now()
            ),
            Err(StoreError::Full(2))
        ));
        // Six requests were allowed; the seventh is over the rate.
        assert!(matches!(
            s.put(&peer, None, r2.clone(), now()),
            Err(StoreError::RateLimited(_))
        ));
        // Expired records go.
        assert_eq!(s.expire(r2.expires + 1), 2);
        assert!(s.is_empty());
    }

    #[test]
    fn one_address_holds_a_bounded_number_of_records_whatever_its_identities() {
        let mut s = RecordStore::new(Limits {
            max_per_address: 3,
            ..Limits::default()
        });
        let host: IpAddr = "192.0.2.7".parse().unwrap();
        let same_64: IpAddr = "2001:db8:0:1::5".parse().unwrap();
        let also_same_64: IpAddr = "2001:db8:0:1::9".parse().unwrap();
        let mut expiring = Vec::new();
        // Fresh identities each time: only the address ties them together.
        for i in 0..3 {
            let owner = Identity::generate();
            let r = Record::sign(&owner, "supplier", 1, 60 + i, vec![]);
            expiring.push(r.expires);
            s.put(&owner.node_id(), Some(host), r, now()).unwrap();
        }
        let owner = Identity::generate();
        let r = Record::sign(&owner, "supplier", 1, 600, vec![]);
        assert_eq!(
            s.put(&owner.node_id(), Some(host), r.clone(), now()),
            Err(StoreError::Full(3))
        );
        // Another address is not held back by that one.
        s.put(
            &owner.node_id(),
            Some("192.0.2.8".parse().unwrap()),
            r,
            now(),
        )
        .unwrap();
        // One IPv6 /64 is one address.
        for ip in [same_64, also_same_64, same_64] {
            let o = Identity::generate();
            s.put(
                &o.node_id(),
                Some(ip),
                Record::sign(&o, "k", 1, 600, vec![]),
                now(),
            )
            .unwrap();
        }
        let o = Identity::generate();
        assert!(
            s.put(
                &o.node_id(),
                Some(also_same_64),
                Record::sign(&o, "k", 1, 600, vec![]),
                now()
            )
            .is_err()
        );
        // When the address's records expire, it may store again.
        let later = *expiring.iter().max().unwrap() + 1;
        assert_eq!(s.expire(later), 3);
        let o = Identity::generate();
        let r = Record::sign(&o, "k", 1, 6000, vec![]);
        s.put(&o.node_id(), Some(host), r, later).unwrap();
    }

    #[test]
    fn samples_are_rate_limited_per_peer() {
        let mut s = RecordStore::new(Limits {
            sample_burst: 3.0,
            sample_per_second: 0.0,
            ..Limits::default()
        });
        let owner = Identity::generate();
        s.put(
            &owner.node_id(),
            None,
            Record::sign(&owner, "supplier", 1, 60, vec![]),
            now(),
        )
        .unwrap();
        let (a, b) = (
            Identity::generate().node_id(),
            Identity::generate().node_id(),
        );
        for _ in 0..3 {
            assert_eq!(s.sample(&a, "supplier", 16, now()).unwrap().len(), 1);
        }
        assert_eq!(
            s.sample(&a, "supplier", 16, now()),
            Err(StoreError::RateLimited(a))
        );
        // Other peers are not slowed by that one.
        assert_eq!(s.sample(&b, "supplier", 16, now()).unwrap().len(), 1);
    }
}
