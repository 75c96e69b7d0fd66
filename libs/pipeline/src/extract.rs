//! Extracting a tar stream into a directory without ever writing outside it.
//!
//! Entry paths must be relative with no `..`; no path is ever written through
//! a symlink (every parent component is checked with `lstat`, and files are
//! created with `O_EXCL`, which does not follow a final symlink). Directories
//! are made writable while extracting and get their archived mode and mtime
//! at the end, deepest first. Ownership and setuid/setgid bits are not
//! restored.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use filetime::FileTime;
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
    pub(crate) bytes: u64,
    pub(crate) skipped: Vec<String>,
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
            EntryType::Directory => out.dir(&rel, mode, mtime)?,
            EntryType::Regular | EntryType::Continuous => {
                out.file(&rel, mode, mtime, |f| {
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
                out.symlink(&rel, &target, mtime)?;
            }
            other => out.stats.skipped.push(format!(
                "{}: entry type {other:?} is not restored",
                rel.display()
            )),
        }
    }
    out.finish()
}

/// Writes entries under `root` without ever writing outside it (see the
/// module's rules): the tar extractor's and the snapshot restore's.
pub(crate) struct Extractor<'a> {
    root: &'a Path,
    dirs: Vec<(PathBuf, u32, FileTime)>,
    /// What was written so far.
    pub(crate) stats: ExtractStats,
}

impl<'a> Extractor<'a> {
    /// Writes into the existing, empty directory `root`.
    pub(crate) fn new(root: &'a Path) -> Extractor<'a> {
        Extractor {
            root,
            dirs: Vec::new(),
            stats: ExtractStats::default(),
        }
    }

    /// The entry path `path` made safe (relative, no `..`) with its parents
    /// created; `None` for the root itself.
    pub(crate) fn prepare(&self, path: &Path) -> Result<Option<PathBuf>, ExtractError> {
        let rel = safe_relative(path)?;
        if rel.as_os_str().is_empty() {
            return Ok(None);
        }
        ensure_parents(self.root, &rel)?;
        Ok(Some(rel))
    }

    /// A directory; its mode and mtime are set at [`Extractor::finish`].
    pub(crate) fn dir(
        &mut self,
        rel: &Path,
        mode: u32,
        mtime: FileTime,
    ) -> Result<(), ExtractError> {
        let dest = self.root.join(rel);
        match fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ExtractError::SymlinkEscape {
                    path: rel.to_owned(),
                    link: rel.to_owned(),
                });
            }
            Ok(_) => {
                fs::remove_file(&dest).map_err(io_err(rel))?;
                fs::create_dir(&dest).map_err(io_err(rel))?;
            }
            Err(_) => fs::create_dir(&dest).map_err(io_err(rel))?,
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o700)).map_err(io_err(rel))?;
        self.dirs.push((rel.to_owned(), safe_mode(mode), mtime));
        self.stats.directories += 1;
        Ok(())
    }

    /// A regular file holding what `fill` writes into it (returning how
    /// many bytes).
    pub(crate) fn file(
        &mut self,
        rel: &Path,
        mode: u32,
        mtime: FileTime,
        fill: impl FnOnce(&mut fs::File) -> io::Result<u64>,
    ) -> Result<u64, ExtractError> {
        let dest = self.root.join(rel);
        remove_non_dir(&dest, rel)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&dest)
            .map_err(io_err(rel))?;
        let n = fill(&mut f).map_err(io_err(rel))?;
        f.set_permissions(fs::Permissions::from_mode(safe_mode(mode)))
            .map_err(io_err(rel))?;
        filetime::set_file_handle_times(&f, None, Some(mtime)).map_err(io_err(rel))?;
        self.stats.files += 1;
        self.stats.bytes += n;
        Ok(n)
    }

    /// A symlink to `target` (never followed).
    pub(crate) fn symlink(
        &mut self,
        rel: &Path,
        target: &Path,
        mtime: FileTime,
    ) -> Result<(), ExtractError> {
        let dest = self.root.join(rel);
        remove_non_dir(&dest, rel)?;
        std::os::unix::fs::symlink(target, &dest).map_err(io_err(rel))?;
        filetime::set_symlink_file_times(&dest, mtime, mtime).map_err(io_err(rel))?;
        self.stats.symlinks += 1;
        Ok(())
    }

    /// Gives the directories their modes and mtimes, deepest first (so
    /// setting a parent's mtime is the last change to it).
    pub(crate) fn finish(mut self) -> Result<ExtractStats, ExtractError> {
        self.dirs
            .sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (rel, mode, mtime) in &self.dirs {
            let dest = self.root.join(rel);
            fs::set_permissions(&dest, fs::Permissions::from_mode(*mode)).map_err(io_err(rel))?;
            filetime::set_file_mtime(&dest, *mtime).map_err(io_err(rel))?;
        }
        Ok(self.stats)
    }
}

/// Owners are not restored, so neither are setuid/setgid bits: a file
/// restored by root must never become setuid-root.
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

/// Creates the missing parents of `rel` under `root`, refusing symlinks.
fn ensure_parents(root: &Path, rel: &Path) -> Result<(), ExtractError> {
    let mut cur = root.to_path_buf();
    let mut sofar = PathBuf::new();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        cur.push(c);
        sofar.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ExtractError::SymlinkEscape {
                    path: rel.to_owned(),
                    link: sofar,
                });
            }
            Ok(_) => {
                return Err(ExtractError::Io {
                    path: rel.to_owned(),
                    source: io::Error::other(format!("{} is not a directory", sofar.display())),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(io_err(rel))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o700))
                    .map_err(io_err(rel))?;
            }
            Err(e) => return Err(io_err(rel)(e)),
        }
    }
    Ok(())
}

/// A later entry of the same name replaces a file or symlink, never a directory.
fn remove_non_dir(dest: &Path, rel: &Path) -> Result<(), ExtractError> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Err(ExtractError::Io {
            path: rel.to_owned(),
            source: io::Error::other("a directory of that name was already restored"),
        }),
        Ok(_) => fs::remove_file(dest).map_err(io_err(rel)),
        Err(_) => Ok(()),
    }
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
