//! The tree of issue 18 (docs/metadata.md): every kind of metadata a
//! restore must give back, and the checks that compare a restore with it
//! (rsync's `-aHAXS` comparison; atimes and sparse files by hand). Needs
//! root and Debian's rsync, acl, attr and libcap2-bin.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use filetime::FileTime;

/// Why a test of this tree is `#[ignore]`d outside tests/run.sh.
pub const ROOT_ONLY: &str = "needs root (chown, mknod, setcap, security.* attributes) and rsync, acl, attr, libcap2-bin; tests/run.sh installs them and runs it";

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a Debian tool; a failure names the feature the filesystem lacks.
fn tool(feature: &str, prog: &str, args: &[&OsStr]) {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog} is missing ({e}); tests/run.sh installs it"));
    assert!(
        out.status.success(),
        "the test directory's filesystem or this machine lacks {feature}: {prog} {:?}: {}",
        args,
        text(&out.stderr)
    );
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A time with nanoseconds, different per use.
fn t(secs: i64, nanos: u32) -> FileTime {
    FileTime::from_unix_time(secs, nanos)
}

/// The longest path the kernel takes in one call (PATH_MAX less its NUL).
pub const LONGEST_PATH: usize = 4_095;

/// `lstat` of `rel` under `root`, however long the two together: through
/// a directory descriptor per component.
pub fn lstat_under(root: &Path, rel: &Path) -> rustix::fs::Stat {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(root, flags, Mode::empty()).unwrap();
    let comps: Vec<&OsStr> = rel.iter().collect();
    let Some((name, parents)) = comps.split_last() else {
        return rustix::fs::statat(&dir, ".", AtFlags::SYMLINK_NOFOLLOW).unwrap();
    };
    for c in parents {
        dir = rustix::fs::openat(&dir, *c, flags, Mode::empty()).unwrap();
    }
    rustix::fs::statat(&dir, *name, AtFlags::SYMLINK_NOFOLLOW).unwrap()
}

/// The big sparse file's size: over 8 GiB.
pub const BIG: u64 = (8 << 30) + (1 << 20);

/// Builds the tree of the issue under `src` (which must not exist);
/// returns every path in it, relative, `src` itself first.
pub fn build_tree(src: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(src.join("a/deep")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::create_dir_all(src.join("acl-dir")).unwrap();
    fs::create_dir_all(src.join("shared")).unwrap();

    // Plain, empty and non-UTF-8 names.
    fs::write(src.join("a/plain.txt"), b"plain words\n").unwrap();
    fs::write(src.join("a/empty"), b"").unwrap();
    fs::write(
        src.join(OsStr::from_bytes(b"b/caf\xe9-latin1")),
        b"not utf-8",
    )
    .unwrap();

    // Owned by two other users (numeric ids no name has here), one of them
    // setuid, and a setgid directory.
    fs::write(src.join("a/owned-1001"), b"belongs to 1001").unwrap();
    fs::write(src.join("a/setuid-1002"), b"#!/bin/sh\n").unwrap();
    fs::write(src.join("shared/owned-1002"), b"belongs to 1002").unwrap();
    for (p, uid, gid) in [
        ("a/owned-1001", 1001, 1001),
        ("a/setuid-1002", 1002, 1003),
        ("shared/owned-1002", 1002, 1003),
        ("shared", 1002, 1003),
    ] {
        rustix::fs::chown(
            src.join(p),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .unwrap();
    }
    fs::set_permissions(
        src.join("a/setuid-1002"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    fs::set_permissions(
        src.join("shared"),
        std::os::unix::fs::PermissionsExt::from_mode(0o2775),
    )
    .unwrap();

    // Three names of one inode in two directories.
    fs::write(src.join("a/link-1"), b"one inode, three names").unwrap();
    fs::hard_link(src.join("a/link-1"), src.join("a/link-2")).unwrap();
    fs::hard_link(src.join("a/link-1"), src.join("b/link-3")).unwrap();

    // User xattrs, an ACL with a named user, a default ACL on a directory.
    let x = src.join("a/xattrs");
    fs::write(&x, b"attributes").unwrap();
    let xs = x.as_os_str();
    tool(
        "user xattrs",
        "setfattr",
        &[os("-n"), os("user.color"), os("-v"), os("blue"), xs],
    );
    tool("user xattrs", "setfattr", &[os("-n"), os("user.empty"), xs]);
    tool(
        "user xattrs",
        "setfattr",
        &[os("-n"), os("user.binary"), os("-v"), os("0x00ff10"), xs],
    );
    let acl = src.join("a/acl-file");
    fs::write(&acl, b"acl").unwrap();
    tool(
        "POSIX ACLs",
        "setfacl",
        &[os("-m"), os("u:1001:rw,g:1003:r"), acl.as_os_str()],
    );
    tool(
        "default POSIX ACLs",
        "setfacl",
        &[
            os("-d"),
            os("-m"),
            os("u:1002:rwx"),
            src.join("acl-dir").as_os_str(),
        ],
    );
    // A file made inside it inherits the default ACL, as on the source.
    fs::write(src.join("acl-dir/inherits"), b"inherited acl").unwrap();

    // A file with a capability, as `ping` has.
    let cap = src.join("a/ping-like");
    fs::write(&cap, b"\x7fELF not really").unwrap();
    tool(
        "file capabilities",
        "setcap",
        &[os("cap_net_raw+ep"), cap.as_os_str()],
    );

    // Sparse: 10 MiB holding 1 MiB in its middle, and one over 8 GiB.
    let sparse = fs::File::create(src.join("b/sparse-10m")).unwrap();
    sparse.set_len(10 << 20).unwrap();
    sparse.write_all_at(&vec![0x5a; 1 << 20], 4 << 20).unwrap();
    let big = fs::File::create(src.join("b/big-8g")).unwrap();
    big.set_len(BIG).unwrap();
    big.write_all_at(b"the first bytes", 0).unwrap();
    big.write_all_at(b"the last bytes", BIG - 14).unwrap();

    // A FIFO and a device node (the numbers of /dev/null).
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("b/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("b/null-dev"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();

    // A symlink, and a file whose absolute path is 4,095 bytes, the most a
    // path may have (restored under a target, it is longer).
    std::os::unix::fs::symlink("plain.txt", src.join("a/sym")).unwrap();
    let mut deep = src.join("a/deep");
    let name = loop {
        let left = LONGEST_PATH - deep.as_os_str().len() - 1;
        if left <= 200 {
            break "f".repeat(left);
        }
        deep.push("d".repeat(200.min(left - 2)));
    };
    fs::create_dir_all(&deep).unwrap();
    assert_eq!(deep.join(&name).as_os_str().len(), LONGEST_PATH);
    fs::write(deep.join(name), b"at the bottom").unwrap();

    // Nanosecond mtimes and atimes everywhere, directories last (each
    // entry's own times, distinct).
    let mut all: Vec<PathBuf> = walk_all(src);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        let i = i as i64;
        let atime = t(
            1_600_000_000 + i * 7,
            (i as u32 * 123_457) % 1_000_000_000 + 1,
        );
        let mtime = t(
            1_500_000_000 + i * 11,
            (i as u32 * 987_653) % 1_000_000_000 + 3,
        );
        filetime::set_symlink_file_times(p, atime, mtime).unwrap();
    }
    // Listed before the times were set: from here on, nothing reads a
    // directory of the tree (reading one moves its atime).
    let mut rel: Vec<PathBuf> = all
        .iter()
        .map(|p| p.strip_prefix(src).unwrap().to_path_buf())
        .collect();
    rel.sort();
    rel
}

/// Every path under `root` (itself included), not following symlinks.
fn walk_all(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    out
}

/// The atimes under `root` of `paths` (relative), by `lstat` alone, that
/// differ from `want`, and `want`'s too: each line names one. Symlinks are
/// left out: reading a link's target moves its atime, for any backup tool,
/// so a snapshot does not keep it (docs/metadata.md).
pub fn atime_differences(root: &Path, paths: &[PathBuf], want: &[(i64, i64)]) -> String {
    let mut out = String::new();
    for (p, w) in paths.iter().zip(want) {
        let m = lstat_under(root, p);
        let symlink =
            rustix::fs::FileType::from_raw_mode(m.st_mode) == rustix::fs::FileType::Symlink;
        let got = (m.st_atime, m.st_atime_nsec as i64);
        if symlink || got == *w {
            continue;
        }
        let name = p.to_string_lossy();
        let name: String = name.chars().take(80).collect();
        out.push_str(&format!(
            "{name}: atime {}.{:09}, want {}.{:09}\n",
            got.0, got.1, w.0, w.1
        ));
    }
    out
}

pub fn atimes(root: &Path, paths: &[PathBuf]) -> Vec<(i64, i64)> {
    paths
        .iter()
        .map(|p| {
            let m = lstat_under(root, p);
            (m.st_atime, m.st_atime_nsec as i64)
        })
        .collect()
}

/// rsync's comparison of `src` and `restored`: what it would change. The
/// big sparse file is left to [`same_sparse_file`]: `--checksum` would
/// read its 8 GiB of holes twice.
pub fn rsync_differences(src: &Path, restored: &Path) -> String {
    let mut a = src.as_os_str().to_owned();
    a.push("/");
    let mut b = restored.as_os_str().to_owned();
    b.push("/");
    let out = Command::new("rsync")
        .args([
            "-aHAXS",
            "--numeric-ids",
            "--dry-run",
            "--itemize-changes",
            "--checksum",
        ])
        .arg("--exclude=/b/big-8g")
        .arg(&a)
        .arg(&b)
        .output()
        .expect("rsync is missing; tests/run.sh installs it");
    assert!(out.status.success(), "rsync: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Whether two sparse files have the same size, holes, data and
/// metadata, reading only their data.
pub fn same_sparse_file(a: &Path, b: &Path) {
    let (fa, fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (ma, mb) = (fa.metadata().unwrap(), fb.metadata().unwrap());
    assert_eq!(ma.len(), mb.len(), "sizes");
    assert_eq!(
        (ma.mode(), ma.uid(), ma.gid(), ma.mtime(), ma.mtime_nsec()),
        (mb.mode(), mb.uid(), mb.gid(), mb.mtime(), mb.mtime_nsec()),
        "mode, owner or mtime"
    );
    let ha = bitdust_pipeline::meta::holes_of(&fa, ma.len());
    let hb = bitdust_pipeline::meta::holes_of(&fb, mb.len());
    assert_eq!(ha, hb, "holes");
    assert!(!ha.is_empty(), "the source reports no holes");
    let read = |f: fs::File, h| {
        let mut v = Vec::new();
        std::io::Read::read_to_end(
            &mut bitdust_pipeline::meta::DataReader::new(f, ma.len(), h),
            &mut v,
        )
        .unwrap();
        v
    };
    assert_eq!(read(fa, ha), read(fb, hb), "data");
}

/// Disk blocks (512 bytes) a file takes.
pub fn blocks(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().blocks()
}
