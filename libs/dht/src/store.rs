//! The records a node keeps for others, with limits per sending peer.

use std::collections::HashMap;
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_records: 100_000,
            max_per_owner: 16,
            burst: 60.0,
            per_second: 1.0,
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
    /// The peer sent too many store requests.
    #[error("too many store requests from {0}; slow down")]
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
}

impl RecordStore {
    /// An empty store.
    pub fn new(limits: Limits) -> Self {
        RecordStore {
            limits,
            records: HashMap::new(),
            per_owner: HashMap::new(),
            senders: HashMap::new(),
        }
    }

    /// Takes `record` from peer `from` at time `now` (Unix seconds).
    pub fn put(&mut self, from: &NodeId, record: Record, now: u64) -> Result<(), StoreError> {
        self.take_token(from)?;
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

    /// Up to `max` unexpired records of `kind`, from a random place in the
    /// store (at most 4,096 records are looked at).
    pub fn sample(&self, kind: &str, max: usize, now: u64) -> Vec<Record> {
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

    fn take_token(&mut self, from: &NodeId) -> Result<(), StoreError> {
        let now = Instant::now();
        let l = &self.limits;
        let b = self.senders.entry(*from).or_insert(Bucket {
            tokens: l.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * l.per_second).min(l.burst);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(StoreError::RateLimited(*from));
        }
        b.tokens -= 1.0;
        // Forget senders whose buckets are full again, so the map stays small.
        if self.senders.len() > 10_000 {
            let (burst, rate) = (l.burst, l.per_second);
            self.senders
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        Ok(())
    }

    /// The unexpired record at `key`.
    pub fn get(&self, key: &Key, now: u64) -> Option<&Record> {
        self.records.get(key).filter(|r| r.expires > now)
    }

    /// Drops expired records; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.records.len();
        let per_owner = &mut self.per_owner;
        self.records.retain(|_, r| {
            let keep = r.expires > now;
            if !keep && let Some(n) = per_owner.get_mut(&r.owner) {
                *n -= 1;
                if *n == 0 {
                    per_owner.remove(&r.owner);
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
        s.put(&peer, r2.clone(), now()).unwrap();
        assert!(matches!(
            s.put(&peer, r1, now()),
            Err(StoreError::Stale { held: 2, .. })
        ));
        s.put(&peer, r2.clone(), now()).unwrap();
        assert_eq!(s.get(&r2.key(), now()), Some(&r2));
        let mut forged = r2.clone();
        forged.sequence = 9;
        assert!(matches!(
            s.put(&peer, forged, now()),
            Err(StoreError::Bad(RecordError::BadSignature(_)))
        ));
        s.put(&peer, Record::sign(&owner, "k2", 1, 60, vec![]), now())
            .unwrap();
        assert!(matches!(
            s.put(&peer, Record::sign(&owner, "k3", 1, 60, vec![]), now()),
            Err(StoreError::Full(2))
        ));
        // Six requests were allowed; the seventh is over the rate.
        assert!(matches!(
            s.put(&peer, r2.clone(), now()),
            Err(StoreError::RateLimited(_))
        ));
        // Expired records go.
        assert_eq!(s.expire(r2.expires + 1), 2);
        assert!(s.is_empty());
    }
}
