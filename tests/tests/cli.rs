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
