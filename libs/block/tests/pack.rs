//! Packs through the block layer: sealed into fragments as version 0, the
//! block number the pack's; opened from a subset of fragments; the chunk
//! list read from the first data fragment alone; and the golden bytes of a
//! pack's prefix and sealed list.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use bitdust_block::pack::{
    self, PACK_PREFIX_LEN, PackKind, PackWriter, list_aad, list_end, open_data, read_list,
};
use bitdust_block::{BackupId, BlockOpener, BlockSealer, SealedBlock, write_fragment};
use bitdust_crypto::{BackupKey, DedupKeys, Identity};
use bitdust_ecc::{Code, Scheme};

fn file(sealed: &SealedBlock, code: &Code, f: usize) -> Vec<u8> {
    let mut out = Vec::new();
    write_fragment(
        &mut out,
        sealed.header().unwrap(),
        f,
        code.fragment_kind(f),
        sealed.fragment(f),
    )
    .unwrap();
    out
}

fn chunk(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i * 131 + j * 17 + j / 251) as u8)
        .collect()
}

#[test]
fn a_pack_is_a_block_whose_list_opens_from_the_first_fragment_alone() {
    let identity = Arc::new(Identity::from_secret(&[7; 32]));
    let id = BackupId(*b"packs-of-chunks!");
    let keys = DedupKeys::derive(&identity, &id.0);
    let backup_key = BackupKey::generate();
    for (scheme, n, lost) in [
        (Scheme::Xor, 7, vec![1, 8]),
        (Scheme::ReedSolomon, 7, vec![0, 2, 5]),
    ] {
        let code = Code::new(scheme, n).unwrap();
        let sealer = BlockSealer::new(
            identity.clone(),
            id,
            0,
            code.clone(),
            backup_key.recipient(),
        );
        let mut w = PackWriter::new(PackKind::Data);
        let chunks: Vec<Vec<u8>> = (0..40).map(|i| chunk(i, 1000 + i * 997)).collect();
        for c in &chunks {
            w.push(keys.chunk_id(c), c, c.len() as u32);
        }
        let mut sealed = SealedBlock::default();
        sealer.seal_pack(12, &w, &keys, &mut sealed).unwrap();
        let h = sealed.header().unwrap();
        assert_eq!((h.header.version, h.header.block), (0, 12));
        assert_eq!(h.header.plain_len, w.data_len() as u64);

        // The chunk list from the first data fragment's payload alone
        // (a ranged read of fragment 0), without the backup's age key.
        let aad = list_aad(&identity.node_id(), id, 12);
        let f0 = sealed.fragment(0);
        let end = list_end(&f0[..PACK_PREFIX_LEN]).unwrap();
        assert!(end < f0.len(), "the list fits in fragment 0");
        let list = read_list(&f0[..end], &keys, &aad, 1 << 20).unwrap();
        assert_eq!(list.entries, w.entries());

        // The whole pack from the fragments left after losing some.
        let mut opener = BlockOpener::new(identity.node_id(), id, 0, 12).expect_code(scheme, n);
        for f in (0..code.fragment_count()).filter(|f| !lost.contains(f)) {
            opener
                .add(f, &mut file(&sealed, &code, f).as_slice(), "x")
                .unwrap();
        }
        let body = opener.open_body().unwrap();
        let list = read_list(&body, &keys, &aad, 1 << 20).unwrap();
        let data = open_data(&body, &list, &backup_key).unwrap();
        for (e, c) in list.entries.iter().zip(&chunks) {
            assert_eq!(e.id, keys.chunk_id(c));
            let at = e.offset as usize;
            assert_eq!(&data[at..at + e.stored_len as usize], &c[..]);
        }

        // A fragment of pack 12 is not one of pack 13 or of version 1.
        let mut other = BlockOpener::new(identity.node_id(), id, 0, 13);
        assert!(
            other
                .add(0, &mut file(&sealed, &code, 0).as_slice(), "x")
                .is_err()
        );
        let mut other = BlockOpener::new(identity.node_id(), id, 1, 12);
        assert!(
            other
                .add(0, &mut file(&sealed, &code, 0).as_slice(), "x")
                .is_err()
        );
    }
}

#[test]
fn pack_prefix_and_sealed_list_golden() {
    // The data part is age's (randomized); the prefix, the list encoding and
    // its sealing are pinned. Regenerate with BITDUST_BLESS=1 (deliberately:
    // a change is a new pack format).
    let identity = Identity::from_secret(&[0x42; 32]);
    let id = BackupId(*b"0123456789abcdef");
    let keys = DedupKeys::derive(&identity, &id.0);
    let mut w = PackWriter::new(PackKind::Meta);
    w.push(keys.chunk_id(b"chunk one"), b"stored one", 9);
    w.push(keys.chunk_id(b"chunk two"), b"stored two!", 9);
    let aad = list_aad(&identity.node_id(), id, 3);
    let sealed = keys.seal_list_with_nonce(&aad, &w.list_bytes(), [0x24; 24]);
    let mut bytes = Vec::new();
    w.write_prefix_and_list(&sealed, &mut bytes).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/pack-v1-list.bin");
    if std::env::var_os("BITDUST_BLESS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    let golden = std::fs::read(&path).expect("run with BITDUST_BLESS=1 once");
    assert!(golden == bytes, "the pack prefix or list format changed");
    let list = read_list(&golden, &keys, &aad, 16).unwrap();
    assert_eq!(list.kind, PackKind::Meta);
    assert_eq!(list.entries, w.entries());
    assert_eq!(list.data_offset, golden.len());
    let _ = pack::MAX_PACK_CHUNKS;
}
