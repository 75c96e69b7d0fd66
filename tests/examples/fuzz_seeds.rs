//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/`
//! (real, valid inputs, signed by the fuzz identity where a signature is
//! checked), so fuzzing starts from the formats instead of from nothing.
//!
//! `cargo run -p bitdust-tests --example fuzz_seeds`
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bitdust_block::{BackupId, BlockSealer, Manifest, SealedBlock};
use bitdust_crypto::{BackupKey, Identity};
use bitdust_ecc::{Code, Scheme};
use bitdust_proto::dht::v1 as dpb;
use bitdust_proto::peer::v1 as ppb;
use bitdust_tests::fuzz::fuzz_identity;
use prost::Message;

fn frame(m: &impl Message) -> Vec<u8> {
    let body = m.encode_to_vec();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = bitdust_tests::workspace_root()
        .join("fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
}

fn main() {
    use ppb::request::Kind as P;
    let peer = [
        (
            "service",
            P::RequestService(ppb::RequestService {
                needed_bytes: 1 << 20,
                suppliers: 2,
            }),
        ),
        ("cancel", P::CancelService(ppb::CancelService {})),
        (
            "put",
            P::Put(ppb::PutObject {
                name: "v/a/b".into(),
                size: 10,
                blake3: vec![0; 32],
            }),
        ),
        (
            "get",
            P::Get(ppb::GetObject {
                name: "v/a/b".into(),
                prefix: 0,
            }),
        ),
        (
            "list",
            P::List(ppb::ListObjects {
                prefix: "v/".into(),
                start_after: String::new(),
                limit: 10,
            }),
        ),
        (
            "delete",
            P::Delete(ppb::DeleteObjects {
                names: vec!["v/a/b".into()],
                prefix: String::new(),
            }),
        ),
        (
            "audit",
            P::Audit(ppb::Audit {
                name: "v/a/b".into(),
                nonce: vec![1; 32],
            }),
        ),
        ("ping", P::Ping(ppb::Ping {})),
    ];
    for (name, kind) in peer {
        write(
            "peer_request",
            name,
            &frame(&ppb::Request { kind: Some(kind) }),
        );
    }

    use dpb::request::Kind as D;
    let owner = Identity::from_secret(&[9; 32]);
    let record =
        bitdust_dht::Record::sign(&owner, "supplier", 1, 3600, b"offer".to_vec()).to_proto();
    write("dht_message", "record", &record.encode_to_vec());
    let dht = [
        ("ping", D::Ping(dpb::Ping {})),
        ("find-node", D::FindNode(dpb::FindNode { key: vec![5; 32] })),
        (
            "find-value",
            D::FindValue(dpb::FindValue { key: vec![5; 32] }),
        ),
        (
            "store",
            D::Store(dpb::Store {
                record: Some(record),
            }),
        ),
        (
            "sample",
            D::Sample(dpb::Sample {
                kind: "supplier".into(),
                max: 8,
            }),
        ),
    ];
    for (name, kind) in dht {
        let req = dpb::Request {
            from_address: "192.0.2.9:7900".into(),
            kind: Some(kind),
        };
        write("dht_message", name, &frame(&req));
    }

    // A real block of 4 positions, sealed by the fuzz identity.
    let me = Arc::new(Identity::from_secret(&[7; 32]));
    assert_eq!(me.node_id(), fuzz_identity().node_id());
    let key = BackupKey::generate();
    let code = Code::new(Scheme::Xor, 4).unwrap();
    let sealer = BlockSealer::new(
        me.clone(),
        BackupId([3; 16]),
        1,
        code.clone(),
        key.recipient(),
    );
    let mut sealed = SealedBlock::default();
    sealer
        .seal(0, true, &b"plain block bytes ".repeat(40), &mut sealed)
        .unwrap();
    let header = sealed.header().unwrap().bytes.clone();
    let mut resigned = vec![code.fragment_count() as u8];
    for f in 0..code.fragment_count() {
        let payload = sealed.fragment(f);
        let mut file = Vec::new();
        bitdust_block::write_fragment(
            &mut file,
            sealed.header().unwrap(),
            f,
            code.fragment_kind(f),
            payload,
        )
        .unwrap();
        write("fragment", &format!("file-{f}"), &file);
        resigned.push(u8::from(f >= code.data_fragments()));
        resigned.push(f as u8);
        resigned.extend_from_slice(&(header.len() as u16).to_le_bytes());
        resigned.extend_from_slice(&header);
        resigned.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        resigned.extend_from_slice(payload);
    }
    write("fragment", "resigned-block", &resigned);

    let info = bitdust_block::BackupInfo {
        source_paths: vec![b"/home/a/docs".to_vec()],
        files: 1,
        directories: 1,
        symlinks: 0,
        skipped: vec![],
    };
    let m = Manifest {
        customer: me.node_id(),
        backup_id: BackupId([3; 16]),
        version: 1,
        created_unix: 1_700_000_000,
        scheme: Scheme::Xor,
        suppliers: 4,
        blocks: 1,
        archive_bytes: 720,
        compressed_bytes: 100,
        stored_bytes: 400,
        backup_recipient: key.recipient().to_string(),
        wrapped_backup_key: vec![1, 2, 3],
        sealed_info: Manifest::seal_info(&info, &key.recipient()).unwrap(),
        zstd_level: 3,
        block_headers: vec![sealed.header().unwrap().commitment()],
    };
    let file = m.to_signed_bytes(&me);
    write("manifest", "file", &file);
    write("manifest", "body", &Manifest::body_of(&file).unwrap());

    // A small tree as the backup's tar, and a hostile one.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/a.txt"), b"hello\n").unwrap();
    std::os::unix::fs::symlink("sub/a.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("abs")).unwrap();
    let (tar, _) = bitdust_pipeline::write_archive(
        std::slice::from_ref(&src),
        Vec::new(),
        &(),
        &std::sync::atomic::AtomicBool::new(false),
    )
    .unwrap();
    write("archive", "tree", &tar);
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
    h.set_size(4);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut evil = h.as_bytes().to_vec();
    evil.extend_from_slice(b"evil");
    evil.resize(evil.len() + 508 + 1024, 0);
    write("archive", "dotdot", &evil);

    restore_stream_seeds();

    let root = bitdust_tests::workspace_root();
    write(
        "config",
        "packaged",
        &std::fs::read(root.join("packaging/bitdust.toml")).unwrap(),
    );
    write(
        "config",
        "supplier",
        b"[supplier]\nadvertise = \"192.0.2.1:7800\"\ncapacity = \"1 GiB\"\nmax_unused_per_address = 2\n",
    );
    println!("seeds written under fuzz/corpus/");
}

/// Restore streams (varint-delimited `Node`s) with every kind of entry and
/// metadata, and hostile ones.
fn restore_stream_seeds() {
    use bitdust_proto::format::v1 as fpb;
    let stream = |nodes: &[fpb::Node]| {
        let mut out = Vec::new();
        for n in nodes {
            n.encode_length_delimited(&mut out).unwrap();
        }
        out
    };
    let node = |path: &str, kind: fpb::NodeKind| fpb::Node {
        path: path.as_bytes().to_vec(),
        kind: kind as i32,
        mode: 0o644,
        mtime: 1_500_000_000,
        mtime_nanos: 123_456_789,
        atime: Some(1_600_000_000),
        atime_nanos: 987_654_321,
        uid: Some(1001),
        gid: Some(1001),
        user: "alice".into(),
        group: "alice".into(),
        ..Default::default()
    };
    use fpb::NodeKind as K;
    let dir = fpb::Node {
        mode: 0o2775,
        xattrs: vec![fpb::Xattr {
            name: b"system.posix_acl_default".to_vec(),
            value: vec![2, 0, 0, 0, 1, 0, 7, 0, 255, 255, 255, 255],
        }],
        ..node("t", K::Directory)
    };
    let file = fpb::Node {
        size: 5,
        xattrs: vec![fpb::Xattr {
            name: b"user.color".to_vec(),
            value: b"blue".to_vec(),
        }],
        ..node("t/a", K::File)
    };
    let link = fpb::Node {
        size: 5,
        link: b"t/a".to_vec(),
        ..node("t/b", K::File)
    };
    let sparse = fpb::Node {
        size: 1 << 30,
        holes: vec![
            fpb::Extent {
                offset: 0,
                length: 4096,
            },
            fpb::Extent {
                offset: 8192,
                length: (1 << 30) - 8192,
            },
        ],
        ..node("t/sparse", K::File)
    };
    let fifo = node("t/fifo", K::Fifo);
    let dev = fpb::Node {
        rdev: (1 << 8) | 3,
        ..node("t/null", K::CharDevice)
    };
    let sym = fpb::Node {
        target: b"a".to_vec(),
        atime: None,
        ..node("t/sym", K::Symlink)
    };
    write(
        "restore_stream",
        "tree",
        &stream(&[dir.clone(), file.clone(), link, sparse, fifo, sym]),
    );
    write("restore_stream", "device", &stream(&[dir.clone(), dev]));
    let outside = fpb::Node {
        link: b"../../etc/passwd".to_vec(),
        ..node("t/c", K::File)
    };
    write(
        "restore_stream",
        "link-outside",
        &stream(&[dir.clone(), file.clone(), outside]),
    );
    let through_symlink = fpb::Node {
        target: b"/tmp".to_vec(),
        ..node("t/s", K::Symlink)
    };
    let under = fpb::Node {
        size: 1,
        ..node("t/s/x", K::File)
    };
    write(
        "restore_stream",
        "through-symlink",
        &stream(&[dir.clone(), through_symlink, under]),
    );
    let past = fpb::Node {
        size: 10,
        holes: vec![fpb::Extent {
            offset: 5,
            length: 10,
        }],
        ..node("t/past", K::File)
    };
    write("restore_stream", "hole-past-size", &stream(&[dir, past]));
}
