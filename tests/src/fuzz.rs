//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz, nightly), shared
//! with `tests/fuzz_corpus.rs`, which replays every committed corpus input
//! through them on stable, so CI guards what fuzzing found.
//!
//! Each body takes bytes a peer, a disk or a user could hand over and runs
//! the real parser or handler on them. A panic, an abort or an allocation
//! beyond the fuzzer's limit is a finding; errors are the expected outcome.
//! Where a signature would stop every mutated input at the door, the body
//! also re-signs the input with a fixed identity, so the checks after the
//! signature are reached too.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use bitdust_block::{BackupId, BlockOpener, Manifest};
use bitdust_crypto::{BackupKey, Identity, NodeId};
use bitdust_dht::mem::{MemNet, MemTransport};
use bitdust_dht::{Node, Record};
use bitdust_net::frame::decode_frame;
use bitdust_proto::dht::v1 as dpb;
use bitdust_proto::peer::v1 as ppb;
use bitdust_supplier::store::{Limits, Store};
use prost::Message;

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target: its name (the folder of its corpus under `fuzz/corpus/`)
/// and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("peer_request", peer_request),
    ("dht_message", dht_message),
    ("fragment", fragment),
    ("manifest", manifest),
    ("archive", archive),
    ("restore_stream", restore_stream),
    ("config", config),
];

/// The identity the re-signed inputs are signed by.
pub fn fuzz_identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::from_secret(&[7; 32]))
}

const FROM: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

/// A peer protocol frame as a supplier reads it, answered by a real store
/// (one per process, in a temporary directory): service, list, delete,
/// stat and cancel run; a put is checked up to where its payload would be
/// read.
pub fn peer_request(data: &[u8]) {
    struct Supplier {
        rt: tokio::runtime::Runtime,
        store: Arc<Store>,
        _dir: tempfile::TempDir,
    }
    static SUPPLIER: OnceLock<Supplier> = OnceLock::new();
    let s = SUPPLIER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            capacity: 64 << 20,
            max_object_size: 1 << 20,
            max_customers: 8,
            unused_secs: 3600,
            max_unused_per_address: 4,
            max_services_per_address: 16,
        };
        Supplier {
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
            store: Arc::new(Store::open(dir.path(), limits).unwrap()),
            _dir: dir,
        }
    });
    let Ok(req) = decode_frame::<ppb::Request>(data, bitdust_supplier::peer::MAX_REQUEST) else {
        return;
    };
    let Some(kind) = req.kind else {
        return;
    };
    // Two customers, so one may try the other's objects.
    let peer = NodeId::from_bytes([data.len() as u8 & 1; 32]);
    match kind {
        ppb::request::Kind::Put(p) => {
            let _ = s.store.begin_put(&peer, &p.name, p.size, &p.blake3);
        }
        ppb::request::Kind::Get(g) => {
            let _ = s.store.get(&peer, &g.name);
        }
        other => {
            s.rt.block_on(bitdust_supplier::peer::answer(
                other,
                peer,
                FROM,
                s.store.clone(),
            ));
        }
    }
}

/// A DHT message frame as a dht-peer reads it, handled by a real node; and
/// the same bytes as a record a node would take.
pub fn dht_message(data: &[u8]) {
    static NODE: OnceLock<(Arc<MemNet>, Arc<Node<MemTransport>>)> = OnceLock::new();
    let (_, node) = NODE.get_or_init(|| {
        let net = MemNet::new();
        let node = net.add(
            Identity::from_secret(&[1; 32]).node_id(),
            bitdust_dht::store::Limits::default(),
        );
        (net, node)
    });
    let from = NodeId::from_bytes([data.first().copied().unwrap_or(0); 32]);
    if let Ok(req) = decode_frame::<dpb::Request>(data, bitdust_dhtpeer::quic::MAX_MESSAGE) {
        let _ = node.handle(&from, Some(std::net::SocketAddr::new(FROM, 7900)), req);
    }
    if let Ok(r) = dpb::Record::decode(data)
        && let Ok(r) = Record::from_proto(r)
    {
        let _ = r.verify(bitdust_dht::record::now());
    }
}

/// Bytes as fragment files of one block: as read, and re-signed.
///
/// Layout of the re-signed form: `[n: u8]` fragments follow, each
/// `[flags: u8][index: u8][header length: u16 LE][header][payload length:
/// u16 LE][payload]`, all signed by [`fuzz_identity`].
pub fn fragment(data: &[u8]) {
    let me = fuzz_identity();
    let id = BackupId([3; 16]);
    let mut raw = BlockOpener::new(me.node_id(), id, 1, 0);
    let _ = raw.add(0, &mut &data[..], "fuzz");

    let mut opener = BlockOpener::new(me.node_id(), id, 1, 0).max_block_len(1 << 20);
    let mut rest = data;
    let n = take(&mut rest, 1).map_or(0, |b| b[0] % 8);
    for _ in 0..n {
        let Some(head) = take(&mut rest, 4) else {
            break;
        };
        let header_len = u16::from_le_bytes([head[2], head[3]]) as usize;
        let Some(header) = take(&mut rest, header_len) else {
            break;
        };
        let Some(plen) = take(&mut rest, 2) else {
            break;
        };
        let Some(payload) = take(&mut rest, u16::from_le_bytes([plen[0], plen[1]]) as usize) else {
            break;
        };
        let file = bitdust_block::fuzzing::signed_fragment(
            me,
            head[0] & 1 == 1,
            u16::from(head[1]),
            header,
            payload,
        );
        let _ = opener.add(usize::from(head[1]), &mut file.as_slice(), "fuzz");
    }
    if opener.has_all_data() || opener.header().is_some() {
        let _ = opener.open(fuzz_backup_key());
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (a, b) = rest.split_at(n);
    *rest = b;
    Some(a)
}

fn fuzz_backup_key() -> &'static BackupKey {
    static KEY: OnceLock<BackupKey> = OnceLock::new();
    KEY.get_or_init(BackupKey::generate)
}

/// Bytes as a manifest file, and as a manifest body signed by
/// [`fuzz_identity`] (whose sealed info is then opened).
pub fn manifest(data: &[u8]) {
    let me = fuzz_identity();
    let _ = Manifest::from_signed_bytes(data, &me.node_id());
    let file = bitdust_block::fuzzing::signed_manifest(me, data);
    if let Ok(m) = Manifest::from_signed_bytes(&file, &me.node_id()) {
        let _ = m.open_info(fuzz_backup_key());
        let _ = bitdust_pipeline::fragment_object_bound(&m, 64 << 20);
        for b in 0..m.blocks.min(4) {
            let _ = m.block_header(b);
        }
    }
}

/// Bytes as the tar stream of a restore (zstd-compressed here, unless they
/// already are), extracted into a fresh directory: nothing may appear
/// beside it.
pub fn archive(data: &[u8]) {
    let compressed;
    let input: &[u8] = if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        data
    } else {
        compressed = zstd::encode_all(data, 1).unwrap();
        &compressed
    };
    into_target_only("the extractor", |to| {
        let _ = bitdust_pipeline::extract_archive(input, to, &());
    });
}

/// Runs `write` on `out` in a fresh directory beside an empty `sibling`,
/// and asserts that `who` wrote nothing outside `out`.
fn into_target_only(who: &str, write: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let sibling = dir.path().join("sibling");
    std::fs::create_dir(&sibling).unwrap();
    write(&dir.path().join("out"));
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(
        names == ["out", "sibling"] || names == ["sibling"],
        "{who} wrote beside its target: {names:?}"
    );
    assert_eq!(std::fs::read_dir(&sibling).unwrap().count(), 0);
}

/// Bytes as the entries of a snapshot restore stream, as `bitdustctl`
/// writes what the agent sends (docs/metadata.md): each a varint length
/// and a `format.v1.Node`, every file's content following as zeros (at
/// most 1 MiB, so a longer file is a cut stream). Owners, attributes,
/// holes, links and special files all run, as the process that replays
/// (root in CI); nothing may appear beside the target.
pub fn restore_stream(data: &[u8]) {
    into_target_only("the restore", |to| {
        let _ = replay_restore_stream(data, to);
    });
}

/// Restores the stream `data` (as [`restore_stream`] reads it) into `to`.
pub fn replay_restore_stream(
    data: &[u8],
    to: &Path,
) -> Result<bitdust_pipeline::snapshot::SnapshotRestoreReport, bitdust_pipeline::RestoreError> {
    use bitdust_pipeline::snapshot::{Bytes, Owners, Streamed, content_len, extract_nodes};
    use bitdust_proto::format::v1 as fpb;
    let mut rest = data;
    let mut content: Option<Bytes> = None;
    let next = || -> std::io::Result<Option<Streamed>> {
        if let Some(c) = content.take() {
            return Ok(Some(Streamed::Content(c)));
        }
        if rest.is_empty() {
            return Ok(None);
        }
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let len = prost::encoding::decode_varint(&mut rest).map_err(|e| bad(e.to_string()))?;
        let len = usize::try_from(len).map_err(|e| bad(e.to_string()))?;
        if len > rest.len() {
            return Err(bad("the stream is cut".into()));
        }
        let node = fpb::Node::decode(&rest[..len]).map_err(|e| bad(e.to_string()))?;
        rest = &rest[len..];
        let n = content_len(&node).min(1 << 20) as usize;
        if n > 0 {
            content = Some(Bytes::from(vec![0u8; n]));
        }
        Ok(Some(Streamed::Node(node)))
    };
    extract_nodes(
        to,
        next,
        |_| Err(std::io::Error::other("no descriptors are passed here")),
        &(),
        Owners::ByName,
    )
}

/// Bytes as a configuration file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = bitdust_config::Config::parse(text, Path::new("/etc/bitdust/bitdust.toml"));
    }
}
