//! A supplier that claims huge objects cannot make a customer allocate them:
//! the buffer grows only with the bytes that really arrive. The customer
//! runs in a child process whose address space is capped (RLIMIT_AS), and
//! fetches eight objects at once that each claim 120 MiB and deliver 1 MiB;
//! allocating the claims up front would need 960 MiB and abort the child.
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;
use std::time::Duration;

use bitdust_crypto::Identity;
use bitdust_customer::client::{PeerError, SupplierLink};
use bitdust_net::{Endpoint, frame};
use bitdust_proto::peer::v1 as pb;

const CHILD: &str = "BITDUST_HOSTILE_SUPPLIER_CHILD";
const CLAIMED: u64 = 120 << 20;
const SENT: usize = 1 << 20;

/// The hostile supplier: answers every Get with a 120 MiB head, sends 1 MiB
/// and ends the stream.
async fn hostile(endpoint: Endpoint) {
    while let Some((conn, _)) = endpoint.accept().await {
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let _ = frame::read_frame::<pb::Request>(&mut recv, 1 << 20).await;
                    let head = pb::Response {
                        kind: Some(pb::response::Kind::Get(pb::GetReply {
                            size: CLAIMED,
                            blake3: vec![0; 32],
                        })),
                    };
                    let _ = frame::write_frame(&mut send, &head).await;
                    let _ = send.write_all(&vec![7u8; SENT]).await;
                    let _ = send.finish();
                    let _ = send.stopped().await;
                });
            }
        });
    }
}

fn child() {
    // 640 MiB of address space: enough for the runtime and what arrives,
    // far from enough for eight 120 MiB buffers.
    rustix::process::setrlimit(
        rustix::process::Resource::As,
        rustix::process::Rlimit {
            current: Some(640 << 20),
            maximum: Some(640 << 20),
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sup = Identity::generate();
        let server = Endpoint::bind(
            &sup,
            "127.0.0.1:0".parse().unwrap(),
            bitdust_supplier::peer::ALPN,
            true,
        )
        .unwrap();
        let addr = server.local_addr().unwrap().to_string();
        tokio::spawn(hostile(server));
        let me = Identity::generate();
        let ep = Endpoint::bind(
            &me,
            "127.0.0.1:0".parse().unwrap(),
            bitdust_supplier::peer::ALPN,
            false,
        )
        .unwrap();
        let link = std::sync::Arc::new(SupplierLink::new(
            ep,
            sup.node_id(),
            addr,
            Duration::from_secs(5),
        ));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let link = link.clone();
            tasks.push(tokio::spawn(async move {
                link.get(&format!("f{i}"), 129 << 20).await
            }));
        }
        for t in tasks {
            let r = t.await.unwrap();
            assert!(
                matches!(r, Err(PeerError::Unreachable(_))),
                "a cut object is an error: {r:?}"
            );
        }
    });
    println!("CHILD-OK");
}

#[test]
fn a_supplier_claiming_huge_objects_cannot_make_the_customer_allocate_them() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_supplier_claiming_huge_objects_cannot_make_the_customer_allocate_them",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "the customer under a 640 MiB address-space cap failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
}
