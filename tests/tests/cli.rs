//! The real `bitdustctl` binary: exit statuses, `--json`, `--quiet`, clear
//! errors, key handling.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use bitdust_tests::{assert_same_tree, ctl, make_tree, restored_path};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn backup_verify_restore_with_json_and_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 11, 1);
    let keys = tmp.path().join("keys");
    let store = tmp.path().join("store");
    let (s, st) = (src.to_str().unwrap(), store.to_str().unwrap());

    let out = ctl(
        &keys,
        &[
            "local",
            "backup",
            s,
            "--to",
            st,
            "--suppliers",
            "13",
            "--scheme",
            "rs",
            "--quiet",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "--quiet printed something"
    );
    for f in ["identity.key", "master.key"] {
        let mode = fs::metadata(keys.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }

    let out = ctl(
        &keys,
        &[
            "local",
            "backup",
            s,
            "--to",
            st,
            "--suppliers",
            "13",
            "--scheme",
            "rs",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["version"], 2);
    assert_eq!(j["suppliers"], 13);
    assert_eq!(j["scheme"], "rs");
    let id = j["backup_id"].as_str().unwrap().to_owned();

    let out = ctl(&keys, &["local", "list", st, "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 2);

    // Lose 6 of 13 positions: RS with k = 7 still restores.
    for p in [0, 2, 4, 6, 8, 10] {
        fs::remove_dir_all(store.join(p.to_string())).unwrap();
    }
    let out = ctl(
        &keys,
        &["local", "verify", st, &format!("{id}@2"), "--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "degraded backups verify with status 4: {}",
        text(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["min_margin"], 0);
    assert!(j["unrecoverable_blocks"].as_array().unwrap().is_empty());

    let restored = tmp.path().join("restored");
    let out = ctl(
        &keys,
        &[
            "local",
            "restore",
            st,
            &id,
            "--to",
            restored.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["version"], 2);
    assert_same_tree(&src, &restored_path(&restored, &src));

    // One more position lost: verify and restore fail with status 1 and say which packs.
    fs::remove_dir_all(store.join("12")).unwrap();
    let out = ctl(&keys, &["local", "verify", st, &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot be recovered"),
        "{}",
        text(&out.stderr)
    );
    let again = tmp.path().join("again");
    let out = ctl(
        &keys,
        &["local", "restore", st, &id, "--to", again.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot be recovered") && err.contains("pack "),
        "{err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "the error is one line: {err}"
    );
    assert!(!again.exists());
}

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    for (args, needle) in [
        (
            &[
                "local",
                "backup",
                "/etc/hostname",
                "--to",
                "/tmp/x",
                "--suppliers",
                "5",
            ][..],
            "2, 4, 7, 13, 18, 26, 64",
        ),
        (
            &[
                "local",
                "backup",
                "/etc/hostname",
                "--to",
                "/tmp/x",
                "--scheme",
                "raid",
            ][..],
            "use xor or rs",
        ),
        (
            &[
                "local",
                "backup",
                "/etc/hostname",
                "--to",
                "/tmp/x",
                "--block-size",
                "4Q",
            ][..],
            "not a size",
        ),
        (
            &["local", "restore", "/tmp/x", "nothex", "--to", "/tmp/y"][..],
            "not a backup id",
        ),
        (&["local", "backup", "--to", "/tmp/x"][..], "PATH"),
        (
            &["local", "check", "/tmp/x", "--read-data-subset", "150%"][..],
            "between 0% and 100%",
        ),
        (
            &["local", "check", "/tmp/x", "--read-data-subset", "8/7"][..],
            "the part is from 1 to 7",
        ),
        (
            &["local", "forget", "/tmp/x", "--keep-within", "3x"][..],
            "is not a span like 1y2m3d4h",
        ),
        (
            &["local", "prune", "/tmp/x", "--grace", "soon"][..],
            "is not a span like 1y2m3d4h",
        ),
        (
            &["local", "diff", "/tmp/x", "nothex@1"][..],
            "not a backup id",
        ),
        (&["frobnicate"][..], "frobnicate"),
    ] {
        let out = ctl(&keys, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn operational_errors_are_one_clear_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 12, 1);
    let keys = tmp.path().join("keys");
    let store = tmp.path().join("store");
    let (s, st) = (src.to_str().unwrap(), store.to_str().unwrap());

    // Missing source.
    let out = ctl(&keys, &["local", "backup", "/nonexistent/path", "--to", st]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/nonexistent/path"),
        "{}",
        text(&out.stderr)
    );

    let out = ctl(&keys, &["local", "backup", s, "--to", st, "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Restoring into a non-empty directory is refused and touches nothing.
    let busy = tmp.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("keep.txt"), b"mine").unwrap();
    let out = ctl(
        &keys,
        &["local", "restore", st, "--to", busy.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not empty"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fs::read(busy.join("keep.txt")).unwrap(), b"mine");

    // A group-readable secret key is refused, with the fix named.
    fs::set_permissions(keys.join("identity.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let out = ctl(&keys, &["local", "backup", s, "--to", st]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out.stderr)
    );
    fs::set_permissions(keys.join("identity.key"), fs::Permissions::from_mode(0o600)).unwrap();

    // Not a backup directory.
    let out = ctl(
        &keys,
        &[
            "local",
            "restore",
            tmp.path().to_str().unwrap(),
            "--to",
            "/tmp/never",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("holds no complete backup"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn backups_need_only_public_keys_so_the_master_secret_can_stay_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 13, 1);
    let keys = tmp.path().join("keys");
    let store = tmp.path().join("store");
    let (s, st) = (src.to_str().unwrap(), store.to_str().unwrap());
    let out = ctl(&keys, &["local", "backup", s, "--to", st, "--quiet"]);
    assert!(out.status.success());

    let offline = tmp.path().join("offline-master.key");
    fs::rename(keys.join("master.key"), &offline).unwrap();
    fs::write(
        src.join("docs/later.txt"),
        b"made while the master key was offline",
    )
    .unwrap();
    let out = ctl(&keys, &["local", "backup", s, "--to", st, "--quiet"]);
    assert!(
        out.status.success(),
        "backup without master.key: {}",
        text(&out.stderr)
    );
    let out = ctl(&keys, &["local", "verify", st, "--quiet"]);
    assert!(
        out.status.success(),
        "verify needs no secret: {}",
        text(&out.stderr)
    );

    // list, stats, check, forget and prune work with the write-only key
    // set; what reads contents or names needs master.key and says so.
    let out = ctl(&keys, &["local", "list", st, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let l: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l[1]["paths"], serde_json::Value::Null, "{l}");
    for args in [
        &["local", "stats", st, "--quiet"][..],
        &["local", "check", st, "--quiet"],
        &[
            "local",
            "forget",
            st,
            "--keep-last",
            "5",
            "--prune",
            "--quiet",
        ],
    ] {
        let out = ctl(&keys, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    let out = ctl(&keys, &["local", "check", st, "--json"]);
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["metadata_checked"], false, "{c}");
    for args in [
        &["local", "ls", st][..],
        &["local", "check", st, "--read-data-subset", "10%"],
    ] {
        let out = ctl(&keys, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("master secret key"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    let restored = tmp.path().join("restored");
    let out = ctl(
        &keys,
        &["local", "restore", st, "--to", restored.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("master secret key"),
        "{}",
        text(&out.stderr)
    );

    fs::rename(&offline, keys.join("master.key")).unwrap();
    let out = ctl(
        &keys,
        &["local", "restore", st, "--to", restored.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_same_tree(&src, &restored_path(&restored, &src));
}

/// Lines of JSON objects (the streaming output of `ls` and `diff`).
fn json_lines(b: &[u8]) -> Vec<serde_json::Value> {
    text(b)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Fragment files of every pack, at every position.
fn pack_files(store: &std::path::Path) -> usize {
    let mut n = 0;
    for p in fs::read_dir(store).unwrap().flatten() {
        for b in fs::read_dir(p.path()).into_iter().flatten().flatten() {
            n += fs::read_dir(b.path().join("0"))
                .into_iter()
                .flatten()
                .count();
        }
    }
    n
}

#[test]
fn snapshot_commands_list_ls_diff_stats_check_forget_and_prune() {
    use rand::{RngCore, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 17, 1);
    let keys = tmp.path().join("keys");
    let store = tmp.path().join("store");
    let (s, st) = (src.to_str().unwrap(), store.to_str().unwrap());
    let run = |args: &[&str]| {
        let out = ctl(&keys, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        out
    };
    let json =
        |args: &[&str]| -> serde_json::Value { serde_json::from_slice(&run(args).stdout).unwrap() };
    run(&["local", "backup", s, "--to", st, "--quiet"]);
    // Snapshot 2 adds 3 MiB of random data, snapshot 3 drops it again and
    // changes a small file.
    let mut big = vec![0u8; 3 << 20];
    rand_chacha::ChaCha8Rng::seed_from_u64(5).fill_bytes(&mut big);
    fs::write(src.join("big.bin"), &big).unwrap();
    run(&["local", "backup", s, "--to", st, "--quiet"]);
    fs::remove_file(src.join("big.bin")).unwrap();
    fs::write(src.join("docs/changed.txt"), b"new words").unwrap();
    run(&["local", "backup", s, "--to", st, "--quiet"]);

    // list: ID@VERSION kept, with time, paths, size and what each added.
    let l = json(&["local", "list", st, "--json"]);
    let l = l.as_array().unwrap();
    assert_eq!(l.len(), 3, "{l:?}");
    let id = l[0]["backup_id"].as_str().unwrap().to_string();
    for (i, v) in l.iter().enumerate() {
        assert_eq!(v["version"], i as u64 + 1);
        assert_eq!(v["paths"], serde_json::json!([s]));
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
    }
    assert!(l[1]["added_bytes"].as_u64().unwrap() >= 3 << 20, "{l:?}");
    assert!(l[2]["added_bytes"].as_u64().unwrap() < 64 << 10, "{l:?}");
    assert_eq!(
        l[1]["size_bytes"].as_u64().unwrap(),
        l[0]["size_bytes"].as_u64().unwrap() + (3 << 20)
    );
    let text_list = text(&run(&["local", "list", st]).stdout);
    assert!(text_list.contains(&format!("{id}@2")), "{text_list}");

    // ls: every entry, or one subtree.
    let at = |v: u32| format!("{id}@{v}");
    let all = json_lines(&run(&["local", "ls", st, &at(3), "--json"]).stdout);
    let want = bitdust_tests::walk(&src);
    assert_eq!(all.len(), want.len() + 1, "the root and every entry");
    assert!(
        all.iter()
            .any(|e| e["path"] == format!("{s}/docs/changed.txt"))
    );
    let docs =
        json_lines(&run(&["local", "ls", st, &at(3), &format!("{s}/docs"), "--json"]).stdout);
    assert!(!docs.is_empty());
    assert!(docs.iter().all(|e| {
        e["path"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{s}/docs"))
    }));
    let one =
        json_lines(&run(&["local", "ls", st, &at(2), &format!("{s}/big.bin"), "--json"]).stdout);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["size"], 3 << 20);
    assert_eq!(one[0]["kind"], "file");

    // diff: big.bin removed, changed.txt added, the root dir modified.
    let d = json_lines(&run(&["local", "diff", st, &at(2), &at(3), "--json"]).stdout);
    let (changes, summary) = d.split_at(d.len() - 1);
    assert!(changes.contains(&serde_json::json!({"change": "-", "path": format!("{s}/big.bin")})));
    assert!(
        changes
            .contains(&serde_json::json!({"change": "+", "path": format!("{s}/docs/changed.txt")}))
    );
    assert_eq!(summary[0]["removed"], 1, "{summary:?}");
    assert_eq!(summary[0]["added"], 1, "{summary:?}");
    assert!(summary[0]["unchanged"].as_u64().unwrap() > 20);

    // stats: three snapshots share most of their content.
    let st1 = json(&["local", "stats", st, "--json"]);
    assert_eq!(st1["snapshots"], 3);
    let sizes: Vec<u64> = l
        .iter()
        .map(|v| v["size_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(st1["logical_bytes"], sizes.iter().sum::<u64>(), "{st1}");
    // Stored once: at most snapshot 2's content and snapshot 3's change.
    assert!(
        st1["unique_bytes"].as_u64().unwrap() < sizes[1] + (64 << 10),
        "{st1} {sizes:?}"
    );
    assert!(st1["dedup_ratio"].as_f64().unwrap() > 1.1, "{st1}");
    assert!(
        st1["stored_bytes"].as_u64().unwrap() > st1["packed_bytes"].as_u64().unwrap(),
        "{st1}"
    );

    // check, reading every pack back.
    let c = json(&["local", "check", st, "--read-data-subset", "100%", "--json"]);
    assert_eq!(c["errors"], serde_json::json!([]), "{c}");
    assert_eq!(c["metadata_checked"], true);
    assert_eq!(c["packs_read"], c["packs"], "{c}");
    assert!(c["chunks_verified"].as_u64().unwrap() > 0);

    // forget: a policy and no policy.
    let out = ctl(&keys, &["local", "forget", st]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--keep-last"),
        "{}",
        text(&out.stderr)
    );
    let dry = json(&[
        "local",
        "forget",
        st,
        "--keep-last",
        "1",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(dry["forgotten"], serde_json::json!([2, 1]), "{dry}");
    assert_eq!(
        json(&["local", "list", st, "--json"])
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Position 6 is away (an unplugged disk) while forget --prune runs:
    // the others delete, it is asked again by the next prune.
    let before = pack_files(&store);
    let away = tmp.path().join("away6");
    fs::rename(store.join("6"), &away).unwrap();
    let out = ctl(
        &keys,
        &[
            "local",
            "forget",
            st,
            "--keep-last",
            "1",
            "--prune",
            "--grace",
            "0h",
            "--max-unused",
            "0%",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        !store.join("6").exists(),
        "the prune wrote beneath the missing position's mount point"
    );
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        f["prune"][0]["repack_skipped"]
            .as_str()
            .unwrap()
            .contains("position 6 is missing"),
        "{f}"
    );
    assert_eq!(f["forgotten"], serde_json::json!([2, 1]), "{f}");
    let p = &f["prune"][0];
    assert!(p["packs_condemned"].as_u64().unwrap() >= 1, "{f}");
    assert_eq!(p["packs_deleted"], 0, "{f}");
    assert_eq!(p["packs_pending"], p["packs_condemned"], "{f}");
    assert!(pack_files(&store) < before);
    let restored = tmp.path().join("r-away");
    run(&[
        "local",
        "restore",
        st,
        "--to",
        restored.to_str().unwrap(),
        "--quiet",
    ]);
    assert_same_tree(&src, &restored_path(&restored, &src));
    fs::rename(&away, store.join("6")).unwrap();
    let away_files = fs::read_dir(store.join("6").join(&id).join("0"))
        .unwrap()
        .count();
    let pr = json(&["local", "prune", st, "--json"]);
    assert_eq!(pr[0]["packs_pending"], 0, "{pr}");
    assert_eq!(pr[0]["packs_deleted"], p["packs_condemned"], "{pr}");
    assert!(pr[0]["bytes_freed"].as_u64().unwrap() >= 3 << 20, "{pr}");
    assert!(
        fs::read_dir(store.join("6").join(&id).join("0"))
            .unwrap()
            .count()
            < away_files,
        "the position that was away still holds the pruned packs"
    );
    let l = json(&["local", "list", st, "--json"]);
    assert_eq!(l.as_array().unwrap().len(), 1);
    assert_eq!(l[0]["version"], 3);
    let restored = tmp.path().join("r3");
    run(&[
        "local",
        "restore",
        st,
        "--to",
        restored.to_str().unwrap(),
        "--quiet",
    ]);
    assert_same_tree(&src, &restored_path(&restored, &src));
    let c = json(&["local", "check", st, "--read-data-subset", "1/1", "--json"]);
    assert_eq!(c["errors"], serde_json::json!([]), "{c}");
    assert_eq!(c["damaged_packs"], 0, "{c}");
    let st2 = json(&["local", "stats", st, "--json"]);
    assert!(
        st2["stored_bytes"].as_u64().unwrap() + (5 << 20) < st1["stored_bytes"].as_u64().unwrap(),
        "prune freed less than big.bin's share: {st1} -> {st2}"
    );

    // Four positions gone: more than xor over 7 tolerates; check says so.
    for p in 0..4 {
        fs::rename(
            store.join(p.to_string()),
            tmp.path().join(format!("gone{p}")),
        )
        .unwrap();
    }
    let out = ctl(&keys, &["local", "check", st, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !c["unrecoverable_packs"].as_array().unwrap().is_empty(),
        "{c}"
    );

    // A backup while a position's disk is not mounted writes nothing
    // beneath its mount point: the position failed, the run says so.
    for p in 0..4 {
        fs::rename(
            tmp.path().join(format!("gone{p}")),
            store.join(p.to_string()),
        )
        .unwrap();
    }
    fs::rename(store.join("6"), &away).unwrap();
    fs::write(src.join("docs/later.txt"), b"while 6 was away").unwrap();
    let out = ctl(&keys, &["local", "backup", s, "--to", st, "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["degraded_positions"], serde_json::json!([6]), "{b}");
    assert!(!store.join("6").exists());
}
