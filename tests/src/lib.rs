//! Helpers for the integration tests: a generated source tree holding every
//! kind of entry a backup must keep, a bit-exact tree comparison, and the
//! path of the real binaries.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod fuzz;
pub mod metatree;

use filetime::FileTime;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The path of a workspace binary, built once per test process.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let root = workspace_root();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--bins"])
            .current_dir(&root)
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build --bins failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug").join(name)
}

/// Runs the real `bitdustctl` with `args` and the key directory `keys`.
pub fn ctl(keys: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("bitdustctl"))
        .args(args)
        .env("BITDUST_KEYS", keys)
        .output()
        .expect("running bitdustctl")
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds a tree under `root` with regular files (empty, text, random
/// binary), nested and empty directories, relative, absolute and dangling
/// symlinks, a name over 100 bytes, a path over 255 bytes, non-UTF-8 names,
/// assorted permissions and old mtimes. `scale` multiplies file sizes.
pub fn make_tree(root: &Path, seed: u64, scale: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    fs::create_dir_all(root).unwrap();
    fs::create_dir_all(root.join("docs/nested/deeper")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("docs/empty-too")).unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    let mut text = String::new();
    for i in 0..(2000 * scale) {
        text.push_str(&format!(
            "line {i}: the quick brown fox jumps over the lazy dog\n"
        ));
    }
    fs::write(root.join("docs/notes.txt"), &text).unwrap();
    let mut random = vec![0u8; 150_000 * scale + rng.random_range(0..5000)];
    rng.fill_bytes(&mut random);
    fs::write(root.join("docs/nested/random.bin"), &random).unwrap();
    fs::write(root.join("docs/nested/deeper/small.txt"), b"small\n").unwrap();
    let long_name = "n".repeat(140);
    fs::write(root.join(&long_name), b"long name").unwrap();
    let mut deep = root.join("deep");
    for i in 0..6 {
        deep.push(format!("{}-{i}", "d".repeat(50)));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("file-at-the-bottom.txt"), b"deep").unwrap();
    let bad = OsStr::from_bytes(b"non-utf8-\xff\xfe-name");
    fs::write(root.join(bad), b"latin1").unwrap();
    fs::create_dir_all(root.join(OsStr::from_bytes(b"dir-\xe9t\xe9"))).unwrap();
    symlink("docs/notes.txt", root.join("link-relative")).unwrap();
    symlink("/etc/hostname", root.join("link-absolute")).unwrap();
    symlink("does/not/exist", root.join("link-dangling")).unwrap();
    symlink(
        format!("{}/{}", "x".repeat(120), "y".repeat(40)),
        root.join("link-long-target"),
    )
    .unwrap();
    let script = root.join("docs/run.sh");
    fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let secret = root.join("docs/secret.txt");
    fs::write(&secret, b"private").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let ro = root.join("docs/readonly.txt");
    fs::write(&ro, b"read only").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(
        root.join("docs/empty-too"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    // Old, distinct mtimes on everything, directories last.
    let mut all: Vec<PathBuf> = walk(root)
        .into_keys()
        .map(|k| root.join(OsStr::from_bytes(&k)))
        .collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        let t = FileTime::from_unix_time(1_500_000_000 + i as i64 * 97, 0);
        if fs::symlink_metadata(p).unwrap().file_type().is_symlink() {
            filetime::set_symlink_file_times(p, t, t).unwrap();
        } else {
            filetime::set_file_mtime(p, t).unwrap();
        }
    }
}

/// What a tree entry is, for comparison.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        mode: u32,
        mtime: i64,
        hash: [u8; 32],
        len: u64,
    },
    Dir {
        mode: u32,
        mtime: i64,
    },
    Symlink {
        target: Vec<u8>,
        mtime: i64,
    },
}

/// Every entry below `root` by its relative path (raw bytes), read as a
/// backup reads (directories listed and files read with `O_NOATIME`): a
/// test that compares a tree and backs it up again finds it unchanged,
/// atimes included.
pub fn walk(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Entry>) {
        for name in bitdust_pipeline::meta::list_dir(dir).unwrap() {
            let p = dir.join(name);
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            if ft.is_symlink() {
                let target = fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec();
                out.insert(
                    rel,
                    Entry::Symlink {
                        target,
                        mtime: m.mtime(),
                    },
                );
            } else if ft.is_dir() {
                out.insert(
                    rel,
                    Entry::Dir {
                        mode: m.mode() & 0o7777,
                        mtime: m.mtime(),
                    },
                );
                go(root, &p, out);
            } else {
                let mut data = Vec::new();
                std::io::Read::read_to_end(
                    &mut bitdust_pipeline::meta::open_for_reading(&p).unwrap(),
                    &mut data,
                )
                .unwrap();
                out.insert(
                    rel,
                    Entry::File {
                        mode: m.mode() & 0o7777,
                        mtime: m.mtime(),
                        hash: sha(&data),
                        len: data.len() as u64,
                    },
                );
            }
        }
    }
    go(root, root, &mut out);
    out
}

fn sha(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// Asserts that `restored` is a bit-exact copy of `original`.
pub fn assert_same_tree(original: &Path, restored: &Path) {
    let a = walk(original);
    let b = walk(restored);
    let names = |m: &BTreeMap<Vec<u8>, Entry>| -> Vec<String> {
        m.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    assert_eq!(names(&a), names(&b), "the restored tree has other entries");
    for (k, v) in &a {
        assert_eq!(
            Some(v),
            b.get(k),
            "entry {} differs",
            String::from_utf8_lossy(k)
        );
    }
}

/// The directory a backup of `src` lands in below a restore target
/// (entries are stored under their absolute path without the leading `/`).
pub fn restored_path(out: &Path, src: &Path) -> PathBuf {
    out.join(src.strip_prefix("/").unwrap())
}

/// `n` QUIC handshakes to `target` that start and then go silent, each from
/// its own UDP socket on `from` (a loopback address, so per-address limits
/// can be told apart from the test's real clients on 127.0.0.1). Each
/// ClientHello is a real one: a QUIC client dials a socket of ours, which
/// keeps its first datagram (the Initial) and sends it on; nothing after it
/// is ever answered. Keep the returned sockets alive for as long as the
/// handshakes should stay open.
pub async fn silent_client_hellos(
    target: std::net::SocketAddr,
    from: std::net::IpAddr,
    alpn: &[u8],
    n: usize,
) -> Vec<tokio::net::UdpSocket> {
    use std::time::Duration;
    let identity = bitdust_crypto::Identity::generate();
    let dialer =
        bitdust_net::Endpoint::bind(&identity, std::net::SocketAddr::new(from, 0), alpn, false)
            .unwrap();
    let trap = tokio::net::UdpSocket::bind((from, 0)).await.unwrap();
    let trap_addr = trap.local_addr().unwrap();
    let mut silent = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut buf = vec![0u8; 65536];
    while silent.len() < n {
        let d = dialer.clone();
        let dial = tokio::spawn(async move { d.connect(trap_addr, None).await });
        // Wait for an Initial that starts a handshake not sent yet: a long
        // header packet padded to at least 1200 bytes (RFC 9000, 14.1)
        // whose destination connection id is new. Retransmissions and
        // closes of earlier dials are skipped.
        let initial = loop {
            let len = tokio::time::timeout(Duration::from_secs(5), trap.recv(&mut buf))
                .await
                .expect("the QUIC client sent its Initial")
                .unwrap();
            let p = &buf[..len];
            if len < 1200 || p[0] & 0x80 == 0 {
                continue;
            }
            let dcid_len = p[5] as usize;
            if seen.insert(p[6..6 + dcid_len].to_vec()) {
                break p.to_vec();
            }
        };
        dial.abort();
        let s = tokio::net::UdpSocket::bind((from, 0)).await.unwrap();
        s.send_to(&initial, target).await.unwrap();
        silent.push(s);
    }
    silent
}
