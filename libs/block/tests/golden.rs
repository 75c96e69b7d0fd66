//! Golden vectors: the exact bytes of a fragment file, a manifest, and the
//! ECC fragments of a fixed block. A change to any of them fails here and
//! must be deliberate (bump the format version). Regenerate with
//! `BITDUST_BLESS=1 cargo test -p bitdust-block --test golden`.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::PathBuf;

use bitdust_block::{
    BackupId, BlockHeader, FragmentPrefix, Manifest, SignedHeader, read_fragment, write_fragment,
};
use bitdust_crypto::Identity;
use bitdust_ecc::{Code, FragmentKind, SUPPLIER_COUNTS, Scheme};

fn vector(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

fn check(name: &str, bytes: &[u8]) {
    let path = vector(name);
    if std::env::var_os("BITDUST_BLESS").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let golden = std::fs::read(&path)
        .unwrap_or_else(|_| panic!("missing {path:?}; run with BITDUST_BLESS=1"));
    assert!(
        golden == bytes,
        "{name} changed: the stored format is not what version 1 says"
    );
}

fn identity() -> Identity {
    Identity::from_secret(&[0x42; 32])
}

fn payload(f: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (f * 31 + i * 7) as u8).collect()
}

fn header(code: &Code) -> BlockHeader {
    let fl = code.fragment_len(1200);
    BlockHeader {
        customer: identity().node_id(),
        backup_id: BackupId(*b"0123456789abcdef"),
        version: 3,
        block: 7,
        scheme: code.scheme(),
        suppliers: code.suppliers(),
        plain_len: 1000,
        cipher_len: 1200,
        fragment_len: fl as u64,
        fragment_hashes: (0..code.fragment_count())
            .map(|f| *blake3::hash(&payload(f, fl)).as_bytes())
            .collect(),
        last: true,
    }
}

#[test]
fn fragment_file_v1() {
    let code = Code::new(Scheme::Xor, 4).unwrap();
    let signed = header(&code).sign(&identity());
    let fl = code.fragment_len(1200);
    let mut bytes = Vec::new();
    write_fragment(
        &mut bytes,
        &signed,
        5,
        FragmentKind::Parity,
        &payload(5, fl),
    )
    .unwrap();
    check("fragment-v1-xor4-f5.bin", &bytes);

    // And it reads back into the same header.
    let mut r = bytes.as_slice();
    let FragmentPrefix {
        kind,
        index,
        header_bytes,
        signature,
        payload_len,
    } = read_fragment(&mut r).unwrap();
    assert_eq!(
        (kind, index, payload_len),
        (FragmentKind::Parity, 5, fl as u64)
    );
    let back = SignedHeader::verify(header_bytes, signature, &identity().node_id()).unwrap();
    assert_eq!(back.header, header(&code));
    assert_eq!(r, payload(5, fl).as_slice());
}

#[test]
fn manifest_v2() {
    let id = identity();
    let m = Manifest {
        customer: id.node_id(),
        backup_id: BackupId(*b"0123456789abcdef"),
        version: 3,
        created_unix: 1_790_000_000,
        scheme: Scheme::ReedSolomon,
        suppliers: 13,
        blocks: 9,
        archive_bytes: 123_456_789,
        compressed_bytes: 34_567_890,
        stored_bytes: 69_000_000,
        backup_recipient: "age1example".into(),
        wrapped_backup_key: b"wrapped key bytes".to_vec(),
        sealed_info: b"sealed info bytes".to_vec(),
        zstd_level: 3,
        block_headers: (0..9u8).map(|b| [b.wrapping_mul(29); 32]).collect(),
    };
    let bytes = m.to_signed_bytes(&id);
    check("manifest-v2.bin", &bytes);
    assert_eq!(
        Manifest::from_signed_bytes(&bytes, &id.node_id()).unwrap(),
        m
    );
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 70] ^= 1;
    assert!(Manifest::from_signed_bytes(&bad, &id.node_id()).is_err());
    // A manifest whose commitments do not cover every block is refused.
    let short = Manifest {
        block_headers: m.block_headers[..8].to_vec(),
        ..m.clone()
    };
    let err = Manifest::from_signed_bytes(&short.to_signed_bytes(&id), &id.node_id())
        .unwrap_err()
        .to_string();
    assert!(err.contains("for 9 blocks"), "{err}");
}

#[test]
fn ecc_fragments_v1() {
    let mut out = String::new();
    for scheme in [Scheme::Xor, Scheme::ReedSolomon] {
        for n in SUPPLIER_COUNTS {
            let code = Code::new(scheme, n).unwrap();
            let block: Vec<u8> = (0..100_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            let fl = code.fragment_len(block.len());
            let mut frags = vec![0u8; fl * code.fragment_count()];
            frags[..block.len()].copy_from_slice(&block);
            code.encode(&mut frags, fl).unwrap();
            writeln!(out, "{scheme} {n} {}", blake3::hash(&frags).to_hex()).unwrap();
        }
    }
    check("ecc-v1.txt", out.as_bytes());
}

#[test]
fn snapshot_root_v3_and_node_stream() {
    use bitdust_block::root::{SnapshotRoot, scheme_value, sign_root, verify_root};
    use bitdust_proto::format::v1 as pb;
    use prost::Message;
    let id = identity();
    let backup = BackupId(*b"0123456789abcdef");
    let root = SnapshotRoot {
        customer: id.node_id().as_bytes().to_vec(),
        backup_id: backup.0.to_vec(),
        snapshot: 5,
        parent: 4,
        created_unix: 1_790_000_000,
        scheme: scheme_value(Scheme::Xor),
        suppliers: 7,
        zstd_level: 3,
        backup_recipient: "age1example".into(),
        wrapped_backup_key: b"wrapped key bytes".to_vec(),
        sealed_info: b"sealed info bytes".to_vec(),
        sealed_meta: b"sealed metadata chunk list".to_vec(),
        pack_ranges: vec![0, 12, 40, 3],
        stats: Some(pb::SnapshotStats {
            files: 10,
            directories: 2,
            files_unchanged: 9,
            files_changed: 1,
            bytes_read: 4096,
            chunks_added: 1,
            added_plain: 4096,
            ..Default::default()
        }),
        // The first revision is not encoded (proto3's default), so roots
        // written before the field existed are revision 0.
        revision: 0,
    };
    let bytes = sign_root(&id, &root);
    check("root-v3.bin", &bytes);
    assert_eq!(
        verify_root(&bytes, &id.node_id(), backup, 5).unwrap().root,
        root
    );
    // The metadata stream: length-delimited nodes.
    let mut stream = Vec::new();
    for node in [
        pb::Node {
            path: b"home/a".to_vec(),
            kind: pb::NodeKind::Directory as i32,
            mode: 0o755,
            mtime: 1_790_000_000,
            mtime_nanos: 5,
            ..Default::default()
        },
        pb::Node {
            path: b"home/a/f\xff".to_vec(),
            kind: pb::NodeKind::File as i32,
            mode: 0o640,
            mtime: -1,
            mtime_nanos: 999_999_999,
            size: 3,
            chunks: vec![vec![0xaa; 32]],
            ..Default::default()
        },
        pb::Node {
            path: b"home/a/l".to_vec(),
            kind: pb::NodeKind::Symlink as i32,
            mode: 0o777,
            target: b"f".to_vec(),
            ..Default::default()
        },
    ] {
        node.encode_length_delimited(&mut stream).unwrap();
    }
    check("nodes-v1.bin", &stream);
}
