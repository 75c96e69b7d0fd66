//! The data path of BitDust, streamed with memory bounded independently of
//! the input size.
//!
//! Backup: read files and folders -> tar archive -> zstd -> fixed-size blocks
//! -> encrypt + sign + ECC fragments ([`bitdust_block`]) -> a [`FragmentSink`].
//! Compression runs on one thread while sealing and writing run on another,
//! with at most a few blocks in flight between them.
//!
//! Restore: a [`FragmentSource`] -> verify -> decode -> check signature ->
//! decrypt -> decompress -> extract into a target directory, never writing
//! outside it.

mod archive;
mod backup;
mod extract;
pub mod local;
mod restore;
mod sink;

pub use backup::{BackupError, BackupKeyMaterial, BackupOptions, BackupReport, backup};
pub use restore::{
    BlockHealth, BlocksReport, ChunkReader, RestoreError, RestoreOptions, RestoreReport,
    VerifyReport, chunk_reader, extract_archive, load_manifest, restore, restore_blocks, verify,
};
pub use sink::{FragmentSink, FragmentSource, Progress, SinkError, SourceError};

/// Default desired block size: 4 MiB.
pub const DEFAULT_BLOCK_SIZE: usize = 4 * 1024 * 1024;
/// Default maximum block size: 64 MiB.
pub const DEFAULT_MAX_BLOCK_SIZE: usize = 64 * 1024 * 1024;
/// Default zstd level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
