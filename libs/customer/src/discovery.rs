//! The customer's side of the DHT, through the local dht-peer's gRPC
//! socket: supplier offers found near random points of the key space, and
//! the customer's own supplier list, published under its id and signed
//! with its key so that the key alone finds the suppliers again.

use std::path::{Path, PathBuf};

use bitdust_crypto::{Identity, NodeId};
use bitdust_dht::Record;
use bitdust_proto::dht::v1 as pb;
use prost::Message;
use tonic::Status;

/// The record kind of a customer's supplier list.
pub const LIST_KIND: &str = "suppliers";
/// How long a published supplier list lives (it is re-signed daily).
pub const LIST_LIFETIME_SECS: u64 = bitdust_dht::record::MAX_LIFETIME_SECS;

/// The local dht-peer.
#[derive(Clone, Debug)]
pub struct Dht {
    socket: PathBuf,
}

/// A supplier's offer, checked.
#[derive(Clone, Debug)]
pub struct Offer {
    /// The supplier (the offer's signer).
    pub node_id: NodeId,
    /// What it offers.
    pub offer: pb::SupplierOffer,
}

impl Dht {
    /// The dht-peer serving on `socket`.
    pub fn new(socket: &Path) -> Dht {
        Dht {
            socket: socket.to_owned(),
        }
    }

    async fn client(&self) -> Result<pb::dht_client::DhtClient<tonic::transport::Channel>, Status> {
        let ch = bitdust_daemon::connect(&self.socket).await.map_err(|_| {
            Status::unavailable(format!(
                "no dht-peer answers at {}; start bitdust-dht-peer (systemctl start bitdust-dht), or hire a supplier by its address",
                self.socket.display()
            ))
        })?;
        Ok(pb::dht_client::DhtClient::new(ch))
    }

    /// Supplier offers held near a random point of the key space (the
    /// dht-peer checked their signatures; they are checked again here).
    pub async fn offers(&self, count: u32) -> Result<Vec<Offer>, Status> {
        let r = self
            .client()
            .await?
            .random_nodes(pb::RandomNodesRequest {
                count,
                kind: bitdust_supplier::offer::KIND.into(),
            })
            .await?
            .into_inner();
        let now = bitdust_dht::record::now();
        Ok(r.records
            .into_iter()
            .filter_map(|p| {
                let offer = bitdust_supplier::offer::parse_offer(&p)?;
                let rec = Record::from_proto(p).ok()?;
                rec.verify(now).ok()?;
                Some(Offer {
                    node_id: rec.owner,
                    offer,
                })
            })
            .collect())
    }

    /// Publishes `list`, signed by `identity` with `sequence`; returns how
    /// many nodes took it.
    pub async fn publish_list(
        &self,
        identity: &Identity,
        sequence: u64,
        list: &pb::SupplierList,
    ) -> Result<u32, Status> {
        let rec = Record::sign(
            identity,
            LIST_KIND,
            sequence,
            LIST_LIFETIME_SECS,
            list.encode_to_vec(),
        );
        let r = self
            .client()
            .await?
            .put_record(pb::PutRecordRequest {
                record: Some(pb::put_record_request::Record::Signed(rec.to_proto())),
                keep_published: true,
            })
            .await?
            .into_inner();
        Ok(r.stored_on)
    }

    /// The newest supplier list published by `owner`, with its sequence.
    pub async fn find_list(
        &self,
        owner: &NodeId,
    ) -> Result<Option<(u64, pb::SupplierList)>, Status> {
        let r = self
            .client()
            .await?
            .get_record(pb::GetRecordRequest {
                owner: owner.to_string(),
                kind: LIST_KIND.into(),
            })
            .await?
            .into_inner();
        let Some(p) = r.record else { return Ok(None) };
        let rec = Record::from_proto(p).map_err(|e| {
            Status::data_loss(format!("the supplier list record is not valid: {e}"))
        })?;
        if rec.owner != *owner || rec.verify(bitdust_dht::record::now()).is_err() {
            return Err(Status::data_loss(
                "the supplier list record found is not signed by this customer's key",
            ));
        }
        let list = pb::SupplierList::decode(rec.payload.as_slice())
            .map_err(|e| Status::data_loss(format!("the supplier list record is damaged: {e}")))?;
        Ok(Some((rec.sequence, list)))
    }
}
