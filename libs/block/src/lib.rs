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
pub mod pack;
pub mod root;
mod seal;

/// Signing arbitrary bytes as headers and manifests, so fuzzing reaches the
/// checks that come after a signature (`tests/src/fuzz.rs`). Not for
/// anything else: real headers and manifests come from [`BlockSealer`] and
/// [`Manifest::to_signed_bytes`].
#[doc(hidden)]
pub mod fuzzing {
    use bitdust_crypto::Identity;

    use crate::fragment::{FORMAT_VERSION, FRAGMENT_MAGIC};

    /// A fragment file whose header is `header_bytes`, signed by `identity`.
    pub fn signed_fragment(
        identity: &Identity,
        parity: bool,
        index: u16,
        header_bytes: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let signature = identity.sign(crate::header::HEADER_CONTEXT, header_bytes);
        let mut out = Vec::with_capacity(header_bytes.len() + payload.len() + 96);
        out.extend_from_slice(&FRAGMENT_MAGIC);
        out.push(FORMAT_VERSION);
        out.push(u8::from(parity));
        out.extend_from_slice(&index.to_le_bytes());
        out.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(header_bytes);
        out.extend_from_slice(&signature);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A manifest file whose body is `body`, signed by `identity`.
    pub fn signed_manifest(identity: &Identity, body: &[u8]) -> Vec<u8> {
        crate::manifest::signed_file(identity, body.to_vec())
    }
}

pub use fragment::{
    FORMAT_VERSION, FRAGMENT_MAGIC, FRAGMENT_PREFIX_LEN, FragmentError, FragmentPrefix,
    MAX_HEADER_LEN, check_fragment, fragment_head, read_fragment, write_fragment,
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
