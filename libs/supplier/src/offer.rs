//! The supplier's offer in the DHT: a record of kind `supplier`, signed with
//! the supplier's own key (the one customers pin over QUIC), carrying its
//! address and free space. It is handed to the local dht-peer, which stores
//! it on the nodes closest to its key and republishes it; a fresh one (next
//! sequence, new free space) replaces it every `supplier.publish_secs`, and
//! each lives three times that long, so an offer outlives a missed refresh
//! but not a supplier that is gone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bitdust_crypto::Identity;
use bitdust_dht::Record;
use bitdust_proto::dht::v1 as pb;
use prost::Message;

use crate::store::Store;

/// The record kind of a supplier's offer.
pub const KIND: &str = "supplier";

/// What is needed to publish offers.
pub struct Publisher {
    /// The supplier's identity.
    pub identity: Identity,
    /// The store, for the free space.
    pub store: Arc<Store>,
    /// How customers reach the supplier (address, routers); a change
    /// publishes a fresh offer at once.
    pub reach: tokio::sync::watch::Receiver<crate::reach::Reach>,
    /// The dht-peer's socket.
    pub dht_socket: PathBuf,
    /// Seconds between offers.
    pub every: Duration,
}

impl Publisher {
    /// The current offer, signed.
    pub fn offer(&self, sequence: u64) -> Result<Record, crate::store::StoreError> {
        // Space reserved and never used goes back before it is offered.
        self.store.expire_unused()?;
        let t = self.store.totals()?;
        let l = self.store.limits();
        let free = l.capacity.saturating_sub(t.allocated);
        let reach = self.reach.borrow().clone();
        let payload = pb::SupplierOffer {
            address: reach.address.unwrap_or_default(),
            routers: reach.routers,
            capacity_bytes: l.capacity,
            free_bytes: free,
            accepting: free > 0 && t.customers < l.max_customers,
        }
        .encode_to_vec();
        let lifetime = (self.every.as_secs() * 3).min(bitdust_dht::record::MAX_LIFETIME_SECS);
        Ok(Record::sign(
            &self.identity,
            KIND,
            sequence,
            lifetime,
            payload,
        ))
    }

    async fn publish_once(&self, sequence: u64) -> Result<u32, String> {
        let record = self.offer(sequence).map_err(|e| e.to_string())?;
        let ch = bitdust_daemon::connect(&self.dht_socket)
            .await
            .map_err(|e| {
                format!(
                    "the dht-peer at {} does not answer: {e}",
                    self.dht_socket.display()
                )
            })?;
        let r = pb::dht_client::DhtClient::new(ch)
            .put_record(pb::PutRecordRequest {
                record: Some(pb::put_record_request::Record::Signed(record.to_proto())),
                keep_published: true,
            })
            .await
            .map_err(|e| e.message().to_owned())?;
        Ok(r.into_inner().stored_on)
    }

    /// Sleeps `d`, or less when how customers reach the supplier changes.
    async fn wait(&mut self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            r = self.reach.changed() => {
                if r.is_err() {
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    /// The local dht-peer's routing table size, if it answers.
    async fn known_nodes(&self) -> Option<u32> {
        let ch = bitdust_daemon::connect(&self.dht_socket).await.ok()?;
        let st = pb::dht_client::DhtClient::new(ch)
            .status(pb::StatusRequest {})
            .await
            .ok()?;
        Some(st.into_inner().routing_table_size)
    }

    /// Publishes the offer once the local dht-peer has bootstrapped (knows
    /// another node, or after [`BOOTSTRAP_WAIT`]), then every `every`. An
    /// offer stored on fewer nodes than it should be (the DHT's `K`, or
    /// every node the dht-peer knows when it knows fewer) is published
    /// again soon: after 2 s, doubling up to `every`. Retries every 5 s
    /// while the dht-peer is not there.
    pub async fn run(mut self) {
        // Nothing to publish until there is an address to dial.
        while self.reach.borrow().address.is_none() {
            if self.reach.changed().await.is_err() {
                return;
            }
        }
        let waited = tokio::time::Instant::now();
        while waited.elapsed() < BOOTSTRAP_WAIT {
            if self.known_nodes().await.is_some_and(|n| n > 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut last_seq = 0u64;
        let mut warned = false;
        let mut again = RETRY_FIRST;
        loop {
            let seq = bitdust_dht::record::now().max(last_seq + 1);
            match self.publish_once(seq).await {
                Ok(n) => {
                    last_seq = seq;
                    warned = false;
                    let known = self.known_nodes().await.unwrap_or(0);
                    let want = (known as usize).clamp(1, bitdust_dht::K) as u32;
                    if n < want {
                        tracing::info!(reach = ?*self.reach.borrow(), stored_on = n, want, "published the supplier offer on fewer nodes than it should be; publishing again in {} s", again.as_secs());
                        self.wait(again.min(self.every)).await;
                        again = (again * 2).min(self.every);
                    } else {
                        tracing::info!(reach = ?*self.reach.borrow(), stored_on = n, "published the supplier offer in the DHT");
                        again = RETRY_FIRST;
                        self.wait(self.every).await;
                    }
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(
                            "cannot publish the supplier offer yet (retrying every 5 s): {e}"
                        );
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_secs(5).min(self.every)).await;
                }
            }
        }
    }
}

/// How long the publisher waits for its dht-peer to know another node
/// before publishing anyway (a node alone, or a slow bootstrap).
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(30);
/// The first wait before publishing an under-replicated offer again.
const RETRY_FIRST: Duration = Duration::from_secs(2);

/// Routers an offer may name.
pub const MAX_ROUTERS: usize = 4;

/// Reads a supplier offer from a DHT record of kind [`KIND`].
pub fn parse_offer(record: &pb::Record) -> Option<pb::SupplierOffer> {
    if record.kind != KIND {
        return None;
    }
    // A customer dials the address in an offer: an IP literal only, never a
    // name to resolve from what a peer published.
    pb::SupplierOffer::decode(record.payload.as_slice())
        .ok()
        .filter(|o| bitdust_dht::routing::peer_address(&o.address).is_some())
        .filter(|o| {
            o.routers.len() <= MAX_ROUTERS
                && o.routers
                    .iter()
                    .all(|r| bitdust_net::relay::parse_router(r).is_ok())
        })
}
