//! The DHT for real: separate `bitdust-dht-peer` processes on loopback,
//! driven through their gRPC sockets and, for what a hostile peer would
//! send, through a raw QUIC client speaking the DHT protocol.
#![allow(clippy::unwrap_used, clippy::zombie_processes)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bitdust_crypto::{Identity, NodeId};
use bitdust_dht::Record;
use bitdust_net::{Endpoint, frame};
use bitdust_proto::dht::v1 as pb;
use bitdust_proto::dht::v1::dht_client::DhtClient;
use bitdust_tests::bin;
use prost::Message;

/// One dht-peer process; killed on drop.
struct Peer {
    dir: PathBuf,
    child: Child,
}

impl Peer {
    /// Starts a dht-peer in `root/name` with `extra` appended to its
    /// `[dht]` section, and waits for its socket.
    async fn start(root: &Path, name: &str, extra: &str) -> Peer {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("bitdust.toml");
        if !cfg.exists() {
            std::fs::write(
                &cfg,
                format!(
                    "run_dir = {:?}\nstate_dir = {:?}\n[dht]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
                    dir.join("run"),
                    dir.join("state")
                ),
            )
            .unwrap();
        }
        Peer::spawn(dir).await
    }

    async fn spawn(dir: PathBuf) -> Peer {
        let child = Command::new(bin("bitdust-dht-peer"))
            .arg("--config")
            .arg(dir.join("bitdust.toml"))
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut p = Peer { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = p.child.try_wait() {
                panic!("bitdust-dht-peer exited early: {s}");
            }
            if p.try_status().await.is_some() {
                return p;
            }
            assert!(Instant::now() < deadline, "the dht-peer did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run/dht.sock")
    }

    async fn client(&self) -> DhtClient<tonic::transport::Channel> {
        DhtClient::new(bitdust_daemon::connect(&self.socket()).await.unwrap())
    }

    async fn try_status(&self) -> Option<pb::StatusResponse> {
        let ch = bitdust_daemon::connect(&self.socket()).await.ok()?;
        let s = DhtClient::new(ch).status(pb::StatusRequest {}).await.ok()?;
        Some(s.into_inner())
    }

    async fn status(&self) -> pb::StatusResponse {
        self.try_status().await.expect("the dht-peer answers")
    }

    async fn id(&self) -> NodeId {
        self.status().await.node_id.parse().unwrap()
    }

    /// `host:port` of its QUIC endpoint.
    async fn address(&self) -> String {
        self.status().await.address
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// kill -9, then start again on the same config and state.
    async fn restart_after_kill9(mut self) -> Peer {
        self.kill9();
        let dir = self.dir.clone();
        Peer::spawn(dir).await
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dht_peers_find_nodes_and_records_over_quic_and_keep_them_across_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = Peer::start(tmp.path(), "seed", "").await;
    let boot = format!("bootstrap = [{:?}]", seed.address().await);
    let mut peers = vec![seed];
    for i in 1..7 {
        peers.push(Peer::start(tmp.path(), &format!("p{i}"), &boot).await);
    }
    for p in &peers {
        wait_for("every node to know the 6 others", async || {
            p.status().await.routing_table_size >= 6
        })
        .await;
    }

    // A record put on one node is found from another.
    let put = peers[3]
        .client()
        .await
        .put_record(pb::PutRecordRequest {
            record: Some(pb::put_record_request::Record::Unsigned(
                pb::UnsignedRecord {
                    kind: "test".into(),
                    payload: b"hello".to_vec(),
                    lifetime_secs: 600,
                },
            )),
            keep_published: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(put.stored_on, 7, "{put:?}");
    assert!(put.first_refusal.is_empty(), "{put:?}");
    let owner = peers[3].id().await;
    let got = peers[6]
        .client()
        .await
        .get_record(pb::GetRecordRequest {
            owner: owner.to_string(),
            kind: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    let rec = got.record.unwrap();
    assert_eq!(
        (rec.payload.as_slice(), rec.owner.as_slice()),
        (&b"hello"[..], &owner.as_bytes()[..])
    );
    // An absent record is not found, and that is not an error.
    let none = peers[6]
        .client()
        .await
        .get_record(pb::GetRecordRequest {
            owner: owner.to_string(),
            kind: "nothing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!none.found && none.record.is_none());

    // A lookup of a node's id finds that node first.
    let target = peers[5].id().await;
    let found = peers[1]
        .client()
        .await
        .find_node(pb::FindNodeRequest {
            node_id: target.to_string(),
            key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.nodes[0].node_id, target.to_string());
    assert_eq!(found.nodes[0].address, peers[5].address().await);

    // Random nodes, and records of a kind sampled near a random point.
    let random = peers[2]
        .client()
        .await
        .random_nodes(pb::RandomNodesRequest {
            count: 4,
            kind: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(random.nodes.len(), 4);
    assert_eq!(random.records.len(), 1);
    assert_eq!(random.records[0].payload, b"hello");

    // Bad requests get clear errors and the node keeps serving.
    let mut c = peers[2].client().await;
    let e = c
        .get_record(pb::GetRecordRequest {
            owner: "nobody".into(),
            kind: "test".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("is not a node id"), "{e}");
    let e = c
        .put_record(pb::PutRecordRequest {
            record: Some(pb::put_record_request::Record::Unsigned(
                pb::UnsignedRecord {
                    kind: "big".into(),
                    payload: vec![0; 9000],
                    lifetime_secs: 0,
                },
            )),
            keep_published: false,
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("over the limit"), "{e}");
    let mut forged = rec.clone();
    forged.payload = b"forged".to_vec();
    let e = c
        .put_record(pb::PutRecordRequest {
            record: Some(pb::put_record_request::Record::Signed(forged)),
            keep_published: false,
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("signature"), "{e}");
    assert_eq!(peers[2].status().await.routing_table_size, 6);

    // kill -9: a node comes back with its routing table and the records it
    // held, and the publisher with the records it keeps publishing; a node
    // restarted with no bootstrap seed still finds the others.
    // (The routing table is saved within a second of a change.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p4 = peers.remove(4);
    let dir4 = p4.dir.clone();
    drop(p4);
    std::fs::write(
        dir4.join("bitdust.toml"),
        format!(
            "run_dir = {:?}\nstate_dir = {:?}\n[dht]\nlisten = \"127.0.0.1:0\"\n",
            dir4.join("run"),
            dir4.join("state")
        ),
    )
    .unwrap();
    let p4 = Peer::spawn(dir4).await;
    let st = p4.status().await;
    assert!(st.routing_table_size >= 6, "{st:?}");
    assert_eq!(st.records_stored, 1, "{st:?}");
    let found = p4
        .client()
        .await
        .find_node(pb::FindNodeRequest {
            node_id: target.to_string(),
            key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.nodes[0].node_id, target.to_string());
    let p3 = peers.remove(3).restart_after_kill9().await;
    let st = p3.status().await;
    assert_eq!((st.records_published, st.records_stored), (1, 1), "{st:?}");
}

/// A raw DHT client over QUIC, as any node on the network could be.
struct Raw {
    endpoint: Endpoint,
    conn: bitdust_net::Connection,
}

impl Raw {
    async fn connect(identity: &Identity, peer: &Peer) -> Raw {
        let endpoint = Endpoint::bind(
            identity,
            "127.0.0.1:0".parse().unwrap(),
            bitdust_dht::ALPN,
            false,
        )
        .unwrap();
        let addr = peer.address().await.parse().unwrap();
        let conn = endpoint.connect(addr, Some(peer.id().await)).await.unwrap();
        Raw { endpoint, conn }
    }

    async fn send_bytes(&self, bytes: &[u8]) -> pb::Response {
        let (mut send, mut recv) = self.conn.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        send.finish().unwrap();
        frame::read_frame(&mut recv, 1 << 20).await.unwrap()
    }

    async fn call(&self, kind: pb::request::Kind) -> pb::Response {
        let body = pb::Request {
            from_address: String::new(),
            kind: Some(kind),
        }
        .encode_to_vec();
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        self.send_bytes(&bytes).await
    }

    async fn store(&self, r: pb::Record) -> pb::Response {
        self.call(pb::request::Kind::Store(pb::Store { record: Some(r) }))
            .await
    }

    async fn ping(&self) {
        let r = self.call(pb::request::Kind::Ping(pb::Ping {})).await;
        assert!(matches!(r.kind, Some(pb::response::Kind::Pong(_))), "{r:?}");
    }
}

fn code(r: &pb::Response) -> Option<pb::ErrorCode> {
    match &r.kind {
        Some(pb::response::Kind::Error(e)) => Some(e.code()),
        _ => None,
    }
}

fn stored(r: &pb::Response) -> bool {
    matches!(r.kind, Some(pb::response::Kind::Stored(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dht_peer_refuses_bad_stale_oversize_and_flooded_records_and_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let peer = Peer::start(tmp.path(), "target", "store_burst = 20").await;
    let me = Identity::generate();
    let raw = Raw::connect(&me, &peer).await;
    raw.ping().await;

    // A bad signature.
    let mut forged = Record::sign(&me, "supplier", 5, 600, b"offer".to_vec()).to_proto();
    forged.payload = b"other".to_vec();
    let r = raw.store(forged).await;
    assert_eq!(code(&r), Some(pb::ErrorCode::BadRecord), "{r:?}");
    // A newer sequence is taken; an older one is stale.
    let r5 = Record::sign(&me, "supplier", 5, 600, b"offer".to_vec()).to_proto();
    assert!(stored(&raw.store(r5.clone()).await));
    let r4 = Record::sign(&me, "supplier", 4, 600, b"old".to_vec()).to_proto();
    let r = raw.store(r4).await;
    assert_eq!(code(&r), Some(pb::ErrorCode::Stale), "{r:?}");
    // An oversize payload, validly signed.
    let big = Record::sign(&me, "big", 1, 600, vec![7; 9 * 1024]).to_proto();
    let r = raw.store(big).await;
    assert_eq!(code(&r), Some(pb::ErrorCode::BadRecord), "{r:?}");
    // Expired, and expiring too far ahead.
    let long = Record::sign(&me, "long", 1, 100 * 24 * 3600, vec![]).to_proto();
    assert_eq!(code(&raw.store(long).await), Some(pb::ErrorCode::BadRecord));
    // A frame over the limit, and bytes that are no message.
    let r = raw.send_bytes(&(1u32 << 20).to_be_bytes()).await;
    assert_eq!(code(&r), Some(pb::ErrorCode::BadRequest), "{r:?}");
    let r = raw.send_bytes(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    assert_eq!(code(&r), Some(pb::ErrorCode::BadRequest), "{r:?}");
    raw.ping().await;

    // A flood: the burst (20, of which 7 are spent above) is taken, then
    // the peer is rate limited.
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..60 {
        let r = raw.store(r5.clone()).await;
        if stored(&r) {
            ok += 1;
        } else if code(&r) == Some(pb::ErrorCode::RateLimited) {
            limited += 1;
        } else {
            panic!("unexpected answer {r:?}");
        }
    }
    assert!((13..=16).contains(&ok), "{ok} taken");
    assert_eq!(ok + limited, 60);
    // Another peer is not affected, and the node keeps serving.
    let other = Identity::generate();
    let raw2 = Raw::connect(&other, &peer).await;
    let r = Record::sign(&other, "supplier", 1, 600, b"x".to_vec()).to_proto();
    assert!(stored(&raw2.store(r).await));
    raw.ping().await;
    let st = peer.status().await;
    assert_eq!(st.records_stored, 2, "{st:?}");
    raw.endpoint.shutdown().await;
    raw2.endpoint.shutdown().await;
}

/// dnsmasq on a loopback port, serving the names of the test's seeds.
struct Dns(Child);

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq(port: u16, args: &[String]) -> Dns {
    let exe = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("this test needs a real DNS server: apt-get install dnsmasq-base");
    let child = Command::new(exe)
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--pid-file=",
            "--log-facility=-",
        ])
        .arg(format!("--port={port}"))
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Dns(child)
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dht_peers_bootstrap_through_a_real_dns_server_by_srv_and_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = Peer::start(tmp.path(), "seed", "").await;
    let seed_port = seed.address().await.rsplit_once(':').unwrap().1.to_owned();
    let port = free_udp_port();
    let _dns = dnsmasq(
        port,
        &[
            "--host-record=seed.bitdust.test,127.0.0.1".into(),
            format!("--srv-host=_bitdust-dht._udp.bitdust.test,seed.bitdust.test,{seed_port}"),
        ],
    );
    let resolver = format!("resolver = \"127.0.0.1:{port}\"");
    // By SRV: a domain name without a port.
    let by_srv = Peer::start(
        tmp.path(),
        "by-srv",
        &format!("bootstrap = [\"bitdust.test\"]\n{resolver}"),
    )
    .await;
    // By A record: host:port.
    let by_name = Peer::start(
        tmp.path(),
        "by-name",
        &format!("bootstrap = [\"seed.bitdust.test:{seed_port}\"]\n{resolver}"),
    )
    .await;
    let seed_id = seed.id().await.to_string();
    for p in [&by_srv, &by_name] {
        wait_for("the node to join through DNS", async || {
            p.status().await.routing_table_size >= 2
        })
        .await;
        let f = p
            .client()
            .await
            .find_node(pb::FindNodeRequest {
                node_id: seed_id.clone(),
                key: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(f.nodes[0].node_id, seed_id);
    }
    // A name DNS does not know leaves the node serving alone, and it says why.
    let lost = Peer::start(
        tmp.path(),
        "lost",
        &format!("bootstrap = [\"nowhere.bitdust.test\"]\n{resolver}"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lost.status().await.routing_table_size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_go_silent_mid_handshake_do_not_stall_a_dht_peer() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "peer", "").await;
    let target = peer.address().await.parse().unwrap();
    let _silent = bitdust_tests::silent_client_hellos(
        target,
        "127.0.0.2".parse().unwrap(),
        bitdust_dht::ALPN,
        40,
    )
    .await;
    // A node that dials now is answered within a 10 s budget; a handshake
    // queued behind 40 silent ones would wait for each of them to time out
    // (30 s idle each).
    let raw = tokio::time::timeout(
        Duration::from_secs(10),
        Raw::connect(&Identity::generate(), &peer),
    )
    .await
    .expect("the dht-peer completed a handshake while 40 others hang");
    raw.ping().await;
}

/// Why `conn` was closed within 5 s (panics if it was kept).
async fn closed_why(conn: &bitdust_net::Connection, what: &str) -> String {
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap_or_else(|_| panic!("{what} was kept"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dht_peer_caps_connections_per_address_and_closes_its_oldest_for_newcomers() {
    use bitdust_dhtpeer::quic::{MAX_SERVED, MAX_SERVED_PER_ADDRESS};
    let root = tempfile::tempdir().unwrap();
    let peer = Peer::start(root.path(), "seed", "").await;
    let addr: std::net::SocketAddr = peer.address().await.parse().unwrap();
    let id = peer.id().await;
    let from = |host: u8| {
        Endpoint::bind(
            &Identity::generate(),
            format!("127.0.0.{host}:0").parse().unwrap(),
            bitdust_dht::ALPN,
            false,
        )
        .unwrap()
    };
    let dial = |ep: Endpoint| async move {
        let mut conns = Vec::new();
        for _ in 0..MAX_SERVED_PER_ADDRESS {
            conns.push(ep.connect(addr, Some(id)).await.unwrap());
        }
        conns
    };
    // One address holds its share; one more from it is served in the
    // place of that address's oldest...
    let one = from(1);
    let mut held = dial(one.clone()).await;
    let first = held.remove(0);
    held.push(one.connect(addr, Some(id)).await.unwrap());
    let why = closed_why(&first, "the oldest connection past the per-address cap").await;
    assert!(why.contains("from your address"), "{why}");
    // ...the others fill every place, and all are kept...
    let hosts = MAX_SERVED / MAX_SERVED_PER_ADDRESS;
    for host in 2..=hosts {
        held.extend(dial(from(host as u8)).await);
    }
    assert_eq!(held.len(), MAX_SERVED);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(held.iter().all(|c| c.close_reason().is_none()));
    // ...and a newcomer from another address is served in the place of
    // one of them (the oldest of an address holding the most: here all
    // hold as many).
    let newcomer = from(hosts as u8 + 1).connect(addr, Some(id)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let closed = loop {
        let closed: Vec<_> = held.iter().filter_map(|c| c.close_reason()).collect();
        if !closed.is_empty() || Instant::now() > deadline {
            break closed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed_now = held.iter().filter(|c| c.close_reason().is_some()).count();
    assert_eq!(closed_now, 1, "one connection makes room for the newcomer");
    assert!(
        closed[0]
            .to_string()
            .contains("as many connections as it can"),
        "{}",
        closed[0]
    );
    assert!(newcomer.close_reason().is_none(), "the newcomer was closed");
    // The peer still answers over QUIC on the newcomer's connection.
    let (mut send, mut recv) = newcomer.open_bi().await.unwrap();
    frame::write_frame(
        &mut send,
        &pb::Request {
            kind: Some(pb::request::Kind::Ping(pb::Ping::default())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    send.finish().unwrap();
    let answer: pb::Response = frame::read_frame(&mut recv, 1 << 16).await.unwrap();
    assert!(answer.kind.is_some());
}
