//! What a snapshot keeps of an entry besides its kind, mode, mtime and
//! content (docs/metadata.md): owners with their names, extended
//! attributes (POSIX ACLs and file capabilities among them), access times
//! and a sparse file's holes. Read on the backing-up side with the
//! caller's rights; checked, then given back, on the restoring side.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use bitdust_proto::format::v1 as pb;
use rustix::buffer::spare_capacity;
use rustix::io::Errno;

/// The most bytes of extended attributes (names and values) one entry
/// keeps; beyond it the rest are left out and named in the warnings.
pub const XATTRS_MAX: usize = 1 << 20;
/// The most holes one file keeps; beyond them the rest of the file is read
/// as data (zeros included), which restores the same bytes.
pub const HOLES_MAX: usize = 4096;
/// The kernel's bound on one attribute's value and on a list of names.
const XATTR_BUF: usize = 64 << 10;

/// An entry's owner and group, with their names on the system that made
/// the snapshot (empty when the id has none there).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
    /// The user's name, or empty.
    pub user: String,
    /// The group's name, or empty.
    pub group: String,
}

/// User and group names by id, each looked up once per run (there are few
/// distinct ids in any tree).
#[derive(Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    /// The owner `uid`:`gid` with its names.
    pub fn owner(&mut self, uid: u32, gid: u32) -> Owner {
        let user = self
            .users
            .entry(uid)
            .or_insert_with(|| {
                uzers::get_user_by_uid(uid)
                    .and_then(|u| u.name().to_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .clone();
        let group = self
            .groups
            .entry(gid)
            .or_insert_with(|| {
                uzers::get_group_by_gid(gid)
                    .and_then(|g| g.name().to_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .clone();
        Owner {
            uid,
            gid,
            user,
            group,
        }
    }
}

/// The extended attributes of `path` (not following a symlink) that this
/// process may read, sorted by name, and a warning for each it could not.
/// A filesystem without attributes has none.
pub fn read_xattrs(path: &Path) -> (Vec<pb::Xattr>, Vec<String>) {
    let mut warnings = Vec::new();
    let listing_failed = |e: Errno, warnings: &mut Vec<String>| {
        warnings.push(format!(
            "{}: its extended attributes could not be listed ({e}); none kept",
            path.display()
        ));
    };
    // The list's size first: most entries have none, and then nothing is
    // allocated. (Two zeroed 64 KiB buffers for each entry were a fifth of
    // an unchanged backup's time on 59,184 entries, session 22.)
    match rustix::fs::llistxattr_query(path) {
        Ok(0) | Err(Errno::NOTSUP) => return (Vec::new(), warnings),
        Ok(_) => {}
        Err(e) => {
            listing_failed(e, &mut warnings);
            return (Vec::new(), warnings);
        }
    }
    // Buffers taken from the allocator as they are, not zeroed.
    let mut list = Vec::with_capacity(XATTR_BUF);
    let n = match rustix::fs::llistxattr(path, spare_capacity(&mut list)) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return (Vec::new(), warnings),
        Err(e) => {
            listing_failed(e, &mut warnings);
            return (Vec::new(), warnings);
        }
    };
    let mut names: Vec<&[u8]> = list[..n.min(list.len())]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .collect();
    names.sort_unstable();
    let mut value = Vec::new();
    let mut out = Vec::new();
    let mut total = 0usize;
    for name in names {
        value.clear();
        value.reserve(XATTR_BUF);
        match rustix::fs::lgetxattr(path, OsStr::from_bytes(name), spare_capacity(&mut value)) {
            Ok(len) => {
                total += name.len() + len;
                if total > XATTRS_MAX {
                    warnings.push(format!(
                        "{}: more than {XATTRS_MAX} bytes of extended attributes; those from {} on are left out",
                        path.display(),
                        String::from_utf8_lossy(name)
                    ));
                    break;
                }
                out.push(pb::Xattr {
                    name: name.to_vec(),
                    value: value[..len].to_vec(),
                });
            }
            // Removed since it was listed.
            Err(Errno::NODATA) => {}
            Err(e) => warnings.push(format!(
                "{}: extended attribute {} could not be read ({e}); left out",
                path.display(),
                String::from_utf8_lossy(name)
            )),
        }
    }
    (out, warnings)
}

/// Whether a file of `size` bytes on `blocks` 512-byte blocks may have
/// holes (only such files are looked at with `SEEK_HOLE`).
pub fn may_be_sparse(size: u64, blocks: u64) -> bool {
    blocks.saturating_mul(512) < size
}

/// The holes of the open file `f` of `size` bytes, sorted, at most
/// [`HOLES_MAX`]; none where the filesystem cannot tell (no `SEEK_HOLE`).
/// Leaves the file's offset at 0.
pub fn holes_of(f: &File, size: u64) -> Vec<pb::Extent> {
    use rustix::fs::SeekFrom as S;
    let mut holes = Vec::new();
    let mut pos = 0u64;
    while pos < size && holes.len() < HOLES_MAX {
        let hole = match rustix::fs::seek(f, S::Hole(pos)) {
            Ok(h) => h.min(size),
            Err(_) => return Vec::new(),
        };
        if hole >= size {
            break;
        }
        let data = match rustix::fs::seek(f, S::Data(hole)) {
            Ok(d) => d.min(size),
            // No data after it: a hole to the end.
            Err(Errno::NXIO) => size,
            Err(_) => return Vec::new(),
        };
        if data > hole {
            holes.push(pb::Extent {
                offset: hole,
                length: data - hole,
            });
        }
        pos = data;
    }
    if rustix::fs::seek(f, S::Start(0)).is_err() {
        return Vec::new();
    }
    holes
}

/// The bytes of a file of `size` bytes outside `holes`: what its content
/// stream holds.
pub fn data_len(size: u64, holes: &[pb::Extent]) -> u64 {
    size.saturating_sub(holes.iter().map(|h| h.length).sum())
}

/// The size and holes of a file with `holes` of which only the first
/// `read` bytes of data could be read (it shrank while being read): it
/// ends right after them.
pub fn cut_to_data(holes: &[pb::Extent], read: u64) -> (u64, Vec<pb::Extent>) {
    let mut left = read;
    let mut pos = 0u64;
    let mut kept = Vec::new();
    for h in holes {
        let data = h.offset - pos;
        if left <= data {
            return (pos + left, kept);
        }
        left -= data;
        kept.push(*h);
        pos = h.offset + h.length;
    }
    (pos + left, kept)
}

/// Whether `holes` are sorted, apart, non-empty and within `size`, and
/// few enough: what a snapshot or a caller may give.
pub fn check_holes(size: u64, holes: &[pb::Extent]) -> Result<(), String> {
    if holes.len() > HOLES_MAX {
        return Err(format!("{} holes, over {HOLES_MAX}", holes.len()));
    }
    let mut end = 0u64;
    for h in holes {
        let stop = h.offset.checked_add(h.length).ok_or("a hole past 2^64")?;
        if h.length == 0 || h.offset < end || stop > size {
            return Err(format!(
                "a hole at {}+{} is empty, out of order or past the size {size}",
                h.offset, h.length
            ));
        }
        end = stop;
    }
    Ok(())
}

/// Whether `xattrs` are within bounds and their names plain: what a
/// snapshot or a caller may give.
pub fn check_xattrs(xattrs: &[pb::Xattr]) -> Result<(), String> {
    let mut total = 0usize;
    for x in xattrs {
        if x.name.is_empty() || x.name.len() > 255 || x.name.contains(&0) || !x.name.contains(&b'.')
        {
            return Err(format!(
                "the extended attribute name {:?} is not a namespaced name",
                String::from_utf8_lossy(&x.name)
            ));
        }
        if x.value.len() > XATTR_BUF {
            return Err(format!(
                "extended attribute {} holds {} bytes, over the kernel's {XATTR_BUF}",
                String::from_utf8_lossy(&x.name),
                x.value.len()
            ));
        }
        total += x.name.len() + x.value.len();
    }
    if total > XATTRS_MAX {
        return Err(format!(
            "{total} bytes of extended attributes, over {XATTRS_MAX}"
        ));
    }
    Ok(())
}

/// Reads a file's bytes outside its holes, in order, up to its size.
pub struct DataReader<R> {
    inner: R,
    holes: std::vec::IntoIter<pb::Extent>,
    next_hole: Option<pb::Extent>,
    pos: u64,
    size: u64,
}

impl<R: Read + Seek> DataReader<R> {
    /// The data of `inner` (at offset 0) of `size` bytes with `holes`
    /// (as [`check_holes`] accepts).
    pub fn new(inner: R, size: u64, holes: Vec<pb::Extent>) -> Self {
        let mut holes = holes.into_iter();
        let next_hole = holes.next();
        DataReader {
            inner,
            holes,
            next_hole,
            pos: 0,
            size,
        }
    }
}

impl<R: Read + Seek> Read for DataReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos >= self.size || buf.is_empty() {
                return Ok(0);
            }
            if let Some(h) = &self.next_hole
                && self.pos >= h.offset
            {
                self.pos = self.pos.max(h.offset + h.length);
                self.inner.seek(SeekFrom::Start(self.pos))?;
                self.next_hole = self.holes.next();
                continue;
            }
            let end = self
                .next_hole
                .as_ref()
                .map_or(self.size, |h| h.offset)
                .min(self.size);
            let want = buf.len().min((end - self.pos) as usize);
            let n = self.inner.read(&mut buf[..want])?;
            self.pos += n as u64;
            return Ok(n);
        }
    }
}

/// Opens `path` to read its content: never through a final symlink, and
/// without touching its access time where this process may ask for that
/// (its owner, or root), as restic and borg read.
pub fn open_for_reading(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |flags: rustix::fs::OFlags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((rustix::fs::OFlags::NOFOLLOW | flags).bits() as i32)
            .open(path)
    };
    match open(rustix::fs::OFlags::NOATIME) {
        Err(e) if e.raw_os_error() == Some(Errno::PERM.raw_os_error()) => {
            open(rustix::fs::OFlags::empty())
        }
        r => r,
    }
}

/// What `lstat` says of an entry, looked up by path or by name in an open
/// directory.
pub struct Lstat(rustix::fs::Stat);

// `stat`'s field types differ between targets (32-bit `time_t` and
// `nlink_t`): the casts are needed there, not here.
#[allow(clippy::unnecessary_cast)]
impl Lstat {
    /// `lstat` of `path` (the whole path walked).
    pub fn of(path: &Path) -> io::Result<Lstat> {
        Ok(Lstat(rustix::fs::lstat(path)?))
    }

    /// `fstatat` of `name` in directory `dir`, not following a symlink.
    pub fn at(dir: &rustix::fd::OwnedFd, name: &OsStr) -> io::Result<Lstat> {
        Ok(Lstat(rustix::fs::statat(
            dir,
            name,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?))
    }

    /// Its type.
    pub fn file_type(&self) -> rustix::fs::FileType {
        rustix::fs::FileType::from_raw_mode(self.0.st_mode)
    }

    /// Its permission bits (and set-id and sticky bits).
    pub fn mode(&self) -> u32 {
        self.0.st_mode & 0o7777
    }

    /// Its size.
    pub fn len(&self) -> u64 {
        self.0.st_size.max(0) as u64
    }

    /// Whether its size is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 512-byte blocks it takes.
    pub fn blocks(&self) -> u64 {
        self.0.st_blocks.max(0) as u64
    }

    /// A device's number.
    pub fn rdev(&self) -> u64 {
        self.0.st_rdev
    }

    /// Modification time, seconds and nanoseconds.
    pub fn mtime(&self) -> (i64, i64) {
        (self.0.st_mtime as i64, self.0.st_mtime_nsec as i64)
    }

    /// Status change time.
    pub fn ctime(&self) -> (i64, i64) {
        (self.0.st_ctime as i64, self.0.st_ctime_nsec as i64)
    }

    /// Access time.
    pub fn atime(&self) -> (i64, i64) {
        (self.0.st_atime as i64, self.0.st_atime_nsec as i64)
    }

    /// Inode.
    pub fn ino(&self) -> u64 {
        self.0.st_ino
    }

    /// Device.
    pub fn dev(&self) -> u64 {
        self.0.st_dev
    }

    /// Links.
    pub fn nlink(&self) -> u64 {
        self.0.st_nlink as u64
    }

    /// Owner and group.
    pub fn owner(&self) -> (u32, u32) {
        (self.0.st_uid, self.0.st_gid)
    }
}

/// Opens directory `path` for looking its entries up by name.
pub fn open_dir(path: &Path) -> io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The target of symlink `name` in directory `dir` (`path` is its whole
/// path, for when the directory is not open).
pub fn read_link_at(
    dir: Option<&rustix::fd::OwnedFd>,
    name: &OsStr,
    path: &Path,
) -> io::Result<Vec<u8>> {
    match dir {
        Some(fd) => Ok(rustix::fs::readlinkat(fd, name, Vec::new())?.into_bytes()),
        None => Ok(std::fs::read_link(path)?.into_os_string().into_vec()),
    }
}

/// The names in directory `path` (not `.` and `..`), listed without
/// following a symlink and, where this process may ask for that, without
/// touching the directory's access time: an unchanged tree's snapshot
/// then keeps the same atimes, and its metadata deduplicates.
pub fn list_dir(path: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    Ok(list_dir_open(path)?.0)
}

/// [`list_dir`], and the directory opened, for looking its entries up
/// by name (`fstatat`: no walk of the whole path for each entry).
pub fn list_dir_open(path: &Path) -> io::Result<(Vec<std::ffi::OsString>, rustix::fd::OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::open(path, flags, Mode::empty())?,
        r => r?,
    };
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok((names, fd))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ext(offset: u64, length: u64) -> pb::Extent {
        pb::Extent { offset, length }
    }

    #[test]
    fn the_data_reader_skips_holes_and_stops_at_the_size() {
        let bytes: Vec<u8> = (0..100u8).collect();
        let mut r = DataReader::new(
            io::Cursor::new(bytes.clone()),
            90,
            vec![ext(0, 10), ext(20, 30), ext(85, 5)],
        );
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let mut want = bytes[10..20].to_vec();
        want.extend_from_slice(&bytes[50..85]);
        assert_eq!(out, want);
        assert_eq!(
            out.len() as u64,
            data_len(90, &[ext(0, 10), ext(20, 30), ext(85, 5)])
        );
    }

    #[test]
    fn a_sparse_file_that_shrank_while_read_ends_after_what_was_read() {
        let holes = [ext(10, 10), ext(30, 10)];
        assert_eq!(cut_to_data(&holes, 15), (25, vec![ext(10, 10)]));
        assert_eq!(cut_to_data(&holes, 10), (10, vec![]));
        assert_eq!(cut_to_data(&holes, 0), (0, vec![]));
        let (size, kept) = cut_to_data(&holes, 25);
        assert_eq!((size, kept.len()), (45, 2));
        assert!(check_holes(size, &kept).is_ok());
    }

    #[test]
    fn holes_out_of_order_overlapping_or_past_the_size_are_refused() {
        assert!(check_holes(100, &[ext(0, 10), ext(10, 5)]).is_ok());
        assert!(check_holes(100, &[ext(10, 5), ext(0, 10)]).is_err());
        assert!(check_holes(100, &[ext(0, 10), ext(5, 10)]).is_err());
        assert!(check_holes(100, &[ext(95, 10)]).is_err());
        assert!(check_holes(100, &[ext(5, 0)]).is_err());
        assert!(check_holes(u64::MAX, &[ext(u64::MAX, 2)]).is_err());
    }

    #[test]
    fn xattr_names_without_a_namespace_or_with_a_nul_are_refused() {
        let x = |n: &[u8]| pb::Xattr {
            name: n.to_vec(),
            value: vec![1],
        };
        assert!(check_xattrs(&[x(b"user.a")]).is_ok());
        assert!(check_xattrs(&[x(b"plain")]).is_err());
        assert!(check_xattrs(&[x(b"user.a\0b")]).is_err());
        assert!(check_xattrs(&[x(b"")]).is_err());
    }

    #[test]
    fn a_sparse_file_has_its_holes_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[7u8; 4096], 4 << 20).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&p).unwrap();
        let holes = holes_of(&f, 8 << 20);
        if holes.is_empty() {
            // tmpfs and ext4 both answer SEEK_HOLE; a filesystem that does
            // not is read densely, which is what an empty list means.
            panic!("the test directory's filesystem reports no holes (no SEEK_HOLE)");
        }
        assert_eq!(holes.first().unwrap().offset, 0);
        assert_eq!(data_len(8 << 20, &holes), 4096);
        let mut data = Vec::new();
        DataReader::new(f, 8 << 20, holes)
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(data, vec![7u8; 4096]);
    }
}
