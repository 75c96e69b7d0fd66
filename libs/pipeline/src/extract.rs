//! Writing restored entries into a directory without ever writing outside
//! it: a tar stream's (version 2), or a snapshot's (docs/metadata.md).
//!
//! Entry paths must be relative with no `..`; no path is ever written through
//! a symlink (every parent component is checked with `lstat`, files are
//! created with `O_EXCL`, which does not follow a final symlink, and
//! owners, attributes and times are set on the open file or with
//! `AT_SYMLINK_NOFOLLOW`). Directories are made writable while extracting
//! and get their owner, mode, attributes and times at the end, deepest
//! first. Each entry gets its owner first (chown clears setuid, setgid and
//! `security.capability`), then its mode, its extended attributes, and its
//! times last. Owners, setuid/setgid bits, device nodes and `security.*` /
//! `trusted.*` attributes are given back only when running as root.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bitdust_proto::format::v1 as pb;
use filetime::FileTime;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use tar::EntryType;

use crate::Progress;

/// An archive entry was refused or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// `..`, an absolute path, or an empty path.
    #[error("archive entry {0:?} has an absolute or `..` path and was refused")]
    UnsafePath(PathBuf),
    /// The path goes through a symlink.
    #[error("archive entry {path:?} would be written through the symlink {link:?} and was refused")]
    SymlinkEscape {
        /// The entry.
        path: PathBuf,
        /// The symlink on the way.
        link: PathBuf,
    },
    /// Reading the archive or writing a file failed.
    #[error("extracting {path:?} failed: {source}")]
    Io {
        /// The entry (or the archive).
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Counts of what was extracted.
#[derive(Debug, Default, Clone)]
pub(crate) struct ExtractStats {
    pub(crate) files: u64,
    pub(crate) directories: u64,
    pub(crate) symlinks: u64,
    pub(crate) specials: u64,
    pub(crate) hard_links: u64,
    pub(crate) bytes: u64,
    pub(crate) skipped: Vec<String>,
    /// What was restored only in part, once each.
    pub(crate) warnings: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Extracts the tar stream `input` into the existing, empty directory `root`.
pub(crate) fn extract(
    input: impl Read,
    root: &Path,
    progress: &dyn Progress,
) -> Result<ExtractStats, ExtractError> {
    let mut archive = tar::Archive::new(input);
    let mut out = Extractor::new(root);
    let entries = archive.entries().map_err(io_err(root))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err(root))?;
        let path = entry.path().map_err(io_err(root))?.into_owned();
        let Some(rel) = out.prepare(&path)? else {
            continue;
        };
        let header = entry.header();
        let mode = header.mode().map_err(io_err(&rel))?;
        let mtime = FileTime::from_unix_time(header.mtime().map_err(io_err(&rel))? as i64, 0);
        match header.entry_type() {
            EntryType::Directory => out.dir(&rel, Attrs::plain(mode, mtime))?,
            EntryType::Regular | EntryType::Continuous => {
                let size = header.size().map_err(io_err(&rel))?;
                out.file(&rel, &Attrs::plain(mode, mtime), size, &[], |f, _| {
                    io::copy(&mut ProgressReader(&mut entry, progress), f)
                })?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io_err(&rel))?
                    .ok_or_else(|| ExtractError::Io {
                        path: rel.clone(),
                        source: io::Error::other("symlink without a target"),
                    })?
                    .into_owned();
                out.symlink(&rel, &target, &Attrs::plain(mode, mtime))?;
            }
            other => out.stats.skipped.push(format!(
                "{}: entry type {other:?} is not restored",
                rel.display()
            )),
        }
    }
    out.finish()
}

/// Whose a restore makes the restored entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Owners {
    /// The owner the snapshot names, by name where the name exists on this
    /// system, else by number (root only).
    #[default]
    ByName,
    /// The snapshot's numeric ids (root only; `--numeric-owner`).
    Numeric,
}

/// What a restore gives back of an entry besides its content.
#[derive(Clone, Debug)]
pub(crate) struct Attrs {
    pub(crate) mode: u32,
    pub(crate) mtime: FileTime,
    pub(crate) atime: Option<FileTime>,
    pub(crate) owner: Option<crate::meta::Owner>,
    pub(crate) xattrs: Vec<pb::Xattr>,
}

impl Attrs {
    /// A mode and mtime only (the tar archives of version 2).
    pub(crate) fn plain(mode: u32, mtime: FileTime) -> Attrs {
        Attrs {
            mode,
            mtime,
            atime: None,
            owner: None,
            xattrs: Vec::new(),
        }
    }

    /// What snapshot entry `node` keeps.
    pub(crate) fn of(node: &pb::Node) -> Attrs {
        Attrs {
            mode: node.mode,
            mtime: FileTime::from_unix_time(node.mtime, node.mtime_nanos.min(999_999_999)),
            atime: node
                .atime
                .map(|a| FileTime::from_unix_time(a, node.atime_nanos.min(999_999_999))),
            owner: match (node.uid, node.gid) {
                (Some(uid), Some(gid)) => Some(crate::meta::Owner {
                    uid,
                    gid,
                    user: node.user.clone(),
                    group: node.group.clone(),
                }),
                _ => None,
            },
            xattrs: node.xattrs.clone(),
        }
    }
}

/// A special file.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Special {
    Fifo,
    Char(u64),
    Block(u64),
}

/// Writes entries under `root` without ever writing outside it (see the
/// module's rules): the tar extractor's and the snapshot restore's. Every
/// call works relative to a directory descriptor, so a path of any length
/// restores (the kernel's 4,096-byte limit holds per call, not per tree).
pub(crate) struct Extractor<'a> {
    root: &'a Path,
    dirs: Dirs,
    /// Directories written, with what they get at the end.
    pending: Vec<(PathBuf, Attrs)>,
    /// Running as root: owners, devices and `security.*`/`trusted.*`
    /// attributes are given back.
    root_caller: bool,
    owners: Owners,
    /// Ids of names on this system, looked up once each.
    uids: HashMap<String, Option<u32>>,
    gids: HashMap<String, Option<u32>>,
    /// Entries owned by someone else whose owner was not given back (not
    /// root).
    not_owned: u64,
    /// Owners, attributes and times the target refused: how many, and the
    /// first few with why.
    refused: u64,
    first_refused: Vec<String>,
    /// What was written so far.
    pub(crate) stats: ExtractStats,
}

/// Refusals named one by one in the report; the rest are counted.
const NAMED_REFUSALS: usize = 3;

/// Directory descriptors below the restore's root: the root's, and one
/// per component of the last parent directory used (entries come in tree
/// order, so consecutive ones share most of it).
struct Dirs {
    root: Option<OwnedFd>,
    stack: Vec<(std::ffi::OsString, OwnedFd)>,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn errno(rel: &Path) -> impl FnOnce(rustix::io::Errno) -> ExtractError + '_ {
    move |e| ExtractError::Io {
        path: rel.to_owned(),
        source: e.into(),
    }
}

impl Dirs {
    /// The directory holding `rel` (relative, `..`-free, not empty) and
    /// its last component; missing parents are made (0700) when `create`.
    /// A parent that is a symlink or not a directory is refused.
    fn parent(
        &mut self,
        root: &Path,
        rel: &Path,
        create: bool,
    ) -> Result<(BorrowedFd<'_>, std::ffi::OsString), ExtractError> {
        if self.root.is_none() {
            let fd = rustix::fs::open(root, dir_flags(), Mode::empty()).map_err(errno(rel))?;
            self.root = Some(fd);
        }
        let comps: Vec<&OsStr> = rel.iter().collect();
        let Some((name, parents)) = comps.split_last() else {
            return Err(ExtractError::UnsafePath(rel.to_owned()));
        };
        let common = self
            .stack
            .iter()
            .zip(parents.iter())
            .take_while(|(s, c)| s.0.as_os_str() == **c)
            .count();
        self.stack.truncate(common);
        for (i, c) in parents.iter().enumerate().skip(common) {
            let at = match self.stack.last() {
                Some((_, fd)) => fd.as_fd(),
                None => self
                    .root
                    .as_ref()
                    .map(|f| f.as_fd())
                    .ok_or_else(|| ExtractError::UnsafePath(rel.to_owned()))?,
            };
            let fd = match rustix::fs::openat(at, *c, dir_flags(), Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    rustix::fs::mkdirat(at, *c, Mode::from_raw_mode(0o700)).map_err(errno(rel))?;
                    let fd = rustix::fs::openat(at, *c, dir_flags(), Mode::empty())
                        .map_err(errno(rel))?;
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(errno(rel))?;
                    fd
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let sofar: PathBuf = parents[..=i].iter().collect();
                    let symlink = rustix::fs::statat(at, *c, AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                    return Err(if symlink {
                        ExtractError::SymlinkEscape {
                            path: rel.to_owned(),
                            link: sofar,
                        }
                    } else {
                        ExtractError::Io {
                            path: rel.to_owned(),
                            source: io::Error::other(format!(
                                "{} is not a directory",
                                sofar.display()
                            )),
                        }
                    });
                }
                Err(e) => return Err(errno(rel)(e)),
            };
            self.stack.push(((*c).to_owned(), fd));
        }
        let at = match self.stack.last() {
            Some((_, fd)) => fd.as_fd(),
            None => self
                .root
                .as_ref()
                .map(|f| f.as_fd())
                .ok_or_else(|| ExtractError::UnsafePath(rel.to_owned()))?,
        };
        Ok((at, (*name).to_owned()))
    }
}

/// What is at `name` in `at`, not following a symlink.
fn kind_at(at: BorrowedFd<'_>, name: &OsStr) -> Option<FileType> {
    rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| FileType::from_raw_mode(st.st_mode))
}

/// A later entry of the same name replaces a file, symlink or special,
/// never a directory.
fn remove_non_dir(at: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> Result<(), ExtractError> {
    match kind_at(at, name) {
        Some(FileType::Directory) => Err(ExtractError::Io {
            path: rel.to_owned(),
            source: io::Error::other("a directory of that name was already restored"),
        }),
        Some(_) => rustix::fs::unlinkat(at, name, AtFlags::empty()).map_err(errno(rel)),
        None => Ok(()),
    }
}

/// The path by which the `l*xattr` calls reach `name` in directory `at`
/// (they take no directory descriptor): short whatever the entry's depth.
fn proc_path(at: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", at.as_raw_fd()));
    p.push(name);
    p
}

fn timestamps(attrs: &Attrs) -> Timestamps {
    let spec = |t: FileTime| Timespec {
        tv_sec: t.unix_seconds(),
        tv_nsec: t.nanoseconds().into(),
    };
    Timestamps {
        last_access: attrs.atime.map_or(
            Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            spec,
        ),
        last_modification: spec(attrs.mtime),
    }
}

impl<'a> Extractor<'a> {
    /// Writes into the existing, empty directory `root`.
    pub(crate) fn new(root: &'a Path) -> Extractor<'a> {
        Extractor {
            root,
            dirs: Dirs {
                root: None,
                stack: Vec::new(),
            },
            pending: Vec::new(),
            root_caller: rustix::process::geteuid().is_root(),
            owners: Owners::ByName,
            uids: HashMap::new(),
            gids: HashMap::new(),
            not_owned: 0,
            refused: 0,
            first_refused: Vec::new(),
            stats: ExtractStats::default(),
        }
    }

    /// Gives owners back by `owners` (when running as root).
    pub(crate) fn with_owners(mut self, owners: Owners) -> Self {
        self.owners = owners;
        self
    }

    /// The entry path `path` made safe (relative, no `..`) with its parents
    /// created; `None` for the root itself.
    pub(crate) fn prepare(&mut self, path: &Path) -> Result<Option<PathBuf>, ExtractError> {
        let rel = safe_relative(path)?;
        if rel.as_os_str().is_empty() {
            return Ok(None);
        }
        self.dirs.parent(self.root, &rel, true)?;
        Ok(Some(rel))
    }

    /// A directory; its owner, mode, attributes and times are set at
    /// [`Extractor::finish`], after its content.
    pub(crate) fn dir(&mut self, rel: &Path, attrs: Attrs) -> Result<(), ExtractError> {
        let (at, name) = self.dirs.parent(self.root, rel, true)?;
        match kind_at(at, &name) {
            Some(FileType::Directory) => {}
            Some(FileType::Symlink) => {
                return Err(ExtractError::SymlinkEscape {
                    path: rel.to_owned(),
                    link: rel.to_owned(),
                });
            }
            Some(_) => {
                rustix::fs::unlinkat(at, &name, AtFlags::empty()).map_err(errno(rel))?;
                rustix::fs::mkdirat(at, &name, Mode::from_raw_mode(0o700)).map_err(errno(rel))?;
            }
            None => {
                rustix::fs::mkdirat(at, &name, Mode::from_raw_mode(0o700)).map_err(errno(rel))?
            }
        }
        let fd = rustix::fs::openat(at, &name, dir_flags(), Mode::empty()).map_err(errno(rel))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(errno(rel))?;
        self.pending.push((rel.to_owned(), attrs));
        self.stats.directories += 1;
        Ok(())
    }

    /// A regular file of `size` bytes with `holes` (left as holes) holding
    /// what `fill` writes into its data (returning how many bytes).
    pub(crate) fn file(
        &mut self,
        rel: &Path,
        attrs: &Attrs,
        size: u64,
        holes: &[pb::Extent],
        fill: impl FnOnce(&mut dyn Write, BorrowedFd<'_>) -> io::Result<u64>,
    ) -> Result<u64, ExtractError> {
        let (at, name) = self.dirs.parent(self.root, rel, true)?;
        remove_non_dir(at, &name, rel)?;
        let fd = rustix::fs::openat(
            at,
            &name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno(rel))?;
        let f = fs::File::from(fd);
        let n = if holes.is_empty() {
            fill(&mut &f, f.as_fd()).map_err(io_err(rel))?
        } else {
            let n = fill(&mut HoleWriter::new(&f, holes), f.as_fd()).map_err(io_err(rel))?;
            f.set_len(size).map_err(io_err(rel))?;
            n
        };
        self.owner(rel, attrs, |uid, gid| {
            rustix::fs::fchown(&f, Some(uid), Some(gid))
        })?;
        let mode = self.mode_of(attrs);
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(rel))?;
        self.set_xattrs(rel, attrs, |name, value| {
            rustix::fs::fsetxattr(&f, name, value, rustix::fs::XattrFlags::empty())
        });
        filetime::set_file_handle_times(&f, attrs.atime, Some(attrs.mtime)).map_err(io_err(rel))?;
        self.stats.files += 1;
        self.stats.bytes += n;
        Ok(n)
    }

    /// A symlink to `target` (never followed).
    pub(crate) fn symlink(
        &mut self,
        rel: &Path,
        target: &Path,
        attrs: &Attrs,
    ) -> Result<(), ExtractError> {
        let (at, name) = self.dirs.parent(self.root, rel, true)?;
        remove_non_dir(at, &name, rel)?;
        rustix::fs::symlinkat(target, at, &name).map_err(errno(rel))?;
        let at = at.try_clone_to_owned().map_err(io_err(rel))?;
        self.attrs_at(rel, at.as_fd(), &name, attrs, false)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    /// A FIFO or device node; a device only when running as root.
    pub(crate) fn special(
        &mut self,
        rel: &Path,
        kind: Special,
        attrs: &Attrs,
    ) -> Result<(), ExtractError> {
        let (ft, dev) = match kind {
            Special::Fifo => (FileType::Fifo, 0),
            Special::Char(d) => (FileType::CharacterDevice, d),
            Special::Block(d) => (FileType::BlockDevice, d),
        };
        if !matches!(kind, Special::Fifo) && !self.root_caller {
            return Err(ExtractError::Io {
                path: rel.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "is a device node, and only root restores device nodes: restore as root, or restore the paths around it",
                ),
            });
        }
        let (at, name) = self.dirs.parent(self.root, rel, true)?;
        remove_non_dir(at, &name, rel)?;
        rustix::fs::mknodat(at, &name, ft, Mode::from_raw_mode(0o600), dev).map_err(errno(rel))?;
        let at = at.try_clone_to_owned().map_err(io_err(rel))?;
        self.attrs_at(rel, at.as_fd(), &name, attrs, true)?;
        self.stats.specials += 1;
        Ok(())
    }

    /// A hard link to `first`, a file restored earlier.
    pub(crate) fn link(&mut self, rel: &Path, first: &Path) -> Result<(), ExtractError> {
        let first_rel = safe_relative(first)?;
        let missing = || ExtractError::Io {
            path: rel.to_owned(),
            source: io::Error::other(format!(
                "is a hard link to {}, which is not a file restored before it",
                first_rel.display()
            )),
        };
        if first_rel.as_os_str().is_empty() {
            return Err(missing());
        }
        // The first name must be a file already restored here, reached
        // through no symlink.
        let (first_at, first_name) = self
            .dirs
            .parent(self.root, &first_rel, false)
            .map_err(|_| missing())?;
        if kind_at(first_at, &first_name) != Some(FileType::RegularFile) {
            return Err(missing());
        }
        let first_at = first_at.try_clone_to_owned().map_err(io_err(rel))?;
        let (at, name) = self.dirs.parent(self.root, rel, true)?;
        remove_non_dir(at, &name, rel)?;
        rustix::fs::linkat(&first_at, &first_name, at, &name, AtFlags::empty())
            .map_err(errno(rel))?;
        self.stats.files += 1;
        self.stats.hard_links += 1;
        Ok(())
    }

    /// Owner, mode (unless a symlink), attributes and times of entry
    /// `name` in directory `at`, never following a symlink.
    fn attrs_at(
        &mut self,
        rel: &Path,
        at: BorrowedFd<'_>,
        name: &OsStr,
        attrs: &Attrs,
        chmod: bool,
    ) -> Result<(), ExtractError> {
        self.owner(rel, attrs, |uid, gid| {
            rustix::fs::chownat(at, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
        })?;
        if chmod {
            let mode = Mode::from_raw_mode(self.mode_of(attrs));
            rustix::fs::chmodat(at, name, mode, AtFlags::empty()).map_err(errno(rel))?;
        }
        if !attrs.xattrs.is_empty() {
            let path = proc_path(at, name);
            self.set_xattrs(rel, attrs, |name, value| {
                rustix::fs::lsetxattr(&path, name, value, rustix::fs::XattrFlags::empty())
            });
        }
        let mut times = timestamps(attrs);
        if attrs.atime.is_none() && !chmod {
            // A symlink's atime is not kept: it gets its mtime.
            times.last_access = Timespec {
                tv_sec: times.last_modification.tv_sec,
                tv_nsec: times.last_modification.tv_nsec,
            };
        }
        rustix::fs::utimensat(at, name, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(errno(rel))
    }

    /// Gives `rel` the attributes this process may set, through `set`
    /// (name, value), counting refusals.
    fn set_xattrs(
        &mut self,
        rel: &Path,
        attrs: &Attrs,
        set: impl Fn(&OsStr, &[u8]) -> rustix::io::Result<()>,
    ) {
        for x in &attrs.xattrs {
            if self.may_set(x) {
                let r = set(OsStr::from_bytes(&x.name), &x.value);
                self.note(rel, &x.name, r);
            }
        }
    }

    /// Sets the owner of `rel` with `chown` when running as root; else
    /// counts an entry that belonged to someone else.
    fn owner(
        &mut self,
        rel: &Path,
        attrs: &Attrs,
        chown: impl FnOnce(rustix::fs::Uid, rustix::fs::Gid) -> rustix::io::Result<()>,
    ) -> Result<(), ExtractError> {
        let Some(o) = &attrs.owner else {
            return Ok(());
        };
        if !self.root_caller {
            if o.uid != rustix::process::geteuid().as_raw() {
                self.not_owned += 1;
            }
            return Ok(());
        }
        let (uid, gid) = self.ids_of(o);
        if uid == u32::MAX || gid == u32::MAX {
            return Err(ExtractError::Io {
                path: rel.to_owned(),
                source: io::Error::other("names the owner id 4294967295, which no file can have"),
            });
        }
        let r = chown(
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        self.note(rel, b"its owner", r);
        Ok(())
    }

    /// The ids to give owner `o` on this system.
    fn ids_of(&mut self, o: &crate::meta::Owner) -> (u32, u32) {
        if self.owners == Owners::Numeric {
            return (o.uid, o.gid);
        }
        let uid = if o.user.is_empty() {
            None
        } else {
            *self
                .uids
                .entry(o.user.clone())
                .or_insert_with(|| uzers::get_user_by_name(&o.user).map(|u| u.uid()))
        };
        let gid = if o.group.is_empty() {
            None
        } else {
            *self
                .gids
                .entry(o.group.clone())
                .or_insert_with(|| uzers::get_group_by_name(&o.group).map(|g| g.gid()))
        };
        (uid.unwrap_or(o.uid), gid.unwrap_or(o.gid))
    }

    /// The mode to give: setuid and setgid only with the owner given back.
    fn mode_of(&self, attrs: &Attrs) -> u32 {
        if self.root_caller && attrs.owner.is_some() {
            attrs.mode & 0o7777
        } else {
            safe_mode(attrs.mode)
        }
    }

    /// Whether this process may give attribute `x` back: `trusted.*` and
    /// `security.*` only as root (others are counted as refused).
    fn may_set(&mut self, x: &pb::Xattr) -> bool {
        let privileged = x.name.starts_with(b"trusted.") || x.name.starts_with(b"security.");
        if privileged && !self.root_caller {
            self.refused += 1;
            return false;
        }
        true
    }

    /// Counts a refusal of `what` on `rel`.
    fn note(&mut self, rel: &Path, what: &[u8], r: rustix::io::Result<()>) {
        if let Err(e) = r {
            self.refused += 1;
            if self.first_refused.len() < NAMED_REFUSALS {
                self.first_refused.push(format!(
                    "{}: {}: {}",
                    rel.display(),
                    String::from_utf8_lossy(what),
                    io::Error::from(e)
                ));
            }
        }
    }

    /// Gives the directories their owners, modes, attributes and times,
    /// deepest first (so setting a parent's mtime is the last change to
    /// it); the warnings, once each.
    pub(crate) fn finish(mut self) -> Result<ExtractStats, ExtractError> {
        let mut dirs = std::mem::take(&mut self.pending);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (rel, attrs) in &dirs {
            let (at, name) = self.dirs.parent(self.root, rel, false)?;
            let at = at.try_clone_to_owned().map_err(io_err(rel))?;
            self.attrs_at(rel, at.as_fd(), &name, attrs, true)?;
        }
        if self.not_owned > 0 {
            self.stats.warnings.push(format!(
                "{} entries belonged to other users and now belong to you: only root restores owners",
                self.not_owned
            ));
        }
        if self.refused > 0 {
            let mut w = format!(
                "{} owners or extended attributes were not restored (the target filesystem or this user's rights refused them)",
                self.refused
            );
            if !self.first_refused.is_empty() {
                w.push_str(": ");
                w.push_str(&self.first_refused.join("; "));
            }
            self.stats.warnings.push(w);
        }
        Ok(self.stats)
    }
}

/// Writes a sparse file's data into its data extents, leaving the holes
/// unwritten.
pub(crate) struct HoleWriter<'f, 'h> {
    f: &'f fs::File,
    holes: std::slice::Iter<'h, pb::Extent>,
    next_hole: Option<&'h pb::Extent>,
    pos: u64,
}

impl<'f, 'h> HoleWriter<'f, 'h> {
    pub(crate) fn new(f: &'f fs::File, holes: &'h [pb::Extent]) -> Self {
        let mut holes = holes.iter();
        let next_hole = holes.next();
        HoleWriter {
            f,
            holes,
            next_hole,
            pos: 0,
        }
    }
}

impl Write for HoleWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::io::{Seek, SeekFrom};
        while let Some(h) = self.next_hole
            && self.pos >= h.offset
        {
            self.pos = self.pos.max(h.offset + h.length);
            (&mut &*self.f).seek(SeekFrom::Start(self.pos))?;
            self.next_hole = self.holes.next();
        }
        let room = self
            .next_hole
            .map_or(buf.len() as u64, |h| h.offset - self.pos);
        let n = (&mut &*self.f).write(&buf[..buf.len().min(room as usize)])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Without its owner given back, no setuid/setgid bit: a file restored by
/// root must never become setuid-root.
fn safe_mode(mode: u32) -> u32 {
    mode & 0o1777
}

/// The path with `.` removed, refusing absolute paths and `..`.
fn safe_relative(path: &Path) -> Result<PathBuf, ExtractError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ExtractError::UnsafePath(path.to_owned()));
            }
        }
    }
    Ok(out)
}

struct ProgressReader<'a, R>(&'a mut R, &'a dyn Progress);

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.advance(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            // Bypass the builder's own path checks to craft hostile archives.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn dotdot_and_absolute_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = tar_with(&[("../evil", EntryType::Regular, b"x", None)]);
        assert!(matches!(
            extract(&t[..], dir.path(), &()),
            Err(ExtractError::UnsafePath(_))
        ));
        let t = tar_with(&[("/tmp/evil", EntryType::Regular, b"x", None)]);
        assert!(matches!(
            extract(&t[..], dir.path(), &()),
            Err(ExtractError::UnsafePath(_))
        ));
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let link = outside.path().to_str().unwrap().to_owned();
        let t = tar_with(&[
            ("a", EntryType::Symlink, b"", Some(&link)),
            ("a/pwned", EntryType::Regular, b"x", None),
        ]);
        let err = extract(&t[..], dir.path(), &()).unwrap_err();
        assert!(matches!(err, ExtractError::SymlinkEscape { .. }), "{err}");
        assert!(!outside.path().join("pwned").exists());

        // A symlink entry followed by a file of the same name replaces the link.
        let dir = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        let t = tar_with(&[
            ("b", EntryType::Symlink, b"", Some(target.to_str().unwrap())),
            ("b", EntryType::Regular, b"data", None),
        ]);
        extract(&t[..], dir.path(), &()).unwrap();
        assert!(!target.exists());
        assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"data");
    }
}
