//! A router on loopback, with real QUIC endpoints on both sides: relayed
//! connections are end to end (the pinned id is checked through the
//! router), reach only nodes that hold a reservation, and a flood from one
//! client costs that client, not the others.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bitdust_crypto::{Identity, NodeId};
use bitdust_dhtpeer::router::{Limits, Router, serve};
use bitdust_net::{Endpoint, relay};
use rand::RngCore;

const ALPN: &[u8] = b"bitdust/test/1";

fn limits() -> Limits {
    Limits {
        max_clients: 64,
        max_reservations: 8,
        max_clients_per_address: 32,
        max_reservations_per_address: 4,
        rate_bytes_per_sec: 64 << 20,
        burst_bytes: 8 << 20,
        max_bytes: 0,
        max_secs: 0,
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start_router(limits: Limits) -> (Arc<Router>, SocketAddr, NodeId) {
    let identity = Identity::generate();
    let ep = Endpoint::bind(&identity, loopback(), relay::ALPN, true).unwrap();
    let addr = ep.local_addr().unwrap();
    let router = Router::new(limits, &identity);
    tokio::spawn(serve(ep, router.clone()));
    (router, addr, identity.node_id())
}

/// A node that answers every stream with the BLAKE3 of what it read, and
/// says which address each connection came from.
fn start_echo(ep: Endpoint) -> tokio::sync::mpsc::UnboundedReceiver<SocketAddr> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((conn, _)) = ep.accept().await {
            let _ = tx.send(conn.remote_address());
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let data = recv.read_to_end(64 << 20).await.unwrap();
                    send.write_all(blake3::hash(&data).as_bytes())
                        .await
                        .unwrap();
                    send.finish().unwrap();
                }
            });
        }
    });
    rx
}

async fn hash_over(conn: &bitdust_net::Connection, data: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(data).await.unwrap();
    send.finish().unwrap();
    recv.read_to_end(64).await.unwrap()
}

#[tokio::test]
async fn a_relayed_connection_is_end_to_end_and_carries_data_bit_exact() {
    let (router, raddr, rid) = start_router(limits()).await;
    let b_id = Identity::generate();
    let b = Endpoint::bind(&b_id, loopback(), ALPN, true).unwrap();
    let link_b = b.link_router(raddr, rid, true).await.unwrap();
    assert!(link_b.reserved);
    assert_eq!(link_b.observed, Some(b.local_addr().unwrap()));
    let mut seen = start_echo(b.clone());

    let a = Endpoint::bind(&Identity::generate(), loopback(), ALPN, false).unwrap();
    assert!(a.relayed(rid, b_id.node_id()).is_none(), "no link yet");
    let _link_a = a.link_router(raddr, rid, false).await.unwrap();
    let via = a.relayed(rid, b_id.node_id()).unwrap();
    assert!(relay::is_relayed(&via));

    // Pinned to another id, the handshake through the router fails: the
    // TLS is between a and b, not a and the router.
    let wrong = a.connect(via, Some(Identity::generate().node_id())).await;
    assert!(
        wrong.is_err(),
        "a connection pinned to another id must fail"
    );

    let conn = a.connect(via, Some(b_id.node_id())).await.unwrap();
    assert_eq!(a.router_of(&conn), Some(rid));
    let mut data = vec![0u8; 8 << 20];
    rand::rng().fill_bytes(&mut data);
    let got = hash_over(&conn, &data).await;
    assert_eq!(got, blake3::hash(&data).as_bytes().to_vec());
    let from = seen.recv().await.unwrap();
    assert!(
        relay::is_relayed(&from),
        "b saw a at {from}, not a stand-in address"
    );
    assert!(router.counters.bytes.load(Ordering::Relaxed) >= 8 << 20);
    let clients = router.clients();
    assert_eq!(clients.len(), 2);
    assert_eq!(clients.iter().filter(|c| c.reserved).count(), 1);
}

#[tokio::test]
async fn a_node_without_a_reservation_cannot_be_reached_through_the_router() {
    let (router, raddr, rid) = start_router(limits()).await;
    let c_id = Identity::generate();
    let c = Endpoint::bind(&c_id, loopback(), ALPN, true).unwrap();
    let _link_c = c.link_router(raddr, rid, false).await.unwrap();
    let _seen = start_echo(c.clone());
    let a = Endpoint::bind(&Identity::generate(), loopback(), ALPN, false).unwrap();
    let _link_a = a.link_router(raddr, rid, false).await.unwrap();
    let via = a.relayed(rid, c_id.node_id()).unwrap();
    let r =
        tokio::time::timeout(Duration::from_secs(3), a.connect(via, Some(c_id.node_id()))).await;
    assert!(
        !matches!(r, Ok(Ok(_))),
        "reached a node that holds no reservation"
    );
    assert!(router.counters.dropped_unreachable.load(Ordering::Relaxed) > 0);
    assert_eq!(router.counters.packets.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn reservations_beyond_the_limit_per_address_are_refused_with_a_reason() {
    let mut l = limits();
    l.max_reservations_per_address = 2;
    let (router, raddr, rid) = start_router(l).await;
    let mut links = Vec::new();
    for _ in 0..2 {
        let ep = Endpoint::bind(&Identity::generate(), loopback(), ALPN, true).unwrap();
        links.push((ep.link_router(raddr, rid, true).await.unwrap(), ep));
    }
    let ep = Endpoint::bind(&Identity::generate(), loopback(), ALPN, true).unwrap();
    let e = ep
        .link_router(raddr, rid, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("reservations from 127.0.0.1 already"), "{e}");
    // Without a reservation the same address still gets in.
    ep.link_router(raddr, rid, false).await.unwrap();
    assert_eq!(router.counters.refused.load(Ordering::Relaxed), 1);
    // A node's second connection replaces its first: still two reservations.
    let (first, ep0) = links.remove(0);
    let again = ep0.link_router(raddr, rid, true).await.unwrap();
    assert!(again.reserved);
    tokio::time::timeout(Duration::from_secs(5), first.closed())
        .await
        .unwrap();
    assert_eq!(router.clients().iter().filter(|c| c.reserved).count(), 2);
}

#[tokio::test]
async fn a_flood_from_one_client_is_dropped_at_its_bucket_and_others_go_on() {
    let mut l = limits();
    l.rate_bytes_per_sec = 16 << 20;
    l.burst_bytes = 1 << 20;
    let (router, raddr, rid) = start_router(l).await;
    let b_id = Identity::generate();
    let b = Endpoint::bind(&b_id, loopback(), ALPN, true).unwrap();
    let _link_b = b.link_router(raddr, rid, true).await.unwrap();
    let _seen = start_echo(b.clone());

    // The flooder sends junk packets to b as fast as its link takes them.
    let f = Endpoint::bind(&Identity::generate(), loopback(), ALPN, false).unwrap();
    let flood = f.link_router(raddr, rid, false).await.unwrap();
    let target = b_id.node_id();
    let flooding = tokio::spawn(async move {
        let junk = vec![0x55u8; 1200];
        loop {
            for _ in 0..64 {
                flood.send_packet(&target, &junk);
            }
            tokio::task::yield_now().await;
        }
    });

    let a = Endpoint::bind(&Identity::generate(), loopback(), ALPN, false).unwrap();
    let _link_a = a.link_router(raddr, rid, false).await.unwrap();
    let conn = a
        .connect(
            a.relayed(rid, b_id.node_id()).unwrap(),
            Some(b_id.node_id()),
        )
        .await
        .unwrap();
    let mut data = vec![0u8; 4 << 20];
    rand::rng().fill_bytes(&mut data);
    let got = tokio::time::timeout(Duration::from_secs(60), hash_over(&conn, &data))
        .await
        .expect("a's transfer stalled behind the flood");
    assert_eq!(got, blake3::hash(&data).as_bytes().to_vec());
    flooding.abort();
    let dropped = router.counters.dropped_rate.load(Ordering::Relaxed);
    assert!(
        dropped > 1000,
        "the flooder's excess was not dropped: {dropped}"
    );
}

#[tokio::test]
async fn two_endpoints_of_one_node_each_get_their_own_answers_through_the_router() {
    // A customer-agent and its rebuilder share a node id, each with an
    // endpoint of its own, and both reach the same supplier through the
    // same router at once.
    let (router, raddr, rid) = start_router(limits()).await;
    let b_id = Identity::generate();
    let b = Endpoint::bind(&b_id, loopback(), ALPN, true).unwrap();
    let _link_b = b.link_router(raddr, rid, true).await.unwrap();
    let _seen = start_echo(b.clone());
    let shared = Identity::generate();
    let mut sides = Vec::new();
    for _ in 0..2 {
        let ep = Endpoint::bind(&shared, loopback(), ALPN, false).unwrap();
        let link = ep.link_router(raddr, rid, false).await.unwrap();
        let conn = ep
            .connect(
                ep.relayed(rid, b_id.node_id()).unwrap(),
                Some(b_id.node_id()),
            )
            .await
            .unwrap();
        sides.push((ep, link, conn));
    }
    assert_eq!(router.clients().len(), 3, "a link replaced the other");
    let mut runs = Vec::new();
    for (_, _, conn) in &sides {
        let conn = conn.clone();
        runs.push(tokio::spawn(async move {
            let mut data = vec![0u8; 2 << 20];
            rand::rng().fill_bytes(&mut data);
            let got = hash_over(&conn, &data).await;
            got == blake3::hash(&data).as_bytes().to_vec()
        }));
    }
    for r in runs {
        let ok = tokio::time::timeout(Duration::from_secs(30), r)
            .await
            .expect("a transfer stalled: answers went to the other endpoint")
            .unwrap();
        assert!(ok, "a transfer came back wrong");
    }
    for (_, link, _) in &sides {
        assert!(link.is_up());
    }
}

/// A node asks for the dial-back at another port of its IP (where its home
/// router's port mapping would point): the router dials that port, and
/// the answer says whether the node answers there.
#[tokio::test]
async fn the_dial_back_goes_to_the_port_a_node_names_on_its_own_ip() {
    let (router, raddr, rid) = start_router(limits()).await;
    let id = Identity::generate();
    // The linking endpoint takes no connection; a second endpoint of the
    // same node, at another port, stands in for a mapped port.
    let linking = Endpoint::bind(&id, loopback(), ALPN, false).unwrap();
    let mapped = Endpoint::bind(&id, loopback(), ALPN, true).unwrap();
    let mut seen = start_echo(mapped.clone());
    let port = mapped.local_addr().unwrap().port();
    let link = linking
        .link_router_checked(raddr, rid, false, Some(port))
        .await
        .unwrap();
    assert_eq!(link.reachable, Some(true));
    let from = seen.recv().await.unwrap();
    assert_ne!(from.port(), raddr.port(), "dialed from a fresh port");
    link.close();
    // Its own port, where nothing accepts: not reachable.
    let link = linking
        .link_router_checked(raddr, rid, false, Some(0))
        .await
        .unwrap();
    assert_eq!(link.reachable, Some(false));
    assert_eq!(router.counters.dial_backs.load(Ordering::Relaxed), 2);
    assert_eq!(
        router.counters.dial_backs_reached.load(Ordering::Relaxed),
        1
    );
}

/// A node reached through a router learns where the router sees the peer
/// come from (not only its stand-in address): per-address limits count by
/// that.
#[tokio::test]
async fn a_relayed_peer_is_known_by_the_address_the_router_sees() {
    let (_router, raddr, rid) = start_router(limits()).await;
    let b_id = Identity::generate();
    let b = Endpoint::bind(&b_id, loopback(), ALPN, true).unwrap();
    let _link_b = b.link_router(raddr, rid, true).await.unwrap();
    let a = Endpoint::bind(&Identity::generate(), loopback(), ALPN, false).unwrap();
    let _link_a = a.link_router(raddr, rid, false).await.unwrap();
    let via = a.relayed(rid, b_id.node_id()).unwrap();
    let accepting = tokio::spawn({
        let b = b.clone();
        async move { b.accept().await.unwrap().0 }
    });
    let conn = a.connect(via, Some(b_id.node_id())).await.unwrap();
    let at_b = accepting.await.unwrap();
    assert!(relay::is_relayed(&at_b.remote_address()));
    assert_eq!(b.source_of(&at_b), a.local_addr().unwrap());
    // And the other way: a's answers from b come with b's address.
    assert_eq!(a.source_of(&conn), b.local_addr().unwrap());
}
