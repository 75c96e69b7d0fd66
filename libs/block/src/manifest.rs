//! The signed manifest of one backup version.
//!
//! File layout: magic "BDMF", format version (1 byte, `2`), then a protobuf
//! `Signed { body: Manifest, signature }`, the signature made under the
//! context "bitdust manifest v1". Version 2 added the block header
//! commitments; version 1 manifests are refused (nothing was released).

use bitdust_crypto::{BackupKey, Identity, NodeId, OpenError, SealError, open, seal_into};
use bitdust_ecc::Scheme;
use bitdust_proto::format::v1 as pb;
use prost::Message;

use crate::BackupId;
use crate::header::{scheme_from_proto, scheme_to_proto};

const MANIFEST_MAGIC: [u8; 4] = *b"BDMF";
const MANIFEST_VERSION: u8 = 2;
const MANIFEST_CONTEXT: &[u8] = b"bitdust manifest v1";
/// The largest manifest file read or fetched: 32 bytes of header commitment
/// per block leave room for about two million blocks (8 TiB in 4 MiB
/// blocks).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
const MAX_MANIFEST_LEN: usize = MAX_MANIFEST_BYTES as usize;

/// A manifest failed to parse, verify or open.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not a manifest, or another version.
    #[error("not a BitDust manifest of format version 2")]
    BadMagic,
    /// Not protobuf or fields out of range.
    #[error("the manifest is malformed: {0}")]
    Malformed(String),
    /// Signed by someone else.
    #[error(
        "the manifest is signed by {found}, not by this customer {expected}; restore with the keys of {found}"
    )]
    WrongCustomer {
        /// Expected signer.
        expected: NodeId,
        /// Named signer.
        found: NodeId,
    },
    /// Signature does not verify.
    #[error(transparent)]
    Signature(#[from] bitdust_crypto::SignatureError),
    /// Sealing the info failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The sealed info or wrapped key did not open.
    #[error("the manifest's encrypted part does not open: {0}")]
    Open(#[from] OpenError),
}

/// What a backup version contains (kept encrypted in the manifest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupInfo {
    /// Source paths as given, raw bytes.
    pub source_paths: Vec<Vec<u8>>,
    /// Regular files archived.
    pub files: u64,
    /// Directories archived.
    pub directories: u64,
    /// Symlinks archived.
    pub symlinks: u64,
    /// Entries skipped, with reasons.
    pub skipped: Vec<String>,
}

/// One backup version's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Who made it.
    pub customer: NodeId,
    /// The backup.
    pub backup_id: BackupId,
    /// The version, from 1.
    pub version: u64,
    /// Seconds since the epoch.
    pub created_unix: i64,
    /// ECC scheme of all blocks.
    pub scheme: Scheme,
    /// Number of suppliers.
    pub suppliers: usize,
    /// Number of blocks.
    pub blocks: u64,
    /// Uncompressed archive bytes.
    pub archive_bytes: u64,
    /// Compressed bytes.
    pub compressed_bytes: u64,
    /// Bytes of all fragment payloads.
    pub stored_bytes: u64,
    /// Recipient the blocks are encrypted to.
    pub backup_recipient: String,
    /// The backup key, wrapped to the master recipient.
    pub wrapped_backup_key: Vec<u8>,
    /// [`BackupInfo`], encrypted to the backup key.
    pub sealed_info: Vec<u8>,
    /// zstd level used.
    pub zstd_level: i32,
    /// The commitment ([`crate::SignedHeader::commitment`]) of every block's
    /// signed header, by block number: which header counts for each block.
    pub block_headers: Vec<[u8; 32]>,
}

/// Decrypts a sealed [`BackupInfo`] (of a manifest or a snapshot root).
pub(crate) fn open_info(sealed: &[u8], key: &BackupKey) -> Result<BackupInfo, ManifestError> {
    let bytes = open(key.age_identity(), sealed, MAX_MANIFEST_LEN)?;
    let p = pb::BackupInfo::decode(bytes.as_slice())
        .map_err(|e| ManifestError::Malformed(e.to_string()))?;
    Ok(BackupInfo {
        source_paths: p.source_paths,
        files: p.files,
        directories: p.directories,
        symlinks: p.symlinks,
        skipped: p.skipped,
    })
}

impl Manifest {
    /// Encrypts `info` to the backup key, for [`Manifest::sealed_info`].
    pub fn seal_info(
        info: &BackupInfo,
        key: &age::x25519::Recipient,
    ) -> Result<Vec<u8>, ManifestError> {
        let p = pb::BackupInfo {
            source_paths: info.source_paths.clone(),
            files: info.files,
            directories: info.directories,
            symlinks: info.symlinks,
            skipped: info.skipped.clone(),
        };
        let mut out = Vec::new();
        seal_into(key, &p.encode_to_vec(), &mut out)?;
        Ok(out)
    }

    /// Decrypts the [`BackupInfo`].
    pub fn open_info(&self, key: &BackupKey) -> Result<BackupInfo, ManifestError> {
        open_info(&self.sealed_info, key)
    }

    /// Signs and encodes the manifest file.
    pub fn to_signed_bytes(&self, identity: &Identity) -> Vec<u8> {
        let body = pb::Manifest {
            customer: self.customer.as_bytes().to_vec(),
            backup_id: self.backup_id.0.to_vec(),
            version: self.version,
            created_unix: self.created_unix,
            scheme: scheme_to_proto(self.scheme) as i32,
            suppliers: self.suppliers as u32,
            blocks: self.blocks,
            archive_bytes: self.archive_bytes,
            compressed_bytes: self.compressed_bytes,
            stored_bytes: self.stored_bytes,
            backup_recipient: self.backup_recipient.clone(),
            wrapped_backup_key: self.wrapped_backup_key.clone(),
            sealed_info: self.sealed_info.clone(),
            zstd_level: self.zstd_level,
            block_header_hashes: self.block_headers.concat(),
        }
        .encode_to_vec();
        signed_file(identity, body)
    }

    /// The signed header commitment of `block`, if the version has it.
    pub fn block_header(&self, block: u64) -> Option<&[u8; 32]> {
        usize::try_from(block)
            .ok()
            .and_then(|b| self.block_headers.get(b))
    }

    /// The body of [`Manifest::to_signed_bytes`] (for seeding fuzzers).
    #[doc(hidden)]
    pub fn body_of(file: &[u8]) -> Option<Vec<u8>> {
        pb::Signed::decode(file.get(5..)?).ok().map(|s| s.body)
    }

    /// Parses a manifest file and verifies it was signed by `expected`.
    pub fn from_signed_bytes(bytes: &[u8], expected: &NodeId) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::Malformed(format!(
                "{} bytes, over the {MAX_MANIFEST_LEN} allowed",
                bytes.len()
            )));
        }
        let malformed = |s: String| ManifestError::Malformed(s);
        let p: pb::Manifest = verify_signed(
            bytes,
            MANIFEST_VERSION,
            MANIFEST_CONTEXT,
            expected,
            |m: &pb::Manifest| &m.customer,
        )?;
        let customer = *expected;
        let scheme = scheme_from_proto(p.scheme)
            .ok_or_else(|| malformed(format!("unknown scheme {}", p.scheme)))?;
        bitdust_ecc::Code::new(scheme, p.suppliers as usize)
            .map_err(|e| malformed(e.to_string()))?;
        if p.blocks.checked_mul(32) != Some(p.block_header_hashes.len() as u64) {
            return Err(malformed(format!(
                "{} bytes of block header hashes for {} blocks (32 each)",
                p.block_header_hashes.len(),
                p.blocks
            )));
        }
        let block_headers = p
            .block_header_hashes
            .chunks_exact(32)
            .map(|c| <[u8; 32]>::try_from(c).unwrap_or([0; 32]))
            .collect();
        Ok(Manifest {
            customer,
            backup_id: BackupId::try_from(p.backup_id.as_slice())
                .map_err(|e| malformed(e.to_string()))?,
            version: p.version,
            created_unix: p.created_unix,
            scheme,
            suppliers: p.suppliers as usize,
            blocks: p.blocks,
            archive_bytes: p.archive_bytes,
            compressed_bytes: p.compressed_bytes,
            stored_bytes: p.stored_bytes,
            backup_recipient: p.backup_recipient,
            wrapped_backup_key: p.wrapped_backup_key,
            sealed_info: p.sealed_info,
            zstd_level: p.zstd_level,
            block_headers,
        })
    }
}

/// Checks the magic and `version` of a signed file, decodes its body as an
/// `M`, and verifies that the customer it names (`customer_of`) is
/// `expected` and signed it under `context`.
pub(crate) fn verify_signed<M: Message + Default>(
    bytes: &[u8],
    version: u8,
    context: &[u8],
    expected: &NodeId,
    customer_of: impl FnOnce(&M) -> &Vec<u8>,
) -> Result<M, ManifestError> {
    let malformed = |s: String| ManifestError::Malformed(s);
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(malformed(format!(
            "{} bytes, over the {MAX_MANIFEST_BYTES} allowed",
            bytes.len()
        )));
    }
    if bytes.len() < 5 || bytes[..4] != MANIFEST_MAGIC || bytes[4] != version {
        return Err(ManifestError::BadMagic);
    }
    let signed = pb::Signed::decode(&bytes[5..]).map_err(|e| malformed(e.to_string()))?;
    let body = M::decode(signed.body.as_slice()).map_err(|e| malformed(e.to_string()))?;
    let customer = NodeId::try_from(customer_of(&body).as_slice())
        .map_err(|_| malformed("customer is not 32 bytes".into()))?;
    if customer != *expected {
        return Err(ManifestError::WrongCustomer {
            expected: *expected,
            found: customer,
        });
    }
    let sig: [u8; 64] = signed
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| malformed("signature is not 64 bytes".into()))?;
    customer.verify(context, &signed.body, &sig)?;
    Ok(body)
}

/// The manifest file of `body`: magic, version, and the body with its
/// signature by `identity`.
pub(crate) fn signed_file(identity: &Identity, body: Vec<u8>) -> Vec<u8> {
    let signature = identity.sign(MANIFEST_CONTEXT, &body).to_vec();
    let mut out = Vec::with_capacity(body.len() + 80);
    out.extend_from_slice(&MANIFEST_MAGIC);
    out.push(MANIFEST_VERSION);
    out.extend_from_slice(&pb::Signed { body, signature }.encode_to_vec());
    out
}
