//! 1,000 DHT nodes in one process, speaking the real protocol (every
//! message encoded and decoded) over the in-memory transport: lookup success
//! and hop counts with 0% and 20% of the nodes gone, and records surviving
//! the loss. Figures are printed (`-- --nocapture`) and kept in
//! docs/performance.md.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bitdust_crypto::Identity;
use bitdust_dht::mem::{MemNet, MemTransport};
use bitdust_dht::store::Limits;
use bitdust_dht::{K, Node, Record};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const NODES: usize = 1000;
const LOOKUPS: usize = 1000;

struct Figures {
    success: f64,
    median_hops: usize,
    p90_hops: usize,
    max_hops: usize,
    mean_requests: f64,
}

async fn measure(nodes: &[Arc<Node<MemTransport>>], live: &[usize], rng: &mut impl Rng) -> Figures {
    let mut hops = Vec::new();
    let (mut ok, mut requests) = (0, 0);
    for _ in 0..LOOKUPS {
        let from = &nodes[live[rng.random_range(0..live.len())]];
        let to = &nodes[live[rng.random_range(0..live.len())]];
        let l = from.lookup(to.contact().key).await;
        requests += l.requests;
        if to.contact().id == from.contact().id
            || l.closest.first().is_some_and(|c| c.id == to.contact().id)
        {
            ok += 1;
            hops.push(l.hops);
        }
    }
    hops.sort_unstable();
    Figures {
        success: ok as f64 / LOOKUPS as f64,
        median_hops: hops[hops.len() / 2],
        p90_hops: hops[hops.len() * 9 / 10],
        max_hops: *hops.last().unwrap(),
        mean_requests: requests as f64 / LOOKUPS as f64,
    }
}

fn report(what: &str, f: &Figures) {
    eprintln!(
        "{what}: success {:.1}% ({} lookups), hops median {} p90 {} max {}, {:.1} requests per lookup",
        f.success * 100.0,
        LOOKUPS,
        f.median_hops,
        f.p90_hops,
        f.max_hops,
        f.mean_requests
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_thousand_nodes_find_each_other_with_a_fifth_of_them_gone() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1852);
    let net = MemNet::new();
    let ids: Vec<Identity> = (0..NODES).map(|_| Identity::generate()).collect();
    let nodes: Vec<Arc<Node<MemTransport>>> = ids
        .iter()
        .map(|i| net.add(i.node_id(), Limits::default()))
        .collect();
    // Every node joins through one of three seeds.
    let seeds: Vec<_> = nodes[..3].iter().map(|n| n.contact().clone()).collect();
    for n in &nodes[1..3] {
        n.bootstrap(&seeds[..1]).await;
    }
    for n in &nodes[3..] {
        n.bootstrap(&seeds[rng.random_range(0..3)..][..1]).await;
    }
    let sizes: Vec<usize> = nodes.iter().map(|n| n.with_table(|t| t.len())).collect();
    let mean_table = sizes.iter().sum::<usize>() as f64 / NODES as f64;
    eprintln!(
        "{NODES} nodes joined: routing tables hold {} to {} contacts (mean {mean_table:.0}); {} requests",
        sizes.iter().min().unwrap(),
        sizes.iter().max().unwrap(),
        net.delivered.load(std::sync::atomic::Ordering::Relaxed)
    );

    // Records put before the loss, by 50 distinct owners (an owner signing
    // a second, different record with the same sequence is refused as
    // stale, as it should be).
    let owners: Vec<usize> = rand::seq::index::sample(&mut rng, NODES, 50).into_vec();
    for &o in &owners {
        let r = Record::sign(
            &ids[o],
            "supplier",
            1,
            3600,
            format!("offer {o}").into_bytes(),
        );
        let (stored, err) = nodes[o].put(&r).await;
        assert_eq!(stored, K, "record of node {o}: {err:?}");
    }

    let all: Vec<usize> = (0..NODES).collect();
    let f0 = measure(&nodes, &all, &mut rng).await;
    report("0% gone", &f0);

    // A fifth of the nodes vanish at once (not the seeds' role any more:
    // any node may go).
    let mut order = all.clone();
    order.shuffle(&mut rng);
    let (gone, live) = order.split_at(NODES / 5);
    for &g in gone {
        net.take_down(&nodes[g].contact().id);
    }
    let mut live = live.to_vec();
    live.sort_unstable();
    let f20 = measure(&nodes, &live, &mut rng).await;
    report("20% gone", &f20);

    // Every record is still found, from a live node, with its payload.
    let mut found = 0;
    for &o in &owners {
        let asker = &nodes[live[rng.random_range(0..live.len())]];
        let key = bitdust_dht::record::record_key(&ids[o].node_id(), "supplier");
        if let (Some(r), _) = asker.find_value(key).await {
            assert_eq!(r.payload, format!("offer {o}").into_bytes());
            found += 1;
        }
    }
    eprintln!("records found after the loss: {found} of {}", owners.len());

    assert!(f0.success >= 1.0, "success with all nodes: {}", f0.success);
    assert!(
        f20.success >= 0.99,
        "success with 20% gone: {}",
        f20.success
    );
    assert!(f0.median_hops <= 4 && f20.median_hops <= 4);
    assert_eq!(found, owners.len());
}
