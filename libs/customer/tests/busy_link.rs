//! A request that goes unanswered closes its link's connection only when
//! the supplier was not heard on it meanwhile. A supplier that is there
//! but slow (busy, or behind a full link) keeps its connection, and the
//! other requests in flight on it are answered; a frozen one (nothing
//! comes back, not even QUIC's acknowledgements) has it closed, and the
//! next request dials afresh. A real QUIC peer plays the supplier.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bitdust_crypto::{Identity, NodeId};
use bitdust_customer::client::SupplierLink;
use bitdust_customer::netio::{PROBE_TIMEOUT, ping_once};
use bitdust_net::{Endpoint, frame};
use bitdust_proto::peer::v1 as pb;

/// How the peer answers its `n`th request (from 0).
#[derive(Clone, Copy)]
enum Answer {
    /// At once, with the response its kind asks for.
    Now,
    /// After this long.
    After(Duration),
    /// Never (the stream is held open).
    Never,
}

/// A peer serving on its own thread and runtime, answering requests as
/// `answer` says; `freeze(d)` blocks that thread for `d`, so that nothing,
/// not even an acknowledgement, comes from it meanwhile.
struct Peer {
    addr: SocketAddr,
    id: NodeId,
    freeze: tokio::sync::mpsc::UnboundedSender<(Duration, std::sync::mpsc::Sender<()>)>,
}

fn peer(answer: fn(usize) -> Answer) -> Peer {
    let identity = Identity::generate();
    let id = identity.node_id();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (freeze, mut frozen) =
        tokio::sync::mpsc::unbounded_channel::<(Duration, std::sync::mpsc::Sender<()>)>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let endpoint = Endpoint::bind(
                &identity,
                "127.0.0.1:0".parse().unwrap(),
                bitdust_supplier::peer::ALPN,
                true,
            )
            .unwrap();
            addr_tx.send(endpoint.local_addr().unwrap()).unwrap();
            let count = Arc::new(AtomicUsize::new(0));
            let serving = endpoint.clone();
            tokio::spawn(async move {
                while let Some((conn, _)) = serving.accept().await {
                    let count = count.clone();
                    tokio::spawn(async move {
                        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                            let n = count.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(async move {
                                let Ok(req) =
                                    frame::read_frame::<pb::Request>(&mut recv, 1 << 16).await
                                else {
                                    return;
                                };
                                // Any payload is read to its end.
                                let _ = recv.read_to_end(64 << 20).await;
                                match answer(n) {
                                    Answer::Now => {}
                                    Answer::After(d) => tokio::time::sleep(d).await,
                                    Answer::Never => {
                                        std::future::pending::<()>().await;
                                    }
                                }
                                let kind = match req.kind {
                                    Some(pb::request::Kind::Put(_)) => {
                                        pb::response::Kind::PutDone(pb::PutDone::default())
                                    }
                                    _ => pb::response::Kind::Pong(pb::Pong::default()),
                                };
                                let _ = frame::write_frame(
                                    &mut send,
                                    &pb::Response { kind: Some(kind) },
                                )
                                .await;
                                let _ = send.finish();
                                // Held until the answer is read.
                                let _ = send.stopped().await;
                            });
                        }
                    });
                }
            });
            while let Some((d, now)) = frozen.recv().await {
                let _ = now.send(());
                std::thread::sleep(d);
            }
            drop(endpoint);
        });
    });
    Peer {
        addr: addr_rx.recv().unwrap(),
        id,
        freeze,
    }
}

fn link_to(p: &Peer, timeout: Duration) -> Arc<SupplierLink> {
    let me = Endpoint::bind(
        &Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        bitdust_supplier::peer::ALPN,
        false,
    )
    .unwrap();
    Arc::new(SupplierLink::new(me, p.id, p.addr.to_string(), timeout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_ping_keeps_the_connection_of_a_supplier_that_is_there() {
    // The first request is answered after 5 s, every later one never.
    let p = peer(|n| {
        if n == 0 {
            Answer::After(Duration::from_secs(5))
        } else {
            Answer::Never
        }
    });
    let link = link_to(&p, Duration::from_secs(10));
    let started = Instant::now();
    let slow = tokio::spawn({
        let link = link.clone();
        async move { link.ping().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = link.heard().await;
    assert!(before.is_some(), "the slow request's connection is open");
    // The probe goes unanswered...
    let e = ping_once(&link).await.unwrap_err();
    assert!(e.to_string().contains("did not answer a ping"), "{e}");
    assert!(started.elapsed() >= PROBE_TIMEOUT);
    // ...but the supplier acknowledged it: the connection is kept, and
    // the request in flight on it is answered.
    let after = link.heard().await;
    assert!(
        after.is_some(),
        "the connection of a supplier heard from was closed"
    );
    let r = slow.await.unwrap();
    assert!(
        r.is_ok(),
        "the request in flight was lost with its connection: {r:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timing_out_keeps_the_connection_other_requests_are_answered_on() {
    // A put answered after 3 s (its 4 MiB give it 4 s more than the
    // link's 2 s); the ping after it never.
    let p = peer(|n| {
        if n == 0 {
            Answer::After(Duration::from_secs(3))
        } else {
            Answer::Never
        }
    });
    let link = link_to(&p, Duration::from_secs(2));
    let put = tokio::spawn({
        let link = link.clone();
        async move {
            link.put_parts("a", vec![bytes::Bytes::from(vec![7u8; 4 << 20])])
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = link.ping().await.unwrap_err();
    assert!(e.to_string().contains("did not answer within"), "{e}");
    let r = put.await.unwrap();
    assert!(
        r.is_ok(),
        "the put in flight was lost with its connection: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_supplier_s_connection_is_closed_and_dialed_afresh() {
    let p = peer(|_| Answer::Now);
    let link = link_to(&p, Duration::from_secs(10));
    ping_once(&link).await.unwrap();
    let first = link.heard().await.unwrap();
    // Frozen for longer than a probe waits: nothing comes back.
    let (now, frozen) = std::sync::mpsc::channel();
    p.freeze
        .send((PROBE_TIMEOUT + Duration::from_secs(4), now))
        .unwrap();
    tokio::task::spawn_blocking(move || frozen.recv().unwrap())
        .await
        .unwrap();
    // What the peer sent before it froze (a delayed acknowledgement, say)
    // may still be on its way in a loaded machine: the ping's mark is
    // taken only once the count of frames heard has stood still.
    let mut before = link.heard().await.unwrap().frames();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = link.heard().await.unwrap().frames();
        if now == before {
            break;
        }
        before = now;
    }
    let e = ping_once(&link).await.unwrap_err();
    assert!(e.to_string().contains("did not answer a ping"), "{e}");
    assert!(
        link.heard().await.is_none(),
        "the connection to a supplier that sent nothing was kept"
    );
    // Thawed, it answers on a new connection.
    tokio::time::sleep(Duration::from_secs(5)).await;
    ping_once(&link).await.unwrap();
    assert!(
        !link.heard().await.unwrap().same_connection(&first),
        "a new connection"
    );
}
