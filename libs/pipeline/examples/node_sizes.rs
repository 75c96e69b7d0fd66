//! What the metadata of issue 18 costs per entry (docs/performance.md):
//! walks PATH as a backup does and encodes each entry's `Node` twice, as
//! snapshots keep it now and with only the fields kept before issue 18
//! (path, kind, mode, mtime, size, target, chunk ids), the chunk ids
//! counted as a backup of the tree would cut them (about one per MiB).
//!
//! `cargo run --release -p bitdust-pipeline --example node_sizes -- PATH`
#![allow(clippy::unwrap_used)]

use bitdust_pipeline::snapshot::{EntrySource, LocalWalk, node_of};
use prost::Message;

fn main() {
    let path = std::env::args().nth(1).expect("usage: node_sizes PATH");
    let path = std::fs::canonicalize(path).unwrap();
    let mut walk = LocalWalk::new(vec![path]);
    let (mut entries, mut now, mut before, mut with_xattrs) = (0u64, 0u64, 0u64, 0u64);
    while let Some(e) = walk.next_entry().unwrap() {
        let mut node = node_of(&e);
        // Chunk ids as the files' content would give them.
        let ids = e.data_len().div_ceil(1 << 20);
        node.chunks = vec![vec![0u8; 32]; ids as usize];
        let old = bitdust_proto::format::v1::Node {
            path: node.path.clone(),
            kind: node.kind,
            mode: node.mode,
            mtime: node.mtime,
            mtime_nanos: node.mtime_nanos,
            size: node.size,
            target: node.target.clone(),
            chunks: node.chunks.clone(),
            ..Default::default()
        };
        entries += 1;
        now += node.encoded_len() as u64 + 1;
        before += old.encoded_len() as u64 + 1;
        if !node.xattrs.is_empty() {
            with_xattrs += 1;
        }
    }
    let per = |b: u64| b as f64 / entries.max(1) as f64;
    println!(
        "{entries} entries ({with_xattrs} with xattrs): {:.1} bytes per entry now, {:.1} before issue 18: +{:.1} bytes per entry ({:+.1}%)",
        per(now),
        per(before),
        per(now) - per(before),
        100.0 * (now as f64 / before.max(1) as f64 - 1.0)
    );
}
