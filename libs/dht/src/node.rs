//! A DHT node: answers requests, and finds nodes and records with
//! iterative parallel lookups.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bitdust_crypto::NodeId;
use bitdust_proto::dht::v1 as pb;
use pb::{request, response};
use tokio::task::JoinSet;

use crate::key::Key;
use crate::record::{Record, now};
pub use crate::routing::Contact;
use crate::routing::RoutingTable;
use crate::store::{Limits, RecordStore, StoreError};
use crate::{ALPHA, K};

/// Why a request to another node failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DhtError {
    /// No answer: down, unreachable or too slow.
    #[error("{0}")]
    Unreachable(String),
    /// It answered with an error.
    #[error("{message}")]
    Refused {
        /// What kind of refusal.
        code: pb::ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// It answered with something that is not the answer to the request.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
}

/// Sends one request to a node and gives back its answer.
pub trait Transport: Send + Sync + 'static {
    /// Sends `req` to `to`.
    fn call(
        &self,
        to: &Contact,
        req: pb::Request,
    ) -> impl Future<Output = Result<pb::Response, DhtError>> + Send;
}

/// What a lookup found.
#[derive(Debug, Default, Clone)]
pub struct Lookup {
    /// The closest nodes that answered, closest first (at most [`K`]).
    pub closest: Vec<Contact>,
    /// Hops to the closest node found: 1 when it was in this node's own
    /// table, 2 when a node from the table named it, and so on.
    pub hops: usize,
    /// Requests sent.
    pub requests: usize,
    /// Requests that got no answer.
    pub failures: usize,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Asked {
    No,
    InFlight,
    Answered,
    Failed,
}

struct Candidate {
    contact: Contact,
    asked: Asked,
    depth: usize,
}

/// One DHT node.
pub struct Node<T> {
    me: Contact,
    table: Mutex<RoutingTable>,
    store: Mutex<RecordStore>,
    transport: Arc<T>,
    /// The address it gives others in its requests; empty when the node
    /// only asks (others keep it out of their routing tables).
    serving: Mutex<String>,
    /// Where peers saw this node's pings come from: each peer's latest
    /// answer, newest first, at most [`MAX_OBSERVED`].
    observed: Mutex<Vec<(NodeId, SocketAddr)>>,
}

/// Observed addresses kept, at most (see [`Node::observed`]).
pub const MAX_OBSERVED: usize = 8;

fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An answer that is an error becomes [`DhtError::Refused`].
fn refusal(r: Result<pb::Response, DhtError>) -> Result<pb::Response, DhtError> {
    match r? {
        pb::Response {
            kind: Some(response::Kind::Error(e)),
        } => Err(DhtError::Refused {
            code: pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified),
            message: e.message,
        }),
        ok => Ok(ok),
    }
}

fn error(code: pb::ErrorCode, message: impl Into<String>) -> pb::Response {
    pb::Response {
        kind: Some(response::Kind::Error(pb::Error {
            code: code as i32,
            message: message.into(),
        })),
    }
}

impl<T: Transport> Node<T> {
    /// A node with id `id`, serving at `address` (empty: it only asks).
    pub fn new(id: NodeId, address: &str, transport: Arc<T>, limits: Limits) -> Self {
        let me = Contact::new(id, address);
        Node {
            table: Mutex::new(RoutingTable::new(me.key)),
            store: Mutex::new(RecordStore::new(limits)),
            transport,
            serving: Mutex::new(address.to_owned()),
            me,
            observed: Mutex::new(Vec::new()),
        }
    }

    /// Gives others `address` from now on (empty: only ask), as a
    /// dial-back found it reachable or not.
    pub fn set_serving(&self, address: &str) {
        address.clone_into(&mut lock(&self.serving));
    }

    /// The address it gives others now (empty: it only asks).
    pub fn serving(&self) -> String {
        lock(&self.serving).clone()
    }

    /// Where peers saw this node's pings come from (peer, address), each
    /// peer's latest answer, newest first.
    pub fn observed(&self) -> Vec<(NodeId, SocketAddr)> {
        lock(&self.observed).clone()
    }

    /// This node's contact.
    pub fn contact(&self) -> &Contact {
        &self.me
    }

    /// Runs `f` on the routing table.
    pub fn with_table<R>(&self, f: impl FnOnce(&mut RoutingTable) -> R) -> R {
        f(&mut lock(&self.table))
    }

    /// Records held for others.
    pub fn records(&self) -> usize {
        lock(&self.store).len()
    }

    /// Drops expired records.
    pub fn expire(&self) -> usize {
        lock(&self.store).expire(now())
    }

    /// Keeps `record` in this node's own store without rate limits (a
    /// record read back from disk, or one this node publishes).
    pub fn keep(&self, record: Record) -> Result<(), StoreError> {
        lock(&self.store).restore(record, now())
    }

    /// The unexpired record at `key` in this node's own store.
    pub fn local(&self, key: &Key) -> Option<Record> {
        lock(&self.store).get(key, now()).cloned()
    }

    /// Every record held (for saving them).
    pub fn held(&self) -> Vec<Record> {
        lock(&self.store).iter().cloned().collect()
    }

    /// Answers a request from node `from` (authenticated by the transport),
    /// whose packets come from `source` when the transport knows it.
    pub fn handle(
        &self,
        from: &NodeId,
        source: Option<SocketAddr>,
        req: pb::Request,
    ) -> pb::Response {
        if let Some(addr) = crate::routing::peer_address(&req.from_address) {
            lock(&self.table).insert(Contact::new(*from, addr.to_string()));
        }
        let Some(kind) = req.kind else {
            return error(pb::ErrorCode::BadRequest, "the request names no operation");
        };
        let key_of = |b: &[u8]| {
            Key::from_slice(b).ok_or_else(|| {
                error(
                    pb::ErrorCode::BadRequest,
                    format!("a key is 32 bytes, not {}", b.len()),
                )
            })
        };
        let contacts = |key: &Key| -> Vec<pb::Contact> {
            lock(&self.table)
                .closest(key, K)
                .iter()
                .filter(|c| c.id != *from)
                .map(Contact::to_proto)
                .collect()
        };
        let kind = match kind {
            request::Kind::Ping(_) => response::Kind::Pong(pb::Pong {
                observed: source.map(|a| a.to_string()).unwrap_or_default(),
            }),
            request::Kind::FindNode(f) => match key_of(&f.key) {
                Ok(key) => response::Kind::Nodes(pb::Nodes {
                    contacts: contacts(&key),
                }),
                Err(e) => return e,
            },
            request::Kind::FindValue(f) => match key_of(&f.key) {
                Ok(key) => {
                    let records = lock(&self.store)
                        .get(&key, now())
                        .map(Record::to_proto)
                        .into_iter()
                        .collect();
                    response::Kind::Value(pb::Value {
                        records,
                        contacts: contacts(&key),
                    })
                }
                Err(e) => return e,
            },
            request::Kind::Sample(s) => {
                let max = (s.max as usize).min(16);
                let sampled = lock(&self.store).sample(from, &s.kind, max, now());
                let records = match sampled {
                    Ok(r) => r.iter().map(Record::to_proto).collect(),
                    Err(e) => return error(pb::ErrorCode::RateLimited, e.to_string()),
                };
                response::Kind::Value(pb::Value {
                    records,
                    contacts: contacts(&Key::random()),
                })
            }
            request::Kind::DialBack(_) => {
                return error(
                    pb::ErrorCode::BadRequest,
                    "this node does not dial back: its transport has no fresh sockets",
                );
            }
            request::Kind::Store(s) => {
                let Some(r) = s.record else {
                    return error(pb::ErrorCode::BadRequest, "a store request needs a record");
                };
                let r = match Record::from_proto(r) {
                    Ok(r) => r,
                    Err(e) => return error(pb::ErrorCode::BadRecord, e.to_string()),
                };
                match lock(&self.store).put(from, source.map(|a| a.ip()), r, now()) {
                    Ok(()) => response::Kind::Stored(pb::Stored {}),
                    Err(e) => {
                        let code = match e {
                            StoreError::Bad(_) => pb::ErrorCode::BadRecord,
                            StoreError::Stale { .. } => pb::ErrorCode::Stale,
                            StoreError::RateLimited(_) => pb::ErrorCode::RateLimited,
                            StoreError::Full(_) => pb::ErrorCode::Full,
                        };
                        return error(code, e.to_string());
                    }
                }
            }
        };
        pb::Response { kind: Some(kind) }
    }

    fn request(&self, kind: request::Kind) -> pb::Request {
        pb::Request {
            from_address: lock(&self.serving).clone(),
            kind: Some(kind),
        }
    }

    /// Sends `kind` to `to`, keeping the routing table up to date with the
    /// outcome.
    pub async fn call(&self, to: &Contact, kind: request::Kind) -> Result<pb::Response, DhtError> {
        let r = self.transport.call(to, self.request(kind)).await;
        match &r {
            Ok(_) => {
                lock(&self.table).insert(to.clone());
            }
            Err(DhtError::Unreachable(_)) => lock(&self.table).failed(&to.id),
            Err(_) => {}
        }
        refusal(r)
    }

    /// Pings `to`; returns where it saw the ping come from, if it says
    /// (and keeps that, see [`Node::observed`]).
    pub async fn ping(&self, to: &Contact) -> Result<Option<SocketAddr>, DhtError> {
        match self.call(to, request::Kind::Ping(pb::Ping {})).await?.kind {
            Some(response::Kind::Pong(p)) => {
                let seen = p.observed.parse::<SocketAddr>().ok();
                if let Some(a) = seen {
                    let mut o = lock(&self.observed);
                    o.retain(|(id, _)| *id != to.id);
                    o.insert(0, (to.id, a));
                    o.truncate(MAX_OBSERVED);
                }
                Ok(seen)
            }
            other => Err(DhtError::BadAnswer(format!("{other:?}"))),
        }
    }

    /// The [`K`] nodes closest to `target` that answer.
    pub async fn lookup(&self, target: Key) -> Lookup {
        self.iterate(target, false).await.0
    }

    /// The newest valid record at `key` (this node's own store included),
    /// and the lookup that found it.
    pub async fn find_value(&self, key: Key) -> (Option<Record>, Lookup) {
        let (l, r) = self.iterate(key, true).await;
        let mine = lock(&self.store).get(&key, now()).cloned();
        let r = match (r, mine) {
            (Some(a), Some(b)) => Some(if b.sequence > a.sequence { b } else { a }),
            (a, b) => a.or(b),
        };
        (r, l)
    }

    /// Nodes near a random point of the key space, and up to `max` distinct
    /// valid records of `kind` sampled from them.
    pub async fn sample(&self, kind: &str, max: usize) -> (Vec<Contact>, Vec<Record>) {
        let mut l = self.lookup(Key::random()).await;
        {
            use rand::seq::SliceRandom;
            l.closest.shuffle(&mut rand::rng());
        }
        let mut found: BTreeMap<Key, Record> = BTreeMap::new();
        if kind.is_empty() {
            return (l.closest, Vec::new());
        }
        for c in &l.closest {
            if found.len() >= max {
                break;
            }
            let req = request::Kind::Sample(pb::Sample {
                kind: kind.to_owned(),
                max: max.min(16) as u32,
            });
            let Ok(pb::Response {
                kind: Some(response::Kind::Value(v)),
            }) = self.call(c, req).await
            else {
                continue;
            };
            for r in v.records {
                let Ok(r) = Record::from_proto(r) else {
                    continue;
                };
                if r.kind != kind || r.verify(now()).is_err() || found.len() >= max {
                    continue;
                }
                found.entry(r.key()).or_insert(r);
            }
        }
        (l.closest, found.into_values().collect())
    }

    /// Stores `record` on the [`K`] nodes closest to its key; returns how
    /// many took it, and the first refusal if any refused.
    pub async fn put(&self, record: &Record) -> (usize, Option<DhtError>) {
        let l = self.lookup(record.key()).await;
        let mut set = JoinSet::new();
        for c in l.closest {
            let t = self.transport.clone();
            let req = self.request(request::Kind::Store(pb::Store {
                record: Some(record.to_proto()),
            }));
            set.spawn(async move { (c.clone(), t.call(&c, req).await) });
        }
        let (mut ok, mut first_err) = (0, None);
        while let Some(Ok((c, r))) = set.join_next().await {
            match refusal(r) {
                Ok(pb::Response {
                    kind: Some(response::Kind::Stored(_)),
                }) => ok += 1,
                Err(e @ DhtError::Refused { .. }) => {
                    first_err.get_or_insert(e);
                }
                Ok(other) => {
                    first_err.get_or_insert(DhtError::BadAnswer(format!("{other:?}")));
                }
                Err(e) => {
                    lock(&self.table).failed(&c.id);
                    first_err.get_or_insert(e);
                }
            }
        }
        (ok, first_err)
    }

    /// Joins the network through `seeds`: pings them, looks up this node's
    /// own key, then refreshes every bucket farther than its nearest
    /// neighbour. Returns the size of the routing table.
    pub async fn bootstrap(&self, seeds: &[Contact]) -> usize {
        for s in seeds {
            let _ = self.ping(s).await;
        }
        self.lookup(self.me.key).await;
        self.refresh().await;
        lock(&self.table).len()
    }

    /// Looks up a random key in each bucket from the farthest down to the
    /// nearest neighbour's, so the table knows every part of the space.
    pub async fn refresh(&self) {
        let targets = lock(&self.table).refresh_targets();
        let me = self.me.key;
        for b in targets {
            self.lookup(me.random_in_bucket(b)).await;
        }
    }

    async fn iterate(&self, target: Key, want_value: bool) -> (Lookup, Option<Record>) {
        let mut cands: BTreeMap<Key, Candidate> = BTreeMap::new();
        for c in lock(&self.table).closest(&target, K) {
            cands.insert(
                c.key.distance(&target),
                Candidate {
                    contact: c,
                    asked: Asked::No,
                    depth: 1,
                },
            );
        }
        let mut found: Option<Record> = None;
        let mut lookup = Lookup::default();
        let mut inflight = JoinSet::new();
        loop {
            // Ask the closest not yet asked among the K closest that may
            // still answer, ALPHA at a time.
            let mut to_ask = Vec::new();
            let mut live = 0;
            for (d, c) in &cands {
                if live >= K || inflight.len() + to_ask.len() >= ALPHA {
                    break;
                }
                match c.asked {
                    Asked::Failed => continue,
                    Asked::No => to_ask.push(*d),
                    _ => {}
                }
                live += 1;
            }
            for d in to_ask {
                let Some(c) = cands.get_mut(&d) else { continue };
                c.asked = Asked::InFlight;
                let kind = if want_value {
                    request::Kind::FindValue(pb::FindValue {
                        key: target.0.to_vec(),
                    })
                } else {
                    request::Kind::FindNode(pb::FindNode {
                        key: target.0.to_vec(),
                    })
                };
                let (t, req, contact) = (
                    self.transport.clone(),
                    self.request(kind),
                    c.contact.clone(),
                );
                lookup.requests += 1;
                inflight.spawn(async move { (d, t.call(&contact, req).await) });
            }
            let Some(joined) = inflight.join_next().await else {
                break;
            };
            let Ok((d, answer)) = joined else { continue };
            let Some(c) = cands.get_mut(&d) else { continue };
            let depth = c.depth;
            let contact = c.contact.clone();
            let (records, contacts) = match answer {
                Ok(pb::Response {
                    kind: Some(response::Kind::Nodes(n)),
                }) => (Vec::new(), n.contacts),
                Ok(pb::Response {
                    kind: Some(response::Kind::Value(v)),
                }) => (v.records, v.contacts),
                Ok(_) => {
                    c.asked = Asked::Failed;
                    continue;
                }
                Err(_) => {
                    c.asked = Asked::Failed;
                    lookup.failures += 1;
                    lock(&self.table).failed(&contact.id);
                    continue;
                }
            };
            c.asked = Asked::Answered;
            lock(&self.table).insert(contact);
            for r in records {
                let Ok(r) = Record::from_proto(r) else {
                    continue;
                };
                if r.key() != target || r.verify(now()).is_err() {
                    continue;
                }
                if found.as_ref().is_none_or(|f| r.sequence > f.sequence) {
                    found = Some(r);
                }
            }
            for p in contacts.iter().take(K) {
                let Some(nc) = Contact::from_proto(p) else {
                    continue;
                };
                if nc.id == self.me.id {
                    continue;
                }
                cands.entry(nc.key.distance(&target)).or_insert(Candidate {
                    contact: nc,
                    asked: Asked::No,
                    depth: depth + 1,
                });
            }
        }
        let answered: Vec<&Candidate> = cands
            .values()
            .filter(|c| c.asked == Asked::Answered)
            .take(K)
            .collect();
        lookup.hops = answered.first().map_or(0, |c| c.depth);
        lookup.closest = answered.iter().map(|c| c.contact.clone()).collect();
        (lookup, found)
    }
}
