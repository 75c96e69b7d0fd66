#![allow(clippy::unwrap_used)]
//! Crash consistency of the supplier store, at every crash point.
//!
//! A kill -9 test cannot see a missing fsync: the page cache survives the
//! kill. Here the store takes its durable steps through a recording
//! [`Fs`]; for every point between two steps, the disk a power cut would
//! leave there is rebuilt from what had been made durable by then (file
//! data once fsynced, names once their directory was fsynced, the LMDB
//! index as of its last commit), the store is opened on it (its real
//! recovery runs), and:
//! - every acknowledged put and delete holds (an operation still running at
//!   the crash may have happened or not);
//! - every object the index lists reads back whole (size and BLAKE3);
//! - every customer on record can still store.
//!
//! Removing an fsync or reordering the write-rename-commit steps of
//! `Store::finish_puts` or `Store::request_service` makes this test fail.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bitdust_crypto::{Identity, NodeId};
use bitdust_durable::record::{self, Event, Recorder};
use bitdust_supplier::store::{Limits, Store, StoreError};

/// The disk a crash after `events` leaves, written into `to`: the store's
/// directories, the names made durable with the file data made durable,
/// and the index of the last commit.
fn materialize(root: &Path, events: &[Event], to: &Path) {
    for d in ["index", "objects", "tmp"] {
        std::fs::create_dir_all(to.join(d)).unwrap();
    }
    // Before the first commit the index is a new one.
    if let Some(index) = record::materialize(root, events, to).unwrap() {
        std::fs::write(to.join("index/data.mdb"), index).unwrap();
    }
}

/// One step of the scenario and what it leaves acknowledged.
struct Step {
    /// Events before it started and after it returned.
    started: usize,
    acked: usize,
    /// The objects it sets (`None`: deletes).
    effects: Vec<(String, Option<Vec<u8>>)>,
}

fn put(store: &Store, c: &NodeId, name: &str, data: &[u8]) -> Result<(), StoreError> {
    let t = store.begin_put(c, name, data.len() as u64, blake3::hash(data).as_bytes())?;
    std::fs::write(&t.tmp_path, data).unwrap();
    store.finish_put(t).map(drop)
}

const LIMITS: Limits = Limits {
    capacity: 64 << 20,
    max_object_size: 16 << 20,
    max_customers: 10,
    unused_secs: 86_400,
    max_unused_per_address: 4,
    max_services_per_address: 16,
};

#[test]
fn every_acknowledged_object_survives_a_crash_at_every_point_and_nothing_half_written_looks_whole()
{
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let rec = Arc::new(Recorder::new(Some(root.join("index/data.mdb"))));
    std::fs::create_dir_all(root.join("index")).unwrap();
    let store = Store::open_with(&root, LIMITS, rec.clone()).unwrap();
    let c = Identity::generate().node_id();
    let from = "192.0.2.1".parse().unwrap();
    let mut steps = Vec::new();
    let mut step = |effects: &[(&str, Option<&[u8]>)], f: &dyn Fn()| {
        let started = rec.len();
        f();
        steps.push(Step {
            started,
            acked: rec.len(),
            effects: effects
                .iter()
                .map(|(n, d)| ((*n).to_owned(), d.map(<[u8]>::to_vec)))
                .collect(),
        });
    };
    let a1 = vec![1u8; 5000];
    let a2 = vec![2u8; 7000];
    let b = vec![3u8; 100];
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let g1 = vec![4u8; 3000];
    let g2 = vec![5u8; 9000];
    let g3 = vec![6u8; 1];
    step(&[], &|| {
        store.request_service(&c, 32 << 20, 2, from).unwrap();
    });
    step(&[("v/a", Some(&a1))], &|| {
        put(&store, &c, "v/a", &a1).unwrap()
    });
    step(&[("v/b", Some(&b))], &|| {
        put(&store, &c, "v/b", &b).unwrap()
    });
    step(&[("v/a", Some(&a2))], &|| {
        put(&store, &c, "v/a", &a2).unwrap()
    });
    step(&[("v/b", None)], &|| {
        store.delete(&c, &["v/b".to_owned()], "").unwrap();
    });
    step(&[("v/big", Some(&big))], &|| {
        put(&store, &c, "v/big", &big).unwrap()
    });
    // Puts committed as one group (a new name, one replacing an object,
    // and another new one): acknowledged together, after one commit.
    step(
        &[("v/g1", Some(&g1)), ("v/a", Some(&g2)), ("v/g3", Some(&g3))],
        &|| {
            let tickets = [("v/g1", &g1), ("v/a", &g2), ("v/g3", &g3)].map(|(name, data)| {
                let t = store
                    .begin_put(&c, name, data.len() as u64, blake3::hash(data).as_bytes())
                    .unwrap();
                std::fs::write(&t.tmp_path, data).unwrap();
                t
            });
            for r in store.finish_puts(tickets.into()) {
                r.unwrap();
            }
        },
    );
    drop(store);
    let events = rec.events();
    assert!(
        events.len() > 20,
        "only {} durable steps recorded",
        events.len()
    );

    for k in 0..=events.len() {
        let crash = dir.path().join(format!("crash-{k}"));
        materialize(&root, &events[..k], &crash);
        let store = Store::open(&crash, LIMITS)
            .unwrap_or_else(|e| panic!("crash point {k}: the store does not open: {e}"));
        let has_service = store.customer(&c).unwrap().is_some();
        if steps[0].acked <= k {
            assert!(
                has_service,
                "crash point {k}: the acknowledged service is gone"
            );
        }
        // What each name may hold: its last acknowledged state, or what an
        // operation running at the crash was making of it.
        let mut allowed: BTreeMap<String, Vec<Option<Vec<u8>>>> = BTreeMap::new();
        for s in &steps {
            for (name, effect) in &s.effects {
                let entry = allowed.entry(name.clone()).or_insert_with(|| vec![None]);
                if s.acked <= k {
                    *entry = vec![effect.clone()];
                } else if s.started < k {
                    entry.push(effect.clone());
                }
            }
        }
        if has_service {
            for (name, ok) in &allowed {
                let got = match store.get(&c, name) {
                    Ok((o, path)) => {
                        let data = std::fs::read(&path).unwrap();
                        assert_eq!(
                            (data.len() as u64, *blake3::hash(&data).as_bytes()),
                            (o.size, o.hash),
                            "crash point {k}: {name} is listed but not whole"
                        );
                        Some(data)
                    }
                    Err(StoreError::NotFound(_)) => None,
                    Err(e) => panic!("crash point {k}: {name}: {e}"),
                };
                assert!(
                    ok.contains(&got),
                    "crash point {k}: {name} holds {:?} bytes; allowed: {:?}",
                    got.as_ref().map(Vec::len),
                    ok.iter()
                        .map(|o| o.as_ref().map(Vec::len))
                        .collect::<Vec<_>>()
                );
            }
            // The customer can still store, whatever the crash left.
            put(&store, &c, "v/probe", b"after the crash")
                .unwrap_or_else(|e| panic!("crash point {k}: a put after the crash fails: {e}"));
        }
        drop(store);
        std::fs::remove_dir_all(&crash).unwrap();
    }
}
