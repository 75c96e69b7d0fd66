//! Round trips through `bitdust_pipeline::local` on real files: every supplier
//! count and both schemes, positions lost up to the tolerance, one loss more
//! than a pattern survives, and corrupted fragments.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use bitdust_block::Manifest;
use bitdust_ecc::{Code, SUPPLIER_COUNTS, Scheme};
use bitdust_pipeline::local::{self, LocalError, Selector};
use bitdust_pipeline::{BackupOptions, BackupReport, RestoreError, RestoreOptions, RestoreReport};
use bitdust_tests::{assert_same_tree, make_tree, restored_path};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

fn opts(scheme: Scheme, suppliers: usize) -> BackupOptions {
    BackupOptions {
        scheme,
        suppliers,
        block_size: 64 * 1024,
        ..BackupOptions::default()
    }
}

fn backup(
    keys: &Path,
    src: &Path,
    dir: &Path,
    scheme: Scheme,
    suppliers: usize,
) -> Result<BackupReport, LocalError> {
    local::backup_to_dir(
        keys,
        &[src.to_path_buf()],
        dir,
        &opts(scheme, suppliers),
        &(),
    )
}

fn restore(keys: &Path, dir: &Path, out: &Path) -> Result<(Manifest, RestoreReport), LocalError> {
    local::restore_from_dir(
        keys,
        dir,
        Selector::default(),
        out,
        &RestoreOptions::default(),
        &(),
    )
}

/// Whether a block survives losing `lost` positions.
fn decodable(code: &Code, lost: &[usize]) -> bool {
    let mut present = vec![true; code.fragment_count()];
    for &p in lost {
        for f in code.position_fragments(p) {
            present[f] = false;
        }
    }
    let mut buf = vec![0u8; code.fragment_count() * 64];
    code.reconstruct_data(&mut buf, 64, &mut present).is_ok()
}

/// A pattern of `k` lost positions that does not decode, if one is found.
fn failing_pattern(code: &Code, k: usize, rng: &mut ChaCha8Rng) -> Option<Vec<usize>> {
    let mut all: Vec<usize> = (0..code.suppliers()).collect();
    for _ in 0..20_000 {
        all.shuffle(rng);
        let pick = all[..k].to_vec();
        if !decodable(code, &pick) {
            return Some(pick);
        }
    }
    None
}

#[test]
fn every_supplier_count_and_scheme_survives_losses_up_to_tolerance() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 1, 1);
    let keys = tmp.path().join("keys");
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    for scheme in [Scheme::Xor, Scheme::ReedSolomon] {
        for n in SUPPLIER_COUNTS {
            let code = Code::new(scheme, n).unwrap();
            let dir = tmp.path().join(format!("store-{scheme}-{n}"));
            let report = backup(&keys, &src, &dir, scheme, n).unwrap();
            assert!(
                report.manifest.blocks >= 3,
                "want several blocks, got {}",
                report.manifest.blocks
            );
            assert!(report.skipped.is_empty(), "{:?}", report.skipped);

            // Lose `tolerance` random positions: must restore bit-exact.
            let mut positions: Vec<usize> = (0..n).collect();
            positions.shuffle(&mut rng);
            let lost = &positions[..code.tolerance()];
            let damaged = tmp.path().join(format!("damaged-{scheme}-{n}"));
            copy_dir(&dir, &damaged);
            for p in lost {
                fs::remove_dir_all(damaged.join(p.to_string())).unwrap();
            }
            let out = tmp.path().join(format!("out-{scheme}-{n}"));
            let (_, r) = restore(&keys, &damaged, &out)
                .unwrap_or_else(|e| panic!("{scheme} N={n} lost {lost:?}: {e}"));
            assert_same_tree(&src, &restored_path(&out, &src));
            if !lost.is_empty() && scheme == Scheme::Xor {
                assert!(
                    r.decoded_blocks > 0,
                    "losing positions must need the decoder"
                );
            }

            // One loss more, in a pattern the code cannot decode: a clear error
            // naming the blocks, and no restore directory left behind.
            // (Sampled: at exactly tolerance + 1 failing patterns can be rare
            // for large maps, so look further out until one is found.)
            let Some(pattern) =
                (code.tolerance() + 1..n).find_map(|k| failing_pattern(&code, k, &mut rng))
            else {
                continue;
            };
            let broken = tmp.path().join(format!("broken-{scheme}-{n}"));
            copy_dir(&dir, &broken);
            for p in &pattern {
                fs::remove_dir_all(broken.join(p.to_string())).unwrap();
            }
            let out = tmp.path().join(format!("fail-{scheme}-{n}"));
            let err = restore(&keys, &broken, &out).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, LocalError::Restore(RestoreError::Blocks { .. })),
                "{scheme} N={n} lost {pattern:?}: {msg}"
            );
            assert!(
                msg.contains("cannot be recovered") && msg.contains("block 0"),
                "{msg}"
            );
            assert!(!out.exists(), "a failed restore left {out:?} behind");
            let leftovers: Vec<_> = fs::read_dir(tmp.path())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains("bitdust-restore"))
                .collect();
            assert!(
                leftovers.is_empty(),
                "staging directories left: {leftovers:?}"
            );
            fs::remove_dir_all(&broken).unwrap();
            fs::remove_dir_all(&damaged).unwrap();
        }
    }
}

#[test]
fn corrupted_truncated_and_swapped_fragments_are_treated_as_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 2, 1);
    let keys = tmp.path().join("keys");
    let dir = tmp.path().join("store");
    let report = backup(&keys, &src, &dir, Scheme::Xor, 7).unwrap();
    let m = &report.manifest;
    let vdir = |p: usize| {
        dir.join(p.to_string())
            .join(m.backup_id.to_string())
            .join(m.version.to_string())
    };
    let frag = |p: usize, b: u64, f: usize| vdir(p).join(format!("b{b:010}.f{f:03}"));

    // Position 0: flip bytes in the data fragment of block 0.
    let f = frag(0, 0, 0);
    let mut bytes = fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    bytes[n / 2] ^= 0x01;
    fs::write(&f, &bytes).unwrap();
    // Position 2: truncate the data fragment of block 1.
    let f = frag(2, 1, 2);
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..bytes.len() / 3]).unwrap();
    // Position 5: swap the data fragments of blocks 0 and 1.
    let (a, b) = (frag(5, 0, 5), frag(5, 1, 5));
    let tmpf = vdir(5).join("swap");
    fs::rename(&a, &tmpf).unwrap();
    fs::rename(&b, &a).unwrap();
    fs::rename(&tmpf, &b).unwrap();

    let v = local::verify_dir(&keys, &dir, Selector::default()).unwrap();
    assert!(v.unrecoverable().is_empty());
    assert!(
        v.rejected_fragments.len() >= 4,
        "{:?}",
        v.rejected_fragments
    );
    let joined = v.rejected_fragments.join("\n");
    assert!(
        joined.contains("does not match the signed hash"),
        "{joined}"
    );
    assert!(joined.contains("truncated"), "{joined}");
    assert!(joined.contains("belongs to"), "{joined}");
    assert!(
        v.blocks[0].damaged_positions.contains(&0) && v.blocks[0].damaged_positions.contains(&5)
    );
    assert!(v.blocks[1].damaged_positions.contains(&2));

    let out = tmp.path().join("out");
    let (_, r) = restore(&keys, &dir, &out).unwrap();
    assert!(r.decoded_blocks >= 2);
    assert_same_tree(&src, &restored_path(&out, &src));
}

#[test]
fn fragments_signed_by_another_customer_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 3, 1);
    let (keys_a, keys_b) = (tmp.path().join("keys-a"), tmp.path().join("keys-b"));
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let ra = backup(&keys_a, &src, &dir_a, Scheme::Xor, 4).unwrap();
    backup(&keys_b, &src, &dir_b, Scheme::Xor, 4).unwrap();

    // B cannot restore or verify A's backup: the manifest is signed by A.
    let err = local::verify_dir(&keys_b, &dir_a, Selector::default()).unwrap_err();
    assert!(err.to_string().contains("signed by"), "{err}");

    // Replace every fragment of A's block 0 with B's files under A's names:
    // no fragment of block 0 carries A's signature any more.
    let m = &ra.manifest;
    for p in 0..4 {
        let va = dir_a
            .join(p.to_string())
            .join(m.backup_id.to_string())
            .join("1");
        let bid = fs::read_dir(dir_b.join(p.to_string()))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        for f in [p, 4 + p] {
            let name = format!("b{:010}.f{f:03}", 0);
            fs::copy(bid.join("1").join(&name), va.join(&name)).unwrap();
        }
    }
    let out = tmp.path().join("out");
    let err = restore(&keys_a, &dir_a, &out).unwrap_err().to_string();
    assert!(
        err.contains("block 0") && err.contains("signed by"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn versions_accumulate_and_older_ones_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 4, 1);
    let keys = tmp.path().join("keys");
    let dir = tmp.path().join("store");
    let r1 = backup(&keys, &src, &dir, Scheme::Xor, 7).unwrap();
    fs::write(src.join("docs/new-file.txt"), b"added later").unwrap();
    let r2 = backup(&keys, &src, &dir, Scheme::Xor, 7).unwrap();
    assert_eq!(r1.manifest.backup_id, r2.manifest.backup_id);
    assert_eq!((r1.manifest.version, r2.manifest.version), (1, 2));
    assert_eq!(
        r1.manifest.wrapped_backup_key,
        r2.manifest.wrapped_backup_key
    );
    assert_eq!(local::LocalStore::new(&dir).list().len(), 2);

    let out = tmp.path().join("out-v1");
    let sel: Selector = format!("{}@1", r1.manifest.backup_id).parse().unwrap();
    local::restore_from_dir(&keys, &dir, sel, &out, &RestoreOptions::default(), &()).unwrap();
    // v1 was made before new-file.txt existed.
    assert!(!restored_path(&out, &src).join("docs/new-file.txt").exists());
    let out2 = tmp.path().join("out-v2");
    restore(&keys, &dir, &out2).unwrap();
    assert_same_tree(&src, &restored_path(&out2, &src));
}

#[test]
fn interrupted_version_is_ignored_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 5, 1);
    let keys = tmp.path().join("keys");
    let dir = tmp.path().join("store");
    let r1 = backup(&keys, &src, &dir, Scheme::Xor, 4).unwrap();
    // Simulate a crash after fragments of version 2 were written, before its manifest.
    for p in 0..4 {
        let v = dir
            .join(p.to_string())
            .join(r1.manifest.backup_id.to_string());
        fs::create_dir_all(v.join("2")).unwrap();
        fs::write(v.join("2").join("b0000000000.f000"), b"partial").unwrap();
    }
    assert_eq!(local::LocalStore::new(&dir).list().len(), 1);
    let r3 = backup(&keys, &src, &dir, Scheme::Xor, 4).unwrap();
    assert_eq!(r3.manifest.version, 3);
    let out = tmp.path().join("out");
    let (m, _) = restore(&keys, &dir, &out).unwrap();
    assert_eq!(m.version, 3);
    assert_same_tree(&src, &restored_path(&out, &src));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let dest = to.join(e.file_name());
        if ft.is_dir() {
            copy_dir(&e.path(), &dest);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), &dest).unwrap();
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn a_second_backup_of_the_same_paths_into_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 6, 1);
    let keys = tmp.path().join("keys");
    let dir = tmp.path().join("store");
    let first = backup(&keys, &src, &dir, Scheme::Xor, 4).unwrap();
    // Hold the lock as a running backup would.
    let lock = fs::File::open(dir.join(format!(".{}.lock", first.manifest.backup_id))).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let err = backup(&keys, &src, &dir, Scheme::Xor, 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("another backup of the same paths"), "{err}");
    drop(lock);
    let again = backup(&keys, &src, &dir, Scheme::Xor, 4).unwrap();
    assert_eq!(again.manifest.version, 2);
}

#[test]
fn symlinked_and_dotdot_sources_back_up_what_they_name() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("disk2/documents");
    make_tree(&real, 7, 1);
    let link = tmp.path().join("Documents");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let keys = tmp.path().join("keys");
    let dir = tmp.path().join("store");
    // `Documents` is a symlink to a directory: its content is backed up under
    // the name given.
    backup(&keys, &link, &dir, Scheme::Xor, 4).unwrap();
    let out = tmp.path().join("out");
    restore(&keys, &dir, &out).unwrap();
    assert_same_tree(&real, &restored_path(&out, &link));

    // A path with `..` is resolved before it becomes an archive name.
    let dotted = real.join("docs/../docs");
    let dir2 = tmp.path().join("store2");
    local::backup_to_dir(&keys, &[dotted], &dir2, &opts(Scheme::Xor, 4), &()).unwrap();
    let out2 = tmp.path().join("out2");
    restore(&keys, &dir2, &out2).unwrap();
    let canonical = fs::canonicalize(real.join("docs")).unwrap();
    assert_same_tree(&canonical, &restored_path(&out2, &canonical));
}

#[test]
fn setuid_bits_are_not_restored_and_existing_empty_targets_work() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let tool = src.join("tool");
    fs::write(&tool, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755)).unwrap();
    let keys = tmp.path().join("keys");
    let dir = tmp.path().join("store");
    backup(&keys, &src, &dir, Scheme::Xor, 2).unwrap();
    // The target exists and is empty (as a mount point would be).
    let out = tmp.path().join("mnt");
    fs::create_dir(&out).unwrap();
    restore(&keys, &dir, &out).unwrap();
    let mode = fs::metadata(restored_path(&out, &src).join("tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid must be stripped on restore");
    let names: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "only the restored tree, no staging left: {names:?}"
    );
}

#[test]
fn failing_positions_degrade_the_backup_within_tolerance_and_stop_it_beyond() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 8, 1);
    let keys = tmp.path().join("keys");

    // Position 1 cannot be written (a file where its directory should be).
    let dir = tmp.path().join("store");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("1"), b"not a directory").unwrap();
    let r = backup(&keys, &src, &dir, Scheme::Xor, 4).unwrap();
    assert_eq!(r.degraded_positions, vec![1]);
    let out = tmp.path().join("out");
    restore(&keys, &dir, &out).unwrap();
    assert_same_tree(&src, &restored_path(&out, &src));

    // Three of four positions failing is beyond what the code survives.
    let dir = tmp.path().join("store-bad");
    fs::create_dir_all(&dir).unwrap();
    for p in ["1", "2", "3"] {
        fs::write(dir.join(p), b"not a directory").unwrap();
    }
    let err = backup(&keys, &src, &dir, Scheme::Xor, 4)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("could not be stored at enough positions"),
        "{err}"
    );
    assert!(
        err.contains("position 1: writing fragments failed"),
        "{err}"
    );
    assert!(local::LocalStore::new(&dir).list().is_empty());
}
