#![allow(clippy::unwrap_used)]
//! Crash consistency of the local store's fragment sink (issue 19: it
//! flushes only what it wrote, never the whole file system).
//!
//! The sink takes its durable steps through a recording `Fs`; for every
//! point between two steps, the disk a power cut would leave there is
//! rebuilt from what had been made durable by then (a file's data once it
//! was fsynced, a name once its directory was), and:
//! - every block a `sync` acknowledged before the crash point is whole at
//!   every position: each fragment file holds exactly the bytes written;
//! - a manifest present at a position is whole, and so is every block of
//!   the version at that position (fragments are durable before the
//!   manifest names them); once `commit` returned, it is present.
//!
//! The version written is the backup's second: a first run made the
//! position directories and was killed before any sync, so the names
//! above the second version's directory are durable only if the second
//! run makes them so.
//!
//! Dropping the fsync of the fragment files, of their directory or of the
//! directories above it, or writing the manifest before the fragments are
//! durable, makes this test fail.

use std::path::Path;
use std::sync::Arc;

use bitdust_block::{BackupId, BlockSealer, SealedBlock};
use bitdust_crypto::Identity;
use bitdust_durable::record::{self, Recorder};
use bitdust_ecc::{Code, Scheme};
use bitdust_pipeline::FragmentSink;
use bitdust_pipeline::local::LocalStore;

const BLOCKS: u64 = 7;
const SYNCED: u64 = 4;
const MANIFEST: &[u8] = b"a manifest naming 7 blocks";

/// The fragment files of `block` at `position`, relative to a store.
fn fragments(code: &Code, id: BackupId, position: usize, block: u64) -> Vec<String> {
    code.position_fragments(position)
        .iter()
        .map(|f| format!("{position}/{id}/2/b{block:010}.f{f:03}"))
        .collect()
}

/// Whether `block` is whole at `position` of the store `at` (the bytes
/// written are those of `root`, the store as the run left it).
fn whole(root: &Path, at: &Path, code: &Code, id: BackupId, position: usize, block: u64) -> bool {
    fragments(code, id, position, block).iter().all(|f| {
        let want = std::fs::read(root.join(f)).unwrap();
        std::fs::read(at.join(f)).is_ok_and(|got| got == want)
    })
}

#[test]
fn every_block_a_sync_acknowledged_survives_a_crash_at_every_point_and_the_manifest_comes_last() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir(&root).unwrap();
    let code = Code::new(Scheme::Xor, 7).unwrap();
    let id = BackupId([7; 16]);
    let identity = Arc::new(Identity::generate());
    let recipient = age::x25519::Identity::generate().to_public();
    let rec = Arc::new(Recorder::new(None));
    let mut sealed = SealedBlock::default();
    // The first run: directories made, a block written, killed before any
    // sync.
    let first = BlockSealer::new(identity.clone(), id, 1, code.clone(), recipient.clone());
    first.seal(0, true, b"first", &mut sealed).unwrap();
    let mut killed = LocalStore::new(&root)
        .sink(id, 1, &code)
        .with_fs(rec.clone());
    assert!(killed.put_block(&mut sealed).unwrap().is_empty());
    drop(killed);
    let sealer = BlockSealer::new(identity, id, 2, code.clone(), recipient);
    let mut sink = LocalStore::new(&root)
        .sink(id, 2, &code)
        .with_fs(rec.clone());
    let mut put = |sink: &mut dyn FragmentSink, b: u64| {
        let plain: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + b as u32) as u8).collect();
        sealer
            .seal(b, b == BLOCKS - 1, &plain, &mut sealed)
            .unwrap();
        assert!(sink.put_block(&mut sealed).unwrap().is_empty());
    };
    for b in 0..SYNCED {
        put(&mut sink, b);
    }
    assert!(sink.sync().unwrap().is_empty());
    let synced = rec.len();
    for b in SYNCED..BLOCKS {
        put(&mut sink, b);
    }
    assert!(sink.commit(MANIFEST).unwrap().is_empty());
    let committed = rec.len();
    drop(sink);
    let events = rec.events();
    assert!(synced > 0 && committed > synced, "nothing recorded");

    for k in 0..=events.len() {
        let crash = dir.path().join(format!("crash-{k}"));
        std::fs::create_dir(&crash).unwrap();
        record::materialize(&root, &events[..k], &crash).unwrap();
        for p in 0..code.suppliers() {
            let acked = match k {
                k if k >= committed => BLOCKS,
                k if k >= synced => SYNCED,
                _ => 0,
            };
            for b in 0..acked {
                assert!(
                    whole(&root, &crash, &code, id, p, b),
                    "crash point {k}: block {b}, acknowledged, is not whole at position {p}"
                );
            }
            let manifest = crash.join(format!("{p}/{id}/2/manifest"));
            match std::fs::read(&manifest) {
                Ok(m) => {
                    assert_eq!(m, MANIFEST, "crash point {k}: a torn manifest at {p}");
                    for b in 0..BLOCKS {
                        assert!(
                            whole(&root, &crash, &code, id, p, b),
                            "crash point {k}: the manifest at {p} names block {b}, which is not whole"
                        );
                    }
                }
                Err(_) => assert!(
                    k < committed,
                    "crash point {k}: the committed manifest is gone at position {p}"
                ),
            }
        }
        std::fs::remove_dir_all(&crash).unwrap();
    }
}
