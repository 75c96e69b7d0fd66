//! Whether strangers reach this dht-peer (docs/nat.md). A dht-peer whose
//! config gives no address to be reached at (no `advertise`, and `listen`
//! on an unspecified IP) only asks at first: its requests name no address,
//! so no peer puts it in a routing table. It pings a few peers, which say
//! where its packets come from, and asks another peer to dial it back
//! from a fresh socket at that IP and its port (a port mapping's, when its
//! home router keeps one). Reached, it gives that address in its requests
//! from then on; not reached, it goes on only asking. It asks again every
//! 10 minutes, and at once when its port mapping changes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bitdust_dht::Contact;
use bitdust_net::portmap;
use bitdust_net::reachability::{describe, local_towards};
use rand::seq::SliceRandom;
use tokio::sync::watch;

use crate::DhtPeer;

/// What the dht-peer knows of its reachability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// In words (empty when its address is configured).
    pub reachability: String,
    /// The port mapping the home router keeps, or why none (empty when
    /// none is asked for).
    pub port_mapping: String,
}

/// How long a dht-peer goes before it checks again.
const RECHECK: Duration = Duration::from_secs(600);
/// Peers asked where they see this node, at most.
const ASK: usize = 3;

/// Waits for the mapping's address to change; forever when none is
/// asked for.
async fn mapping_changed(
    m: &mut watch::Receiver<portmap::State>,
    was: Option<std::net::SocketAddrV4>,
) {
    loop {
        if m.borrow_and_update().external != was {
            return;
        }
        if m.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Checks now and then whether strangers reach this node at `port` (its
/// bound port) or at its port mapping's, and sets the address it gives
/// others accordingly (see the module's note).
pub async fn keep_checking(
    peer: Arc<DhtPeer>,
    port: u16,
    mut mapping: watch::Receiver<portmap::State>,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        let (was, mapped) = {
            let m = mapping.borrow_and_update();
            (
                m.external,
                m.external.zip(m.protocol).map(|(a, p)| (a.port(), p)),
            )
        };
        peer.reach.send_modify(|r| {
            let m = mapping.borrow();
            r.port_mapping = match (m.external, m.protocol) {
                (Some(a), Some(p)) => format!("{p}: {a}"),
                _ => m.why_not.clone(),
            };
        });
        match check(&peer, port, mapped).await {
            Some((words, serving)) => {
                tracing::info!(serving = %serving, "{words}");
                let was_serving = peer.node.serving();
                peer.node.set_serving(&serving);
                peer.reach.send_modify(|r| r.reachability = words);
                if !serving.is_empty() && serving != was_serving {
                    // Let the network learn of it now, not at the next
                    // refresh.
                    peer.node.refresh().await;
                }
                retry = Duration::from_secs(1);
                tokio::select! {
                    _ = tokio::time::sleep(RECHECK) => {}
                    _ = mapping_changed(&mut mapping, was) => {}
                }
            }
            None => {
                peer.reach.send_modify(|r| {
                    if r.reachability.is_empty() || r.reachability.starts_with("unknown") {
                        r.reachability =
                            "unknown: not enough DHT peers answered yet to check".into();
                    }
                });
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = mapping_changed(&mut mapping, was) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// One check: the words, and the address to give others (empty: none).
/// `None` when too few peers answered to tell.
async fn check(peer: &DhtPeer, port: u16, mapped: Option<(u16, &str)>) -> Option<(String, String)> {
    let mut contacts: Vec<Contact> = peer.node.with_table(|t| t.iter().cloned().collect());
    contacts.shuffle(&mut rand::rng());
    // Where a few peers see this node.
    let mut asked = Vec::new();
    for c in contacts.iter().take(ASK * 2) {
        if asked.len() >= ASK {
            break;
        }
        if let Ok(Some(seen)) = peer.node.ping(c).await {
            asked.push((c.clone(), seen));
        }
    }
    let (first, seen) = asked.first().cloned()?;
    let observed: Vec<SocketAddr> = asked.iter().map(|(_, a)| *a).collect();
    let dial_port = mapped.map_or(port, |(p, _)| p);
    // Another peer than the one whose word gave the address dials back,
    // when there is one; among those that answered, then the rest.
    let others = asked
        .iter()
        .map(|(c, _)| c)
        .filter(|c| c.id != first.id)
        .chain(
            contacts
                .iter()
                .filter(|c| asked.iter().all(|(a, _)| a.id != c.id)),
        );
    let mut reachable = None;
    for c in others.take(4) {
        match peer.transport.dial_back(c, dial_port).await {
            Ok(r) => {
                reachable = Some(r);
                break;
            }
            Err(e) => tracing::debug!(peer = %c.id, "no dial-back: {e}"),
        }
    }
    if reachable.is_none() && asked.len() == 1 {
        // The only peer there is: its word and its dial-back.
        reachable = peer.transport.dial_back(&first, dial_port).await.ok();
    }
    let reachable = reachable?;
    let first_addr = bitdust_dht::routing::peer_address(&first.address);
    let local = first_addr.and_then(|a| local_towards(a, port));
    let words = describe(&observed, reachable, local, mapped);
    let serving = if reachable {
        SocketAddr::new(seen.ip(), dial_port).to_string()
    } else {
        String::new()
    };
    Some((words, serving))
}
