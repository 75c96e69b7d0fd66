//! The rebuilder's reads leave a supplier whose fragment came late out
//! until it answers a ping, however long that takes, and ask it again as
//! soon as it does (issue 19: "a supplier seen dead is not asked again
//! unless it comes back; the rebuilder reads the same way"). A real QUIC
//! peer answers the pings; it goes away and comes back at its address.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitdust_crypto::{Identity, NodeId};
use bitdust_customer::client::SupplierLink;
use bitdust_customer::netio::Wary;
use bitdust_net::{Endpoint, frame};
use bitdust_proto::peer::v1 as pb;

/// A peer that answers every request with a pong, at `addr`.
async fn pong_peer(identity: &Identity, addr: SocketAddr) -> Endpoint {
    // The address may still be held for a moment by the peer before.
    let deadline = Instant::now() + Duration::from_secs(10);
    let endpoint = loop {
        match Endpoint::bind(identity, addr, bitdust_supplier::peer::ALPN, true) {
            Ok(e) => break e,
            Err(e) if Instant::now() < deadline => {
                eprintln!("binding {addr} again: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    };
    let serving = endpoint.clone();
    tokio::spawn(async move {
        while let Some((conn, _)) = serving.accept().await {
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let _ = frame::read_frame::<pb::Request>(&mut recv, 1 << 16).await;
                    let pong = pb::Response {
                        kind: Some(pb::response::Kind::Pong(pb::Pong::default())),
                    };
                    let _ = frame::write_frame(&mut send, &pong).await;
                    let _ = send.finish();
                }
            });
        }
    });
    endpoint
}

/// A link from a fresh node to supplier `id` at `addr`.
fn link_to(id: NodeId, addr: SocketAddr) -> Arc<SupplierLink> {
    let me = Endpoint::bind(
        &Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        bitdust_supplier::peer::ALPN,
        false,
    )
    .unwrap();
    Arc::new(SupplierLink::new(
        me,
        id,
        addr.to_string(),
        Duration::from_secs(2),
    ))
}

async fn within(what: &str, limit: Duration, ok: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_supplier_is_left_out_until_it_answers_a_ping_however_long_that_takes() {
    let sup = Identity::generate();
    let id = sup.node_id();
    let peer = pong_peer(&sup, "127.0.0.1:0".parse().unwrap()).await;
    let addr = peer.local_addr().unwrap();
    let link = link_to(id, addr);
    let wary = Wary::new();
    assert!(!wary.left_out(&id));

    // Late while it answers pings: asked again after a ping or two.
    wary.late(&link);
    assert!(wary.left_out(&id));
    let took = within(
        "an answering supplier asked again",
        Duration::from_secs(5),
        || !wary.left_out(&id),
    )
    .await;
    eprintln!("an answering supplier was asked again after {took:?}");

    // Late and gone: left out past the 10 s the rebuilder used to give a
    // late supplier before asking it again.
    peer.shutdown().await;
    drop(peer);
    wary.late(&link);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        wary.left_out(&id),
        "a supplier that is down was asked again"
    );

    // Back at its address: asked again within a few pings.
    let _peer = pong_peer(&sup, addr).await;
    let took = within(
        "a supplier back asked again",
        Duration::from_secs(10),
        || !wary.left_out(&id),
    )
    .await;
    eprintln!("a supplier back was asked again after {took:?}");

    // A fragment that arrives asks it again at once.
    wary.late(&link);
    wary.saw(&id, Duration::from_millis(3));
    assert!(!wary.left_out(&id));
    assert_eq!(wary.read_around(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_supplier_is_pinged_no_more_and_its_link_let_go() {
    let sup = Identity::generate();
    let id = sup.node_id();
    // A supplier that is gone: nothing answers at its address.
    let peer = pong_peer(&sup, "127.0.0.1:0".parse().unwrap()).await;
    let addr = peer.local_addr().unwrap();
    peer.shutdown().await;
    drop(peer);
    let link = link_to(id, addr);
    let wary = Wary::new();
    wary.late(&link);
    assert!(wary.left_out(&id));
    assert_eq!(Arc::strong_count(&link), 2, "its watcher holds the link");
    // Fired: its watcher ends at once (it would have pinged for 10 min).
    wary.forget(&id);
    assert!(!wary.left_out(&id));
    within(
        "the watcher let go of the link",
        Duration::from_secs(2),
        || Arc::strong_count(&link) == 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppliers_that_hold_no_position_any_more_are_forgotten_and_the_others_kept() {
    let (fired, kept) = (Identity::generate(), Identity::generate());
    // Two suppliers that are gone, both left out.
    let mut links = Vec::new();
    for sup in [&fired, &kept] {
        let peer = pong_peer(sup, "127.0.0.1:0".parse().unwrap()).await;
        let addr = peer.local_addr().unwrap();
        peer.shutdown().await;
        drop(peer);
        links.push(link_to(sup.node_id(), addr));
    }
    let wary = Wary::new();
    for l in &links {
        wary.late(l);
    }
    // One was fired by hand: only the other still holds a position.
    wary.forget_all_but(|id| *id == kept.node_id());
    assert!(!wary.left_out(&fired.node_id()));
    assert!(wary.left_out(&kept.node_id()));
    within(
        "the fired one's watcher let go of its link",
        Duration::from_secs(2),
        || Arc::strong_count(&links[0]) == 1,
    )
    .await;
    assert_eq!(
        Arc::strong_count(&links[1]),
        2,
        "the kept one is still watched"
    );
}
