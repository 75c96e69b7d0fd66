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
pub mod chunker;
mod extract;
pub mod forget;
pub mod local;
pub mod meta;
pub mod prune;
pub mod remote;
pub mod repo;
mod restore;
mod sink;
pub mod snapshot;
pub mod stages;
pub mod store;

pub use archive::{ArchiveSummary, write_archive};
pub use backup::{
    ArchiveInput, BackupError, BackupKeyMaterial, BackupOptions, BackupReport, LocalPaths, backup,
};
pub use restore::{
    BlockHealth, BlocksReport, ChunkReader, HealthOf, RestoreError, RestoreOptions, RestoreReport,
    VerifyReport, chunk_reader, extract_archive, load_manifest, restore, restore_blocks, verify,
};
pub use sink::{FragmentSink, FragmentSource, Progress, SinkError, SourceError};

/// Default desired block size: 4 MiB.
pub const DEFAULT_BLOCK_SIZE: usize = 4 * 1024 * 1024;
/// Default maximum block size: 64 MiB.
pub const DEFAULT_MAX_BLOCK_SIZE: usize = 64 * 1024 * 1024;
/// Default zstd level: 2 stores within 1% of restic's repository (its
/// `auto` compression) and backs up 13% faster than 3, which stores 2% less
/// (docs/performance.md, "Issue 19": the bench tree on two cores).
pub const DEFAULT_ZSTD_LEVEL: i32 = 2;

/// The largest fragment file a block of the version `manifest` describes
/// can be, with blocks of at most `max_block_size` bytes: its payload is at
/// most the version's stored bytes spread over one block's fragments, and at
/// most what the largest block's ciphertext needs, plus the fragment
/// prefix, header, signature and length. A source never needs to accept
/// (or allocate for) a larger object.
pub fn fragment_object_bound(manifest: &bitdust_block::Manifest, max_block_size: usize) -> u64 {
    let Ok(code) = bitdust_ecc::Code::new(manifest.scheme, manifest.suppliers) else {
        return 0;
    };
    let count = code.fragment_count() as u64;
    let max_cipher = bitdust_block::max_cipher_len(max_block_size as u64);
    let by_block = code.fragment_len(usize::try_from(max_cipher).unwrap_or(usize::MAX)) as u64;
    let by_total = manifest.stored_bytes / count.max(1);
    by_block.min(by_total)
        + (bitdust_block::FRAGMENT_PREFIX_LEN + bitdust_block::MAX_HEADER_LEN + 64 + 8) as u64
}
