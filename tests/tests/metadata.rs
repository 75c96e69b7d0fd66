//! Restores indistinguishable from the source (issue 18, docs/metadata.md):
//! a tree holding every kind of metadata, backed up and restored as root by
//! the real `bitdustctl`, compared by rsync's own `-aHAXS` comparison,
//! which knows owners, hard links, ACLs, xattrs, sparse files, specials and
//! nanosecond mtimes; atimes compared here (rsync does not).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;

use bitdust_tests::metatree::{
    BIG, ROOT_ONLY, atime_differences, atimes, blocks, build_tree, rsync_differences,
    same_sparse_file, text,
};
use bitdust_tests::{ctl, restored_path};

#[test]
#[ignore = "needs root (chown, mknod, setcap, security.* attributes) and rsync, acl, attr, libcap2-bin; tests/run.sh installs them and runs it"]
fn a_local_restore_as_root_is_what_rsync_calls_identical() {
    assert!(rustix::process::geteuid().is_root(), "{ROOT_ONLY}");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let paths = build_tree(&src);
    let before = atimes(&src, &paths);
    let keys = tmp.path().join("keys");
    let store = tmp.path().join("store");
    let (s, st) = (src.to_str().unwrap(), store.to_str().unwrap());

    let out = ctl_ok(&keys, &["local", "backup", s, "--to", st, "--json"]);
    let backup: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Backing up moves no file's or directory's atime (O_NOATIME).
    let moved = atime_differences(&src, &paths, &before);
    assert!(moved.is_empty(), "the backup moved atimes:\n{moved}");
    // The holes were not read: the 8 GiB file and the 10 MiB one hold
    // little more than 1 MiB of data between them.
    let read = backup["bytes_read"].as_u64().unwrap();
    assert!(
        read < 4 << 20,
        "the backup read {read} bytes: holes read as data"
    );
    assert_eq!(backup["hard_links"], 2, "{backup}");
    assert_eq!(backup["specials"], 2, "{backup}");

    // `ls` shows what the snapshot keeps.
    let out = ctl_ok(&keys, &["local", "ls", st, "--json"]);
    let ls: std::collections::HashMap<String, serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["path"].as_str().unwrap().to_owned(), v)
        })
        .collect();
    let at = |p: &str| &ls[&format!("{s}/{p}")];
    assert_eq!(at("b/fifo")["kind"], "fifo");
    assert_eq!(at("b/null-dev")["kind"], "char-device");
    assert_eq!(at("a/owned-1001")["uid"], 1001);
    assert_eq!(at("a/link-2")["link"], format!("{s}/a/link-1"));
    // All but the blocks holding its 29 bytes.
    assert!(at("b/big-8g")["hole_bytes"].as_u64().unwrap() > BIG - (1 << 20));
    let names = at("a/xattrs")["xattrs"].to_string();
    assert!(
        names.contains("user.color") && names.contains("user.binary"),
        "{names}"
    );
    assert!(
        at("a/ping-like")["xattrs"]
            .to_string()
            .contains("security.capability")
    );
    let out = ctl(&keys, &["local", "ls", st]);
    let listing = text(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.ends_with("/a/setuid-1002"))
        .unwrap();
    assert!(line.starts_with("-rwsr-xr-x 1002     1003 "), "{line}");
    let line = listing.lines().find(|l| l.ends_with("/b/fifo")).unwrap();
    assert!(line.starts_with("prw-r----- "), "{line}");

    let restored = tmp.path().join("restored");
    let out = ctl_ok(
        &keys,
        &[
            "local",
            "restore",
            st,
            "--to",
            restored.to_str().unwrap(),
            "--json",
        ],
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["warnings"], serde_json::json!([]), "{r}");
    assert_eq!(r["hard_links"], 2, "{r}");
    assert_eq!(r["specials"], 2, "{r}");
    let copy = restored_path(&restored, &src);

    // atimes first: rsync reads the files and moves them.
    let differ = atime_differences(&copy, &paths, &before);
    assert!(differ.is_empty(), "restored atimes differ:\n{differ}");
    let diff = rsync_differences(&src, &copy);
    assert!(diff.is_empty(), "rsync -aHAXS finds differences:\n{diff}");

    // The holes stayed holes.
    same_sparse_file(&src.join("b/big-8g"), &copy.join("b/big-8g"));
    assert!(
        blocks(&copy.join("b/big-8g")) < 1024,
        "the 8 GiB file was written dense"
    );
    assert!(
        blocks(&copy.join("b/sparse-10m")) <= blocks(&src.join("b/sparse-10m")) + 64,
        "the 10 MiB sparse file was written dense"
    );
}

#[test]
#[ignore = "needs root (chown, mknod, setcap, security.* attributes) and rsync, acl, attr, libcap2-bin; tests/run.sh installs them and runs it"]
fn a_partial_restore_holding_two_names_of_an_inode_links_them() {
    assert!(rustix::process::geteuid().is_root(), "{ROOT_ONLY}");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("a/1"), b"one inode").unwrap();
    fs::hard_link(src.join("a/1"), src.join("a/2")).unwrap();
    fs::hard_link(src.join("a/1"), src.join("b/3")).unwrap();
    let keys = tmp.path().join("keys");
    let store = tmp.path().join("store");
    let (s, st) = (src.to_str().unwrap(), store.to_str().unwrap());
    ctl_ok(&keys, &["local", "backup", s, "--to", st, "--quiet"]);

    // The first name (a/1) is left out; a/2 and b/3 come back as one inode
    // with the content.
    let restored = tmp.path().join("restored");
    ctl_ok(
        &keys,
        &[
            "local",
            "restore",
            st,
            "--to",
            restored.to_str().unwrap(),
            "--include",
            src.join("a/2").to_str().unwrap(),
            "--include",
            src.join("b").to_str().unwrap(),
        ],
    );
    let copy = restored_path(&restored, &src);
    assert!(!copy.join("a/1").exists());
    let (m2, m3) = (
        fs::metadata(copy.join("a/2")).unwrap(),
        fs::metadata(copy.join("b/3")).unwrap(),
    );
    assert_eq!(m2.ino(), m3.ino(), "a/2 and b/3 are not one inode");
    assert_eq!(m2.nlink(), 2);
    assert_eq!(fs::read(copy.join("b/3")).unwrap(), b"one inode");
}

/// `bitdustctl` with `args`, which must succeed.
fn ctl_ok(keys: &std::path::Path, args: &[&str]) -> std::process::Output {
    let out = ctl(keys, args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

/// `bitdustctl` as the user nobody, with the keys and store handed to it.
fn ctl_as_nobody(keys: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bitdust_tests::bin("bitdustctl"))
        .args(args)
        .env("BITDUST_KEYS", keys)
        .output()
        .unwrap()
}

fn chown_r(path: &std::path::Path, who: &str) {
    let out = std::process::Command::new("chown")
        .args(["-R", who])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "chown: {}", text(&out.stderr));
}

#[test]
#[ignore = "needs root (chown, mknod, setpriv); tests/run.sh runs it"]
fn a_restore_by_another_user_says_once_that_owners_stay_behind_and_refuses_a_device_node() {
    use std::os::unix::fs::PermissionsExt;
    assert!(rustix::process::geteuid().is_root(), "{ROOT_ONLY}");
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for name in ["d/a", "d/b", "c"] {
        fs::write(src.join(name), name).unwrap();
    }
    chown_r(&src, "1001:1001");
    let keys = tmp.path().join("keys");
    let store = tmp.path().join("store");
    let (s, st) = (src.to_str().unwrap(), store.to_str().unwrap());
    ctl_ok(&keys, &["local", "backup", s, "--to", st, "--quiet"]);
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    for p in [&keys, &store, &work] {
        chown_r(p, "65534:65534");
    }

    // Everything comes back, owned by nobody, with one warning that says so.
    let r1 = work.join("r1");
    let out = ctl_as_nobody(
        &keys,
        &[
            "local",
            "restore",
            st,
            "--to",
            r1.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.contains("belonged to other users") && w.contains("only root"),
        "{w}"
    );
    let copy = restored_path(&r1, &src);
    for name in ["d/a", "d/b", "c"] {
        let m = fs::metadata(copy.join(name)).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{name}");
        assert_eq!(fs::read(copy.join(name)).unwrap(), name.as_bytes());
    }

    // A device node: refused by name, and nothing shows at the target.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("d/null-dev"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    chown_r(&keys, "0:0");
    chown_r(&store, "0:0");
    ctl_ok(&keys, &["local", "backup", s, "--to", st, "--quiet"]);
    chown_r(&keys, "65534:65534");
    chown_r(&store, "65534:65534");
    let r2 = work.join("r2");
    let out = ctl_as_nobody(
        &keys,
        &["local", "restore", st, "--to", r2.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("null-dev") && err.contains("only root restores device nodes"),
        "{err}"
    );
    assert!(!r2.exists(), "a failed restore left {}", r2.display());
}

#[test]
fn a_file_that_grows_while_it_is_read_is_stored_as_read_flagged_and_named() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let log = src.join("growing.log");
    // Large enough that reading it takes many of the kernel's 4 ms time
    // ticks, so the appends below move its mtime while it is read.
    fs::write(&log, vec![b'x'; 96 << 20]).unwrap();
    fs::write(src.join("still.txt"), b"unchanged").unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f.write_all(b"another line\n").unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            n
        })
    };
    let keys = tmp.path().join("keys");
    let store = tmp.path().join("store");
    let (s, st) = (src.to_str().unwrap(), store.to_str().unwrap());
    let out = ctl(&keys, &["local", "backup", s, "--to", st, "--json"]);
    stop.store(true, Ordering::Relaxed);
    let appended = writer.join().unwrap();
    assert!(appended > 0);
    // Done with warnings: the file is in the snapshot, flagged and named.
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["changed_while_read"], 1, "{b}");
    assert_eq!(b["files"], 2, "{b}");
    let named = b["skipped"].as_array().unwrap();
    assert!(
        named.iter().any(|w| {
            let w = w.as_str().unwrap();
            w.contains("growing.log") && w.contains("changed while being read")
        }),
        "{b}"
    );
    // The next backup reads it again (not vouched for), and the restore
    // holds at least what it had.
    let restored = tmp.path().join("restored");
    ctl_ok(
        &keys,
        &["local", "restore", st, "--to", restored.to_str().unwrap()],
    );
    let got = fs::metadata(restored_path(&restored, &log)).unwrap().len();
    assert!(got >= 96 << 20, "{got}");
}
