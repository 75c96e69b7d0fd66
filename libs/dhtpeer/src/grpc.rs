//! The dht-peer's local gRPC service (`bitdust.dht.v1.Dht`).

use std::sync::Arc;

use bitdust_crypto::NodeId;
use bitdust_dht::record::{MAX_KIND, MAX_LIFETIME_SECS, MAX_PAYLOAD, record_key};
use bitdust_dht::{Contact, Key, Record};
use bitdust_proto::dht::v1 as pb;
use tonic::{Request, Response, Status};

use crate::DhtPeer;

/// Serves the local API from the running node.
pub struct DhtService {
    /// The node.
    pub peer: Arc<DhtPeer>,
}

fn peer(c: &Contact) -> pb::Peer {
    pb::Peer {
        node_id: c.id.to_string(),
        address: c.address.clone(),
    }
}

fn node_id(field: &str, s: &str) -> Result<NodeId, Status> {
    s.parse().map_err(|_| {
        Status::invalid_argument(format!(
            "{field} {s:?} is not a node id; give one in the text form `bitdustctl status` prints"
        ))
    })
}

/// 64 hex digits.
pub fn key_hex(k: &Key) -> String {
    k.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_key(s: &str) -> Result<Key, Status> {
    let bad = || Status::invalid_argument(format!("key {s:?} is not 64 hex digits"));
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(Key(k))
}

fn router_status(r: &crate::router::Router) -> pb::RouterStatus {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &r.counters;
    pb::RouterStatus {
        address: r.address(),
        accepted: c.accepted.load(Relaxed),
        refused: c.refused.load(Relaxed),
        capped: c.capped.load(Relaxed),
        packets: c.packets.load(Relaxed),
        bytes: c.bytes.load(Relaxed),
        dropped_rate: c.dropped_rate.load(Relaxed),
        dropped_unreachable: c.dropped_unreachable.load(Relaxed),
        dropped_full: c.dropped_full.load(Relaxed),
        punches: c.punches.load(Relaxed),
        dial_backs: c.dial_backs.load(Relaxed),
        dial_backs_reached: c.dial_backs_reached.load(Relaxed),
        clients: r
            .clients()
            .into_iter()
            .map(|c| pb::RouterClient {
                node_id: c.id.to_string(),
                address: c.observed.to_string(),
                reserved: c.reserved,
                sent_bytes: c.sent,
                forwarded_bytes: c.forwarded,
                connected_secs: c.secs,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::dht_server::Dht for DhtService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let p = &self.peer;
        let (size, buckets) = p.node.with_table(|t| (t.len(), t.buckets_used()));
        Ok(Response::new(pb::StatusResponse {
            node_id: p.node.contact().id.to_string(),
            address: p.node.serving(),
            routing_table_size: size as u32,
            buckets_used: buckets as u32,
            records_stored: p.node.records() as u32,
            records_published: p.published_count() as u32,
            uptime_secs: p.started.elapsed().as_secs(),
            observed: p
                .node
                .observed()
                .into_iter()
                .map(|(peer, a)| pb::ObservedAddress {
                    peer: peer.to_string(),
                    address: a.to_string(),
                })
                .collect(),
            router: p.router.as_deref().map(router_status),
            reachability: p.reach.borrow().reachability.clone(),
            port_mapping: p.reach.borrow().port_mapping.clone(),
        }))
    }

    async fn find_node(
        &self,
        req: Request<pb::FindNodeRequest>,
    ) -> Result<Response<pb::FindNodeResponse>, Status> {
        let r = req.into_inner();
        let target = match (r.node_id.is_empty(), r.key.is_empty()) {
            (false, true) => Key::of_node(&node_id("node_id", &r.node_id)?),
            (true, false) => parse_key(&r.key)?,
            (true, true) => self.peer.node.contact().key,
            (false, false) => {
                return Err(Status::invalid_argument(
                    "give either node_id or key, not both",
                ));
            }
        };
        let l = self.peer.node.lookup(target).await;
        Ok(Response::new(pb::FindNodeResponse {
            nodes: l.closest.iter().map(peer).collect(),
            hops: l.hops as u32,
            requests: l.requests as u32,
        }))
    }

    async fn get_record(
        &self,
        req: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        let r = req.into_inner();
        let owner = node_id("owner", &r.owner)?;
        if r.kind.is_empty() || r.kind.len() > MAX_KIND {
            return Err(Status::invalid_argument(format!(
                "kind must be 1 to {MAX_KIND} bytes, such as \"supplier\""
            )));
        }
        let (found, _) = self.peer.node.find_value(record_key(&owner, &r.kind)).await;
        Ok(Response::new(pb::GetRecordResponse {
            found: found.is_some(),
            record: found.as_ref().map(Record::to_proto),
        }))
    }

    async fn put_record(
        &self,
        req: Request<pb::PutRecordRequest>,
    ) -> Result<Response<pb::PutRecordResponse>, Status> {
        let r = req.into_inner();
        let record = match r.record {
            None => {
                return Err(Status::invalid_argument(
                    "give a record: `signed` (signed by its owner) or `unsigned` (to sign with this node's key)",
                ));
            }
            Some(pb::put_record_request::Record::Signed(s)) => Record::from_proto(s)
                .map_err(|e| Status::invalid_argument(format!("the record is not valid: {e}")))?,
            Some(pb::put_record_request::Record::Unsigned(u)) => {
                if u.kind.is_empty() || u.kind.len() > MAX_KIND {
                    return Err(Status::invalid_argument(format!(
                        "kind must be 1 to {MAX_KIND} bytes"
                    )));
                }
                if u.payload.len() > MAX_PAYLOAD {
                    return Err(Status::invalid_argument(format!(
                        "the payload of {} bytes is over the limit of {MAX_PAYLOAD} bytes",
                        u.payload.len()
                    )));
                }
                let lifetime = match u.lifetime_secs {
                    0 => 3600,
                    l if l > MAX_LIFETIME_SECS => {
                        return Err(Status::invalid_argument(format!(
                            "lifetime_secs {l} is over the limit of {MAX_LIFETIME_SECS} (90 days)"
                        )));
                    }
                    l => l,
                };
                self.peer.sign(&u.kind, lifetime, u.payload)
            }
        };
        record
            .verify(bitdust_dht::record::now())
            .map_err(|e| Status::invalid_argument(format!("the record is not valid: {e}")))?;
        let (stored_on, refusal) = self
            .peer
            .publish(record.clone(), r.keep_published)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::PutRecordResponse {
            stored_on: stored_on as u32,
            key: key_hex(&record.key()),
            first_refusal: refusal.map(|e| e.to_string()).unwrap_or_default(),
            record: Some(record.to_proto()),
        }))
    }

    async fn random_nodes(
        &self,
        req: Request<pb::RandomNodesRequest>,
    ) -> Result<Response<pb::RandomNodesResponse>, Status> {
        let r = req.into_inner();
        let count = match r.count {
            0 => 8,
            n => (n as usize).min(64),
        };
        if r.kind.len() > MAX_KIND {
            return Err(Status::invalid_argument(format!(
                "kind must be at most {MAX_KIND} bytes"
            )));
        }
        let (nodes, records) = self.peer.node.sample(&r.kind, count).await;
        Ok(Response::new(pb::RandomNodesResponse {
            nodes: nodes.iter().take(count).map(peer).collect(),
            records: records.iter().map(Record::to_proto).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_hex() {
        let k = Key::random();
        assert_eq!(parse_key(&key_hex(&k)).ok(), Some(k));
        assert!(parse_key("xyz").is_err());
        assert!(parse_key(&"g".repeat(64)).is_err());
    }
}
