//! Sealed blocks: the unit BitDust stores.
//!
//! A block of the compressed archive stream is encrypted with age to the
//! backup's key, padded and cut into the fragments of an ECC [`Code`], and
//! described by a [`BlockHeader`] signed by the customer. Every fragment is
//! stored as one fragment file (see `docs/format.md`): a small fixed prefix,
//! the signed header, and the payload. A fragment whose hash does not match the
//! signed header is treated as missing, so a corrupted or malicious fragment
//! can never poison a decode.
//!
//! [`Code`]: bitdust_ecc::Code

mod fragment;
mod header;
mod ids;
mod manifest;
mod seal;

pub use fragment::{
    FORMAT_VERSION, FRAGMENT_MAGIC, FRAGMENT_PREFIX_LEN, FragmentError, FragmentPrefix,
    MAX_HEADER_LEN, check_fragment, read_fragment, write_fragment,
};
pub use header::{BlockHeader, HeaderError, SignedHeader, commitment};
pub use ids::{BackupId, BackupIdParseError};
pub use manifest::{BackupInfo, MAX_MANIFEST_BYTES, Manifest, ManifestError};
pub use seal::{
    BlockError, BlockOpener, BlockSealer, FragmentRejection, SealedBlock, max_cipher_len,
};

/// The largest block (compressed plaintext) this version accepts, whatever a
/// header claims; bounds the memory a restore may be made to use.
pub const MAX_BLOCK_LEN: u64 = 256 * 1024 * 1024;
