//! The supplier's local gRPC service (`bitdust.supplier.v1.Supplier`).

use std::sync::Arc;

use bitdust_crypto::NodeId;
use bitdust_proto::supplier::v1 as pb;
use tonic::{Request, Response, Status};

use crate::store::Store;

/// Serves status and the customer list from the store.
pub struct SupplierService {
    /// The store.
    pub store: Arc<Store>,
    /// This node.
    pub node_id: NodeId,
    /// The QUIC address customers reach.
    pub listen: String,
    /// How customers reach it (its offer), and what its routers said.
    pub reach: tokio::sync::watch::Receiver<crate::reach::Reach>,
    /// The connections it serves.
    pub connections: crate::peer::Connections,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl pb::supplier_server::Supplier for SupplierService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let t = self.store.totals().map_err(internal)?;
        let reach = self.reach.borrow().clone();
        Ok(Response::new(pb::StatusReply {
            node_id: self.node_id.to_string(),
            listen: self.listen.clone(),
            capacity_bytes: self.store.limits().capacity,
            allocated_bytes: t.allocated,
            used_bytes: t.used,
            customers: t.customers,
            objects: t.objects,
            address: reach.address.unwrap_or_default(),
            routers: reach.routers,
            reachability: reach.reachability,
            port_mapping: reach.port_mapping,
            connections: u32::try_from(self.connections.open()).unwrap_or(u32::MAX),
            refused_connections: self.connections.refused(),
        }))
    }

    async fn list_customers(
        &self,
        _: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersReply>, Status> {
        let customers = self
            .store
            .customers()
            .map_err(internal)?
            .into_iter()
            .map(|(id, c)| pb::CustomerInfo {
                node_id: id.to_string(),
                quota_bytes: c.quota,
                used_bytes: c.used,
                objects: c.objects,
                since: c.since,
                address: c.address,
            })
            .collect();
        Ok(Response::new(pb::ListCustomersReply { customers }))
    }
}
