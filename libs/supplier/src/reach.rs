//! How customers reach this supplier: the address in its offer, and the
//! routers (`[supplier] routers`) it holds reservations on, which its offer
//! names so that customers who cannot dial it go through one
//! (docs/nat.md).

use std::net::SocketAddr;
use std::time::Duration;

use bitdust_crypto::NodeId;
use bitdust_net::Endpoint;
use tokio::sync::watch;

/// What the offer says about reaching the supplier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// `ip:port` customers dial: `supplier.advertise`, the bound address,
    /// or else the address a router sees this supplier at.
    pub address: Option<String>,
    /// Routers with a reservation held now, as `NODEID@ip:port`.
    pub routers: Vec<String>,
}

/// The longest wait between attempts to link to a router again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Holds a reservation on each router, linking again (2 s, doubling to
/// 60 s) whenever a link ends; `reach` names the routers held now.
pub async fn hold_reservations(
    endpoint: Endpoint,
    routers: Vec<(NodeId, SocketAddr)>,
    reach: watch::Sender<Reach>,
) {
    let mut set = tokio::task::JoinSet::new();
    for (id, addr) in routers {
        let (endpoint, reach) = (endpoint.clone(), reach.clone());
        set.spawn(async move {
            let contact = format!("{id}@{addr}");
            let mut backoff = Duration::from_secs(2);
            loop {
                match endpoint.link_router(addr, id, true).await {
                    Ok(link) => {
                        backoff = Duration::from_secs(2);
                        tracing::info!(router = %contact, observed = ?link.observed, "holding a reservation on the router");
                        reach.send_modify(|r| {
                            if !r.routers.contains(&contact) {
                                r.routers.push(contact.clone());
                            }
                            if r.address.is_none() {
                                r.address = link.observed.map(|o| o.to_string());
                            }
                        });
                        let why = link.closed().await;
                        reach.send_modify(|r| r.routers.retain(|c| *c != contact));
                        tracing::warn!(router = %contact, "the reservation on the router ended ({why}); linking again");
                    }
                    Err(e) => {
                        tracing::warn!(router = %contact, "cannot hold a reservation on the router: {e}; trying again in {} s", backoff.as_secs());
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }
    while set.join_next().await.is_some() {}
    // No routers: nothing to hold, for as long as the daemon runs.
    std::future::pending::<()>().await;
}
