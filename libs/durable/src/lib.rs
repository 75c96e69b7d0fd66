//! The file-system steps that make storage durable, behind one small trait,
//! so a test can record them and replay the disk as a crash at any point
//! would leave it: the supplier's store (`libs/supplier/tests/crash_points.rs`)
//! and the local store's fragment sink (`libs/pipeline/tests/sink_crash_points.rs`).
//!
//! The model: a file's data is durable once the file is fsynced; a name
//! created, renamed or removed in a directory is durable once that
//! directory is fsynced; an index (LMDB) commit is durable when it returns.
//! Each store takes every step that matters through [`Fs`], in an order
//! that keeps everything it acknowledged whole at every crash point.

#[cfg(feature = "record")]
pub mod record;

use std::fs::File;
use std::io;
use std::path::Path;

/// The durable file-system steps of a store.
pub trait Fs: Send + Sync {
    /// Makes the data of the file at `path` durable (fsync).
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to` (same file system).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable (fsync of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates the directory `dir` (its parent exists).
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes the directory `dir` and everything in it.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// An index transaction was committed (durable from now on).
    fn committed(&self) {}
}

/// The real file system.
#[derive(Debug, Default)]
pub struct RealFs;

impl Fs for RealFs {
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)
    }
}
