//! Writing the tar archive of the source paths.
//!
//! GNU tar format: long names and link targets use GNU extensions, names are
//! raw bytes (non-UTF-8 names survive), and every entry keeps its mode and
//! mtime. Entry names are the absolute source paths without the leading `/`,
//! so `backup /home/a/docs` restores to `OUT/home/a/docs`.

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::OFlags;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header, HeaderMode};

use crate::Progress;

/// What went into an archive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Entries left out, each with the reason (the first 1000 are named).
    pub skipped: Vec<String>,
    /// Entries left out in all (only the first ones are named in `skipped`).
    pub skipped_count: u64,
    /// Bytes of file content read.
    pub content_bytes: u64,
}

/// At most this many skipped entries are named; the rest are counted.
const MAX_SKIPPED_NAMED: usize = 1000;

impl ArchiveSummary {
    fn skip(&mut self, why: String) {
        self.skipped_count += 1;
        if self.skipped.len() < MAX_SKIPPED_NAMED {
            self.skipped.push(why);
        } else if self.skipped.len() == MAX_SKIPPED_NAMED {
            self.skipped
                .push("(more entries skipped; only the first 1000 are named)".into());
        }
    }
}

/// Archives `sources` (absolute paths) into `out`, streaming file contents,
/// with the rights of the calling process: what it may not read is skipped
/// and named in the summary. `progress` advances by content bytes read;
/// setting `cancel` stops it (the error is `BrokenPipe`).
pub fn write_archive<W: Write>(
    sources: &[PathBuf],
    out: W,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> io::Result<(W, ArchiveSummary)> {
    let mut builder = tar::Builder::new(out);
    builder.mode(HeaderMode::Complete);
    builder.follow_symlinks(false);
    let mut stats = ArchiveSummary::default();
    for source in sources {
        let walk = walkdir::WalkDir::new(source)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walk {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    stats.skip(format!("{path}: {e}"));
                    continue;
                }
            };
            let path = entry.path();
            let name = archive_name(path);
            // A source given as a symlink (`backup ~/Documents` pointing to
            // another disk) is backed up as what it points to; symlinks below
            // it are kept as symlinks.
            let meta = if entry.depth() == 0 && entry.path_is_symlink() {
                std::fs::metadata(path).or_else(|_| entry.metadata().map_err(io::Error::from))
            } else {
                entry.metadata().map_err(io::Error::from)
            };
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    stats.skip(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let mut h = header_for(&meta, EntryType::Directory);
                builder.append_data(&mut h, &name, io::empty())?;
                stats.directories += 1;
            } else if ft.is_symlink() {
                let target = match std::fs::read_link(path) {
                    Ok(t) => t,
                    Err(e) => {
                        stats.skip(format!("{}: {e}", path.display()));
                        continue;
                    }
                };
                let mut h = header_for(&meta, EntryType::Symlink);
                builder.append_link(&mut h, &name, &target)?;
                stats.symlinks += 1;
            } else if ft.is_file() {
                // Opened first, then described from the open file, so what we
                // read is what the header says.
                // Never through a symlink swapped in since the walk, and never
                // blocking on a FIFO swapped in: such entries are skipped.
                let flags = if entry.depth() == 0 {
                    OFlags::NONBLOCK
                } else {
                    OFlags::NONBLOCK | OFlags::NOFOLLOW
                };
                let file = match OpenOptions::new()
                    .read(true)
                    .custom_flags(flags.bits() as i32)
                    .open(path)
                {
                    Ok(f) => f,
                    Err(e) => {
                        stats.skip(format!("{}: {e}", path.display()));
                        continue;
                    }
                };
                let meta = file.metadata()?;
                if !meta.is_file() {
                    stats.skip(format!(
                        "{}: changed into a non-regular file while being backed up",
                        path.display()
                    ));
                    continue;
                }
                let size = meta.len();
                let mut h = header_for(&meta, EntryType::Regular);
                h.set_size(size);
                let mut reader = SizedReader {
                    inner: file,
                    remaining: size,
                    short: false,
                    progress,
                    cancel,
                };
                builder.append_data(&mut h, &name, &mut reader)?;
                if reader.short {
                    stats.skip(format!(
                        "{}: shrank while being read; its tail is zero-filled",
                        path.display()
                    ));
                }
                stats.files += 1;
                stats.content_bytes += size;
            } else {
                stats.skip(format!(
                    "{}: not a regular file, directory or symlink (sockets, FIFOs and devices are not backed up)",
                    path.display()
                ));
            }
        }
    }
    let out = builder.into_inner()?;
    Ok((out, stats))
}

fn archive_name(path: &Path) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    let trimmed = bytes
        .iter()
        .position(|b| *b != b'/')
        .map_or(&b"."[..], |i| &bytes[i..]);
    PathBuf::from(std::ffi::OsStr::from_bytes(trimmed))
}

fn header_for(meta: &Metadata, kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_metadata_in_mode(meta, HeaderMode::Complete);
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    if kind != EntryType::Regular {
        h.set_size(0);
    }
    h
}

/// Reads exactly `remaining` bytes: a file that shrank while being read is
/// padded with zeros and one that grew is cut, so the tar stream stays valid.
struct SizedReader<'a> {
    inner: File,
    remaining: u64,
    short: bool,
    progress: &'a dyn Progress,
    cancel: &'a AtomicBool,
}

impl Read for SizedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = if self.short {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.remaining -= n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
