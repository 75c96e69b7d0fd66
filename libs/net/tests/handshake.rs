//! Real QUIC endpoints on loopback: mutual authentication by node key.

use bitdust_crypto::Identity;
use bitdust_net::{Endpoint, frame, peer_id};
use bitdust_proto::peer::v1::{Ping, Request, Response, request, response};

const ALPN: &[u8] = b"bitdust/test/1";

fn endpoint(identity: &Identity, listen: bool) -> Endpoint {
    let addr = "127.0.0.1:0".parse().expect("an address");
    Endpoint::bind(identity, addr, ALPN, listen).expect("bind on loopback")
}

#[tokio::test]
async fn both_sides_learn_the_other_node_id_and_pins_are_enforced() {
    let server_id = Identity::generate();
    let client_id = Identity::generate();
    let server = endpoint(&server_id, true);
    let addr = server.local_addr().unwrap();
    let client = endpoint(&client_id, false);

    let accept = {
        let server = server.clone();
        tokio::spawn(async move {
            let (conn, peer) = server.accept().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let req: Request = frame::read_frame(&mut recv, frame::MAX_FRAME)
                .await
                .unwrap();
            assert!(matches!(req.kind, Some(request::Kind::Ping(_))));
            let reply = Response {
                kind: Some(response::Kind::Pong(Default::default())),
            };
            frame::write_frame(&mut send, &reply).await.unwrap();
            send.finish().unwrap();
            send.stopped().await.ok();
            peer
        })
    };

    // Pinned to the right node: works, and the client sees the server's id.
    let conn = client
        .connect(addr, Some(server_id.node_id()))
        .await
        .unwrap();
    assert_eq!(peer_id(&conn), Some(server_id.node_id()));
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let req = Request {
        kind: Some(request::Kind::Ping(Ping {})),
    };
    frame::write_frame(&mut send, &req).await.unwrap();
    send.finish().unwrap();
    let reply: Response = frame::read_frame(&mut recv, frame::MAX_FRAME)
        .await
        .unwrap();
    assert!(matches!(reply.kind, Some(response::Kind::Pong(_))));
    // The server saw the client's id from its certificate.
    assert_eq!(accept.await.unwrap(), client_id.node_id());

    // Keep accepting, as a daemon does.
    let server2 = server.clone();
    tokio::spawn(async move { while server2.accept().await.is_some() {} });

    // Pinned to another node: the handshake is refused, naming both ids.
    let other = Identity::generate().node_id();
    let err = client
        .connect(addr, Some(other))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&other.to_string()), "{err}");

    // Unpinned (trust on first use): works and tells who answered.
    let conn = client.connect(addr, None).await.unwrap();
    assert_eq!(peer_id(&conn), Some(server_id.node_id()));
}

#[tokio::test]
async fn oversized_and_malformed_frames_are_refused() {
    let server_id = Identity::generate();
    let server = endpoint(&server_id, true);
    let addr = server.local_addr().unwrap();
    let client = endpoint(&Identity::generate(), false);
    let srv = server.clone();
    let task = tokio::spawn(async move {
        let (conn, _) = srv.accept().await.unwrap();
        let mut errors = Vec::new();
        for _ in 0..2 {
            let (_send, mut recv) = conn.accept_bi().await.unwrap();
            errors.push(
                frame::read_frame::<Request>(&mut recv, frame::MAX_FRAME)
                    .await
                    .unwrap_err()
                    .to_string(),
            );
        }
        errors
    });
    let conn = client
        .connect(addr, Some(server_id.node_id()))
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    send.finish().unwrap();
    let (mut send, _recv2) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    send.finish().unwrap();
    let errors = task.await.unwrap();
    assert!(errors[0].contains("over the limit"), "{errors:?}");
    assert!(errors[1].contains("malformed"), "{errors:?}");
}
