//! How customers reach this supplier: the address in its offer, and the
//! routers (`[supplier] routers`) it holds reservations on, which its offer
//! names so that customers who cannot dial it go through one
//! (docs/nat.md).

use std::net::SocketAddr;
use std::time::Duration;

use bitdust_crypto::NodeId;
use bitdust_net::Endpoint;
use bitdust_net::portmap;
use bitdust_net::reachability::{describe, local_towards};
use tokio::sync::watch;

/// What the offer says about reaching the supplier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// `ip:port` customers dial: `supplier.advertise`, the bound address,
    /// or else the address a router sees this supplier at.
    pub address: Option<String>,
    /// Routers with a reservation held now, as `NODEID@ip:port`.
    pub routers: Vec<String>,
    /// What the last dial-back said, in words (empty before any).
    pub reachability: String,
    /// The port mapping the home router keeps (`PCP: ip:port`), or why
    /// there is none, in words (empty when none is asked for).
    pub port_mapping: String,
}

/// The port mapping as [`portmap::PortMap::state`] says; a receiver whose
/// sender is gone when none is asked for.
pub type Mapping = watch::Receiver<portmap::State>;

/// A [`Mapping`] for a supplier that asks for none.
pub fn no_mapping() -> Mapping {
    watch::channel(portmap::State::default()).1
}

/// Waits for the mapping's address to change (not only its words);
/// forever when none is asked for.
async fn mapping_changed(m: &mut Mapping, was: Option<std::net::SocketAddrV4>) {
    loop {
        if m.borrow_and_update().external != was {
            return;
        }
        if m.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Puts the port mapping into `reach`: its words, and its address as the
/// one to dial while no router has said anything (a router's dial-back
/// confirms it, see [`hold_reservations`]).
pub async fn follow_mapping(mut mapping: Mapping, reach: watch::Sender<Reach>) {
    let mut last: Option<std::net::SocketAddrV4> = None;
    loop {
        let m = mapping.borrow_and_update().clone();
        reach.send_modify(|r| {
            r.port_mapping = match (m.external, m.protocol) {
                (Some(a), Some(p)) => format!("{p}: {a}"),
                _ => m.why_not.clone(),
            };
            let was = last.map(|a| a.to_string());
            match m.external {
                Some(a) if r.address.is_none() || r.address == was => {
                    r.address = Some(a.to_string());
                    if r.routers.is_empty() {
                        r.reachability = format!(
                            "mapped by the home router ({}) at {a}; no router has dialed it back yet",
                            m.protocol.unwrap_or("?")
                        );
                    }
                }
                None if was.is_some() && r.address == was => r.address = None,
                _ => {}
            }
        });
        last = m.external;
        if mapping.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// How long a supplier a router could reach goes before it asks again.
const RECHECK: Duration = Duration::from_secs(600);

/// The longest wait between attempts to link to a router again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// For each router: links with a reservation and asks for a dial-back.
/// When the router reaches the supplier from a fresh port, strangers can:
/// unless `supplier.advertise` is set (`configured`), the link is let go
/// (no reservation is needed), the offer gets the address the router
/// sees, and the question is asked again after [`RECHECK`]. Otherwise the reservation is held and
/// the offer names the router, until the link ends; then it links again
/// (2 s, doubling to 60 s). `reach` says what holds now.
pub async fn hold_reservations(
    endpoint: Endpoint,
    routers: Vec<(NodeId, SocketAddr)>,
    reach: watch::Sender<Reach>,
    configured: bool,
    mapping: Mapping,
) {
    hold(endpoint, routers, reach, configured, None, mapping).await;
    // Configured routers are held for as long as the daemon runs.
    std::future::pending::<()>().await;
}

/// Routers found in the DHT are let go after this many failed links in a
/// row, and others are looked for.
const GIVE_UP_AFTER: u32 = 3;
/// A link that ends sooner than this counts as a failed one.
const MIN_LINK_LIFE: Duration = Duration::from_secs(30);
/// Routers held at once when they are found in the DHT.
const AUTO_ROUTERS: usize = 2;

/// For a supplier whose config names neither `advertise` nor `routers`:
/// finds routers in the DHT (records of kind `router`, through the local
/// dht-peer at `dht_socket`), and holds up to two as
/// [`hold_reservations`] does; a router that fails three links in a row is
/// replaced by another found anew.
pub async fn find_and_hold(
    endpoint: Endpoint,
    dht_socket: std::path::PathBuf,
    reach: watch::Sender<Reach>,
    mapping: Mapping,
) {
    let held = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..AUTO_ROUTERS {
        set.spawn(hold_one_found(
            endpoint.clone(),
            dht_socket.clone(),
            reach.clone(),
            held.clone(),
            mapping.clone(),
        ));
    }
    while set.join_next().await.is_some() {}
    std::future::pending::<()>().await;
}

/// One of [`find_and_hold`]'s slots: a router found in the DHT that no
/// other slot holds, held until it is let go, then another.
async fn hold_one_found(
    endpoint: Endpoint,
    dht_socket: std::path::PathBuf,
    reach: watch::Sender<Reach>,
    held: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<NodeId>>>,
    mapping: Mapping,
) {
    let mut warned = false;
    // Soon after a start the DHT may not know a router yet: look again
    // after 2 s, doubling to 30 s.
    let mut wait = Duration::from_secs(2);
    loop {
        let lock = |h: &std::sync::Mutex<std::collections::HashSet<NodeId>>| {
            h.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        };
        match find_routers(&dht_socket).await {
            Ok(found) => {
                let taken = lock(&held);
                let pick = found.into_iter().find(|r| !taken.contains(&r.0));
                if let Some(router) = pick
                    && held
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(router.0)
                {
                    warned = false;
                    wait = Duration::from_secs(2);
                    tracing::info!(router = %format!("{}@{}", router.0, router.1), "found a router in the DHT");
                    hold(
                        endpoint.clone(),
                        vec![router],
                        reach.clone(),
                        false,
                        Some(GIVE_UP_AFTER),
                        mapping.clone(),
                    )
                    .await;
                    held.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&router.0);
                    continue;
                }
                // Said once the first few quick looks found nothing.
                let patient = wait >= Duration::from_secs(16);
                if !warned && patient && lock(&held).is_empty() {
                    tracing::warn!(
                        "no router found in the DHT yet: customers cannot reach this supplier unless it is public; set supplier.advertise or supplier.routers, or wait (looking every 30 s)"
                    );
                    warned = true;
                }
            }
            Err(e) => {
                if !warned && wait >= Duration::from_secs(16) {
                    tracing::warn!(
                        "cannot look for routers in the DHT yet (retrying every 30 s): {e}"
                    );
                    warned = true;
                }
            }
        }
        reach.send_modify(|r| {
            if r.routers.is_empty() && r.reachability.is_empty() {
                r.reachability = "unknown: no router to ask found in the DHT yet".into();
            }
        });
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// Routers advertised in the DHT that take reservations, shuffled.
async fn find_routers(dht_socket: &std::path::Path) -> Result<Vec<(NodeId, SocketAddr)>, String> {
    use bitdust_proto::dht::v1 as dpb;
    use bitdust_proto::router::v1 as rpb;
    use prost::Message;
    use rand::seq::SliceRandom;
    let ch = bitdust_daemon::connect(dht_socket).await.map_err(|e| {
        format!(
            "the dht-peer at {} does not answer: {e}",
            dht_socket.display()
        )
    })?;
    let r = dpb::dht_client::DhtClient::new(ch)
        .random_nodes(dpb::RandomNodesRequest {
            count: 20,
            kind: "router".into(),
        })
        .await
        .map_err(|e| e.message().to_owned())?
        .into_inner();
    let now = bitdust_dht::record::now();
    let mut out: Vec<(NodeId, SocketAddr)> = r
        .records
        .into_iter()
        .filter_map(|p| {
            let rec = bitdust_dht::Record::from_proto(p).ok()?;
            rec.verify(now).ok()?;
            if rec.kind != "router" {
                return None;
            }
            let offer = rpb::RouterOffer::decode(rec.payload.as_slice()).ok()?;
            let router =
                bitdust_net::relay::parse_router(&format!("{}@{}", rec.owner, offer.address))
                    .ok()?;
            offer.accepting.then_some(router)
        })
        .collect();
    out.sort();
    out.dedup();
    out.shuffle(&mut rand::rng());
    Ok(out)
}

/// Holds `routers` (see [`hold_reservations`]); with `give_up`, a router
/// that fails that many links in a row is let go, and this returns when
/// every router is let go.
async fn hold(
    endpoint: Endpoint,
    routers: Vec<(NodeId, SocketAddr)>,
    reach: watch::Sender<Reach>,
    configured: bool,
    give_up: Option<u32>,
    mapping: Mapping,
) {
    let mut set = tokio::task::JoinSet::new();
    for (id, addr) in routers {
        let (endpoint, reach) = (endpoint.clone(), reach.clone());
        let mut mapping = mapping.clone();
        set.spawn(async move {
            let contact = format!("{id}@{addr}");
            let mut backoff = Duration::from_secs(2);
            let port = endpoint.local_addr().map(|a| a.port()).unwrap_or(0);
            let mut failed = 0u32;
            loop {
                if give_up.is_some_and(|n| failed >= n) {
                    tracing::warn!(router = %contact, failed, "letting the router go after failed links in a row");
                    return;
                }
                // With a port mapping, the router dials its port back.
                let (was, mapped) = {
                    let m = mapping.borrow_and_update();
                    (m.external, m.external.zip(m.protocol).map(|(a, p)| (a.port(), p)))
                };
                let dial_back = mapped.map_or(0, |(p, _)| p);
                match endpoint.link_router_checked(addr, id, true, Some(dial_back)).await {
                    Ok(link) => {
                        backoff = Duration::from_secs(2);
                        let reachable = link.reachable == Some(true);
                        let words = match link.reachable {
                            Some(r) => describe(
                                link.observed.as_slice(),
                                r,
                                local_towards(addr, port),
                                mapped,
                            ),
                            None => format!(
                                "unknown: router {contact} could not dial back now; holding a reservation on it"
                            ),
                        };
                        tracing::info!(router = %contact, observed = ?link.observed, reachable, "{words}");
                        // With `advertise` set, the router's view says
                        // nothing of the configured address: the
                        // reservation is held all the same.
                        let dialed = link.observed.map(|o| match mapped {
                            Some((p, _)) => SocketAddr::new(o.ip(), p),
                            None => o,
                        });
                        if reachable && !configured {
                            failed = 0;
                            link.close();
                            reach.send_modify(|r| {
                                r.routers.retain(|c| *c != contact);
                                r.address = dialed.map(|o| o.to_string());
                                r.reachability = words;
                            });
                            // Asked again later, or at once when the
                            // mapping changes.
                            tokio::select! {
                                _ = tokio::time::sleep(RECHECK) => {}
                                _ = mapping_changed(&mut mapping, was) => {}
                            }
                            continue;
                        }
                        reach.send_modify(|r| {
                            if !r.routers.contains(&contact) {
                                r.routers.push(contact.clone());
                            }
                            if !configured {
                                r.address = link.observed.map(|o| o.to_string());
                            }
                            r.reachability = words;
                        });
                        let up = std::time::Instant::now();
                        let why = tokio::select! {
                            why = link.closed() => why,
                            _ = mapping_changed(&mut mapping, was) => {
                                // A new mapping is worth a dial-back: it
                                // may make the reservation unneeded.
                                link.close();
                                reach.send_modify(|r| r.routers.retain(|c| *c != contact));
                                tracing::info!(router = %contact, "the port mapping changed; asking the router to dial back again");
                                continue;
                            }
                        };
                        // A router that takes the link and soon drops it
                        // fails as much as one that refuses.
                        if up.elapsed() < MIN_LINK_LIFE {
                            failed += 1;
                        } else {
                            failed = 0;
                        }
                        reach.send_modify(|r| r.routers.retain(|c| *c != contact));
                        tracing::warn!(router = %contact, "the reservation on the router ended ({why}); linking again");
                    }
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(router = %contact, "cannot hold a reservation on the router: {e}; trying again in {} s", backoff.as_secs());
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }
    while set.join_next().await.is_some() {}
}
