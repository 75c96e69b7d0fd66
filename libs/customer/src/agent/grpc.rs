//! The gRPC face of the agent: each handler finds out who calls and
//! delegates.

use super::*;

/// The gRPC face of the agent.
pub struct CustomerService(pub Arc<Agent>);

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::customer_server::Customer for CustomerService {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let caller = Caller::of(&req)?;
        Ok(Response::new(self.0.status(caller).await?))
    }

    async fn start_afresh(
        &self,
        req: Request<pb::StartAfreshRequest>,
    ) -> Result<Response<pb::StartAfreshReply>, Status> {
        Caller::of(&req)?.require_system("start afresh")?;
        Ok(Response::new(pb::StartAfreshReply {
            gave_up: self.0.start_afresh()?,
        }))
    }

    type BackupStream = EventStream<pb::BackupEvent>;

    async fn backup(
        &self,
        req: Request<tonic::Streaming<pb::BackupInput>>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let caller = Caller::of(&req)?;
        let (tx, rx) = mpsc::channel(16);
        let agent = self.0.clone();
        let stream = req.into_inner();
        tokio::spawn(async move {
            let r = agent.backup(caller, stream, tx.clone()).await;
            let ev = r
                .map(|done| pb::BackupEvent {
                    kind: Some(pb::backup_event::Kind::Done(done)),
                })
                .map_err(Status::from);
            let _ = tx.send(ev).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type RestoreStream = EventStream<pb::RestoreEvent>;

    async fn restore(
        &self,
        req: Request<pb::RestoreRequest>,
    ) -> Result<Response<Self::RestoreStream>, Status> {
        let caller = Caller::of(&req)?;
        let (tx, rx) = mpsc::channel(16);
        let agent = self.0.clone();
        let req = req.into_inner();
        tokio::spawn(async move {
            let r = agent.restore(caller, req, tx.clone()).await;
            let ev = r
                .map(|done| pb::RestoreEvent {
                    kind: Some(pb::restore_event::Kind::Done(done)),
                })
                .map_err(Status::from);
            let _ = tx.send(ev).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListReply>, Status> {
        let caller = Caller::of(&req)?;
        Ok(Response::new(self.0.list(caller)?))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        let caller = Caller::of(&req)?;
        Ok(Response::new(
            self.0.delete(caller, req.into_inner()).await?,
        ))
    }

    async fn list_suppliers(
        &self,
        _: Request<pb::ListSuppliersRequest>,
    ) -> Result<Response<pb::ListSuppliersReply>, Status> {
        let a = &self.0;
        let reach = a.reachability().await;
        Ok(Response::new(pb::ListSuppliersReply {
            positions: a.code.suppliers() as u32,
            suppliers: a.supplier_infos(&reach)?,
        }))
    }

    async fn check_suppliers(
        &self,
        req: Request<pb::CheckSuppliersRequest>,
    ) -> Result<Response<pb::ListSuppliersReply>, Status> {
        Ok(Response::new(
            self.0.check_suppliers(req.into_inner().audit).await?,
        ))
    }

    async fn mark_repaired(
        &self,
        req: Request<pb::MarkRepairedRequest>,
    ) -> Result<Response<pb::MarkRepairedReply>, Status> {
        Caller::of(&req)?.require_system("record repairs")?;
        let missing_positions = self.0.mark_repaired(&req.into_inner())?;
        Ok(Response::new(pb::MarkRepairedReply { missing_positions }))
    }

    async fn hire_supplier(
        &self,
        req: Request<pb::HireSupplierRequest>,
    ) -> Result<Response<pb::SupplierInfo>, Status> {
        Caller::of(&req)?.require_system("hire suppliers")?;
        let req = req.into_inner();
        if req.address.is_empty() {
            return Ok(Response::new(self.0.hire_from_dht(req.position).await?));
        }
        Ok(Response::new(
            self.0.hire(&req.address, req.position).await?,
        ))
    }

    async fn fire_supplier(
        &self,
        req: Request<pb::FireSupplierRequest>,
    ) -> Result<Response<pb::FireSupplierReply>, Status> {
        Caller::of(&req)?.require_system("fire suppliers")?;
        Ok(Response::new(self.0.fire(req.into_inner().position).await?))
    }

    type LsStream = EventStream<pb::LsReply>;

    async fn ls(&self, req: Request<pb::LsRequest>) -> Result<Response<Self::LsStream>, Status> {
        let caller = Caller::of(&req)?;
        let (tx, rx) = mpsc::channel(4);
        let agent = self.0.clone();
        let req = req.into_inner();
        tokio::spawn(async move {
            if let Err(s) = agent.ls(caller, req, tx.clone()).await {
                let _ = tx.send(Err(s)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type DiffStream = EventStream<pb::DiffEvent>;

    async fn diff(
        &self,
        req: Request<pb::DiffRequest>,
    ) -> Result<Response<Self::DiffStream>, Status> {
        let caller = Caller::of(&req)?;
        let (tx, rx) = mpsc::channel(64);
        let agent = self.0.clone();
        let req = req.into_inner();
        tokio::spawn(async move {
            let ev = agent
                .diff(caller, req, tx.clone())
                .await
                .map(|done| pb::DiffEvent {
                    kind: Some(pb::diff_event::Kind::Done(done)),
                });
            let _ = tx.send(ev).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsReply>, Status> {
        let caller = Caller::of(&req)?;
        Ok(Response::new(self.0.stats(caller, req.into_inner()).await?))
    }

    async fn check(
        &self,
        req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckReply>, Status> {
        let caller = Caller::of(&req)?;
        Ok(Response::new(self.0.check(caller, req.into_inner()).await?))
    }

    async fn forget(
        &self,
        req: Request<pb::ForgetRequest>,
    ) -> Result<Response<pb::ForgetReply>, Status> {
        let caller = Caller::of(&req)?;
        Ok(Response::new(
            self.0.forget(caller, req.into_inner()).await?,
        ))
    }

    async fn prune(
        &self,
        req: Request<pb::PruneRequest>,
    ) -> Result<Response<pb::PruneReply>, Status> {
        let caller = Caller::of(&req)?;
        Ok(Response::new(self.0.prune(caller, req.into_inner()).await?))
    }
}
