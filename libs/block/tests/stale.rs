//! A block written twice under the same name (a failed attempt, then a
//! retry) must open from the fragments of the version its manifest commits
//! to, whichever fragment is seen first: a stale fragment is an erasure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bitdust_block::{
    BackupId, BlockOpener, BlockSealer, SealedBlock, check_fragment, write_fragment,
};
use bitdust_crypto::{BackupKey, Identity};
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

#[test]
fn a_stale_fragment_seen_first_is_an_erasure_not_the_block_header() {
    let identity = Arc::new(Identity::from_secret(&[7; 32]));
    let key = BackupKey::generate();
    let id = BackupId(*b"stale-fragments!");
    let code = Code::new(Scheme::Xor, 7).unwrap();
    let sealer = BlockSealer::new(identity.clone(), id, 1, code.clone(), key.recipient());
    // The failed attempt and the retry wrote different blocks under the
    // same backup, version and block number.
    let (mut old, mut new) = (SealedBlock::default(), SealedBlock::default());
    sealer.seal(0, true, &vec![1u8; 100_000], &mut old).unwrap();
    sealer.seal(0, true, &vec![2u8; 90_000], &mut new).unwrap();
    let committed = new.header().unwrap().commitment();
    assert_ne!(committed, old.header().unwrap().commitment());

    // Position 0 (fragments 0 and 7) still holds the old attempt's
    // fragments, and they come first.
    let stale = [0usize, 7];
    let mut opener = BlockOpener::new(identity.node_id(), id, 1, 0)
        .expect_code(Scheme::Xor, 7)
        .expect_header(committed);
    for f in 0..code.fragment_count() {
        let bytes = if stale.contains(&f) {
            file(&old, &code, f)
        } else {
            file(&new, &code, f)
        };
        let _ = opener.add(f, &mut bytes.as_slice(), &format!("fragment {f}"));
    }
    assert_eq!(opener.stale(), 2, "{:?}", opener.rejections());
    let plain = opener.open(&key).unwrap();
    assert_eq!(plain, vec![2u8; 90_000]);

    // Without the commitment the first fragment seen would have decided
    // and the six good positions would have been the "conflict".
    let mut blind = BlockOpener::new(identity.node_id(), id, 1, 0);
    for f in 0..code.fragment_count() {
        let bytes = if stale.contains(&f) {
            file(&old, &code, f)
        } else {
            file(&new, &code, f)
        };
        let _ = blind.add(f, &mut bytes.as_slice(), "x");
    }
    assert!(blind.open(&key).is_err());

    // check_fragment (the rebuilder's and the audit's check) refuses it too.
    let bytes = file(&old, &code, 0);
    let err =
        check_fragment(&bytes, &identity.node_id(), id, 1, 0, 0, Some(&committed)).unwrap_err();
    assert!(err.contains("stale"), "{err}");
    let good = file(&new, &code, 0);
    check_fragment(&good, &identity.node_id(), id, 1, 0, 0, Some(&committed)).unwrap();
}
