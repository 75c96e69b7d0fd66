//! `kill -9` in the middle of a backup: the interrupted snapshot never shows
//! up (its root was never written), earlier snapshots still restore
//! bit-exact, and the next backup succeeds, reusing the packs the killed
//! one got out. And `kill -9` in the middle of a prune: the kept snapshots
//! restore after every kill, and the prune that finishes leaves `check`
//! clean.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bitdust_tests::{assert_same_tree, bin, ctl, make_tree, restored_path};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn killed_backup_leaves_earlier_versions_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 21, 1);
    let keys = tmp.path().join("keys");
    let store = tmp.path().join("store");
    let (s, st) = (src.to_str().unwrap(), store.to_str().unwrap());
    let run = |args: &[&str]| ctl(&keys, args);
    let out = run(&["local", "backup", s, "--to", st, "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshot = bitdust_tests::walk(&src);

    // Grow the tree so the next backup takes a while, then kill it mid-way.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut buf = vec![0u8; 1 << 20];
    let mut f = fs::File::create(src.join("big.bin")).unwrap();
    for _ in 0..160 {
        rng.fill_bytes(&mut buf);
        f.write_all(&buf).unwrap();
    }
    drop(f);
    let mut killed = false;
    for delay_ms in [400u64, 150, 50] {
        let mut child = Command::new(bin("bitdustctl"))
            .args([
                "local",
                "backup",
                s,
                "--to",
                st,
                "--quiet",
                "--block-size",
                "1M",
            ])
            .env("BITDUST_KEYS", &keys)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if !status.success() {
            killed = true;
            break;
        }
    }
    assert!(
        killed,
        "the backup always finished before it could be killed; grow the tree"
    );

    let listed = bitdust_pipeline::local::LocalStore::new(&store).list();
    assert_eq!(
        listed.len(),
        1,
        "an interrupted version is listed as complete: {listed:?}"
    );
    // The interrupted snapshot left packs behind, and no root.
    let backup_dir = fs::read_dir(store.join("0"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(!backup_dir.join("2").exists());
    let packs_after_kill = fs::read_dir(backup_dir.join("0")).unwrap().count();

    let out_dir = tmp.path().join("out");
    let out = run(&["local", "restore", st, "--to", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = bitdust_tests::walk(&restored_path(&out_dir, &src));
    assert_eq!(restored, snapshot, "version 1 no longer restores bit-exact");

    let out = run(&["local", "backup", s, "--to", st, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["version"], 2, "{j}");
    // The packs the killed run stored are reused: what this run adds is
    // the tree's new content less what they hold.
    let added = j["added_bytes"].as_u64().unwrap();
    let packs_now = fs::read_dir(backup_dir.join("0")).unwrap().count();
    assert!(packs_now >= packs_after_kill);
    assert!(added <= 161 << 20, "{j}");
    let out_dir = tmp.path().join("out3");
    let out = run(&["local", "restore", st, "--to", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&src, &restored_path(&out_dir, &src));
}

/// `kill -9` of `bitdustctl local prune` (repacking included) at growing
/// delays: after each kill the kept snapshots restore bit-exact, and the
/// run that finishes leaves `check` clean.
#[test]
fn killed_prune_never_breaks_a_kept_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 23, 1);
    let keys = tmp.path().join("keys");
    let store = tmp.path().join("store");
    let (s, st) = (src.to_str().unwrap(), store.to_str().unwrap());
    let run = |args: &[&str]| {
        let out = ctl(&keys, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Eight snapshots in small packs, each with a file of its own that
    // stays and one that the next replaces: many packs, partly used.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut kept = Vec::new();
    for n in 0..8 {
        let mut buf = vec![0u8; 96 << 10];
        rng.fill_bytes(&mut buf);
        fs::write(src.join(format!("stays{n}.bin")), &buf).unwrap();
        let mut buf = vec![0u8; 512 << 10];
        rng.fill_bytes(&mut buf);
        fs::write(src.join("passing.bin"), &buf).unwrap();
        run(&[
            "local",
            "backup",
            s,
            "--to",
            st,
            "--quiet",
            "--block-size",
            "64K",
        ]);
        if n >= 6 {
            kept.push(bitdust_tests::walk(&src));
        }
    }
    run(&["local", "forget", st, "--keep-last", "2", "--quiet"]);
    let id = bitdust_pipeline::local::LocalStore::new(&store).list()[0].backup_id;
    let prune = [
        "local",
        "prune",
        st,
        "--grace",
        "0h",
        "--max-unused",
        "0%",
        "--quiet",
    ];
    let mut kills = 0;
    for delay_ms in (0..200).map(|i| 2 + i * 2) {
        let mut child = Command::new(bin("bitdustctl"))
            .args(prune)
            .env("BITDUST_KEYS", &keys)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        if child.wait().unwrap().success() {
            break;
        }
        kills += 1;
        for (v, want) in [(7, &kept[0]), (8, &kept[1])] {
            let out = tmp.path().join(format!("out-{kills}-{v}"));
            run(&[
                "local",
                "restore",
                st,
                &format!("{id}@{v}"),
                "--to",
                out.to_str().unwrap(),
                "--quiet",
            ]);
            assert_eq!(
                &bitdust_tests::walk(&restored_path(&out, &src)),
                want,
                "snapshot {v} after kill {kills} at {delay_ms} ms"
            );
            fs::remove_dir_all(&out).unwrap();
        }
    }
    eprintln!("the prune was killed {kills} times before one finished");
    assert!(
        kills > 0,
        "the prune always finished before it could be killed"
    );
    run(&prune);
    let out = ctl(
        &keys,
        &["local", "check", st, "--read-data-subset", "100%", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["errors"], serde_json::json!([]), "{c}");
    assert_eq!(c["damaged_packs"], 0, "{c}");
    let out = ctl(
        &keys,
        &[
            "local",
            "prune",
            st,
            "--grace",
            "0h",
            "--max-unused",
            "0%",
            "--json",
        ],
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p[0]["packs_condemned"], 0, "{p}");
    assert_eq!(p[0]["packs_repacked"], 0, "{p}");
}
