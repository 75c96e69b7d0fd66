//! The signed block header carried by every fragment.

use bitdust_crypto::{Identity, NodeId, Signature, SignatureError};
use bitdust_ecc::{Code, EccError, Scheme};
use bitdust_proto::format::v1 as pb;
use prost::Message;

use crate::{BackupId, MAX_BLOCK_LEN};

/// What the customer's signature over a block header is made under.
pub(crate) const HEADER_CONTEXT: &[u8] = b"bitdust block header v1";

/// A validated block header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// The customer who signed it.
    pub customer: NodeId,
    /// The backup the block belongs to.
    pub backup_id: BackupId,
    /// The backup version, from 1.
    pub version: u64,
    /// The block number, from 0.
    pub block: u64,
    /// The ECC scheme.
    pub scheme: Scheme,
    /// Number of suppliers (positions).
    pub suppliers: usize,
    /// Bytes of compressed archive in the block.
    pub plain_len: u64,
    /// Bytes of ciphertext held (zero-padded) by the data fragments.
    pub cipher_len: u64,
    /// Bytes of every fragment payload.
    pub fragment_len: u64,
    /// BLAKE3 of every fragment payload, by fragment number.
    pub fragment_hashes: Vec<[u8; 32]>,
    /// Whether this is the version's last block.
    pub last: bool,
}

/// A block header failed to parse, validate or verify.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Not protobuf.
    #[error("the block header is not valid protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A field is out of range or inconsistent.
    #[error("the block header is invalid: {0}")]
    Invalid(String),
    /// The signature does not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Signed by somebody else than the expected customer.
    #[error(
        "the block is signed by {found}, not by this customer {expected}; restore with the keys of {found}"
    )]
    WrongCustomer {
        /// The customer expected.
        expected: NodeId,
        /// The key the header names.
        found: NodeId,
    },
}

impl BlockHeader {
    /// The ECC code this header's block was encoded with.
    pub fn code(&self) -> Result<Code, EccError> {
        Code::new(self.scheme, self.suppliers)
    }

    fn to_proto(&self) -> pb::BlockHeader {
        pb::BlockHeader {
            customer: self.customer.as_bytes().to_vec(),
            backup_id: self.backup_id.0.to_vec(),
            version: self.version,
            block: self.block,
            scheme: scheme_to_proto(self.scheme) as i32,
            suppliers: self.suppliers as u32,
            plain_len: self.plain_len,
            cipher_len: self.cipher_len,
            fragment_len: self.fragment_len,
            fragment_hashes: self.fragment_hashes.iter().map(|h| h.to_vec()).collect(),
            last: self.last,
        }
    }

    /// Encodes and signs the header.
    pub fn sign(self, identity: &Identity) -> SignedHeader {
        let bytes = self.to_proto().encode_to_vec();
        let signature = identity.sign(HEADER_CONTEXT, &bytes);
        SignedHeader {
            header: self,
            bytes,
            signature,
        }
    }
}

pub(crate) fn scheme_to_proto(s: Scheme) -> pb::Scheme {
    match s {
        Scheme::Xor => pb::Scheme::Xor,
        Scheme::ReedSolomon => pb::Scheme::ReedSolomon,
    }
}

pub(crate) fn scheme_from_proto(v: i32) -> Option<Scheme> {
    match pb::Scheme::try_from(v).ok()? {
        pb::Scheme::Xor => Some(Scheme::Xor),
        pb::Scheme::ReedSolomon => Some(Scheme::ReedSolomon),
        pb::Scheme::Unspecified => None,
    }
}

impl TryFrom<pb::BlockHeader> for BlockHeader {
    type Error = HeaderError;

    fn try_from(p: pb::BlockHeader) -> Result<Self, Self::Error> {
        let invalid = |s: String| HeaderError::Invalid(s);
        let customer = NodeId::try_from(p.customer.as_slice())
            .map_err(|_| invalid("customer is not a 32-byte key".into()))?;
        let backup_id = BackupId::try_from(p.backup_id.as_slice())
            .map_err(|_| invalid("backup id is not 16 bytes".into()))?;
        let scheme = scheme_from_proto(p.scheme)
            .ok_or_else(|| invalid(format!("unknown scheme {}", p.scheme)))?;
        let suppliers = p.suppliers as usize;
        let code = Code::new(scheme, suppliers).map_err(|e| invalid(e.to_string()))?;
        // Version 0 is a pack (docs/snapshots.md): never the last block of
        // a version.
        if p.version == 0 && p.last {
            return Err(invalid(
                "a pack (version 0) marked as a version's last block".into(),
            ));
        }
        if p.plain_len > MAX_BLOCK_LEN || p.cipher_len > MAX_BLOCK_LEN + (1 << 20) {
            return Err(invalid(format!(
                "block of {} bytes is larger than the {} allowed",
                p.plain_len.max(p.cipher_len),
                MAX_BLOCK_LEN
            )));
        }
        let expected_fl = code.fragment_len(p.cipher_len as usize) as u64;
        if p.fragment_len != expected_fl {
            return Err(invalid(format!(
                "fragment length {} does not fit {} bytes of ciphertext (expected {expected_fl})",
                p.fragment_len, p.cipher_len
            )));
        }
        if p.fragment_hashes.len() != code.fragment_count() {
            return Err(invalid(format!(
                "{} fragment hashes for a code of {} fragments",
                p.fragment_hashes.len(),
                code.fragment_count()
            )));
        }
        let fragment_hashes = p
            .fragment_hashes
            .iter()
            .map(|h| <[u8; 32]>::try_from(h.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid("a fragment hash is not 32 bytes".into()))?;
        Ok(BlockHeader {
            customer,
            backup_id,
            version: p.version,
            block: p.block,
            scheme,
            suppliers,
            plain_len: p.plain_len,
            cipher_len: p.cipher_len,
            fragment_len: p.fragment_len,
            fragment_hashes,
            last: p.last,
        })
    }
}

/// The commitment to signed header bytes: their BLAKE3 hash.
pub fn commitment(header_bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(header_bytes).as_bytes()
}

/// A header with the exact bytes that were signed and the signature.
#[derive(Clone, Debug)]
pub struct SignedHeader {
    /// The decoded header.
    pub header: BlockHeader,
    /// The protobuf bytes the signature covers.
    pub bytes: Vec<u8>,
    /// The customer's ed25519 signature.
    pub signature: Signature,
}

impl SignedHeader {
    /// What a manifest commits to for this header: the BLAKE3 hash of the
    /// exact signed header bytes.
    pub fn commitment(&self) -> [u8; 32] {
        commitment(&self.bytes)
    }

    /// Parses header bytes, checks it was signed by `expected` and verifies the
    /// signature over exactly these bytes.
    pub fn verify(
        bytes: Vec<u8>,
        signature: Signature,
        expected: &NodeId,
    ) -> Result<Self, HeaderError> {
        let header = BlockHeader::try_from(pb::BlockHeader::decode(bytes.as_slice())?)?;
        if header.customer != *expected {
            return Err(HeaderError::WrongCustomer {
                expected: *expected,
                found: header.customer,
            });
        }
        expected.verify(HEADER_CONTEXT, &bytes, &signature)?;
        Ok(SignedHeader {
            header,
            bytes,
            signature,
        })
    }
}
