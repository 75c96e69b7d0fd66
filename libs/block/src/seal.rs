//! Sealing a block into fragments, and opening it again from fragments.

use std::io::Read;
use std::sync::Arc;

use bitdust_crypto::{BackupKey, Identity, NodeId, OpenError, SealError, open, seal_into};
use bitdust_ecc::{AlignedBuf, Code, EccError};

use crate::fragment::{FragmentError, read_fragment};
use crate::header::{BlockHeader, HeaderError, SignedHeader};
use crate::{BackupId, MAX_BLOCK_LEN};

/// Sealing or opening a block failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Encryption failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Too many fragments are missing or damaged.
    #[error("block {block} cannot be recovered: {source}")]
    Unrecoverable {
        /// The block number.
        block: u64,
        /// What the decoder said.
        source: EccError,
    },
    /// No fragment of the block carried a valid signed header.
    #[error("block {block} has no fragment with a valid header signed by {customer} ({reasons})")]
    NoValidHeader {
        /// The block number.
        block: u64,
        /// The expected signer.
        customer: NodeId,
        /// Why the fragments seen were rejected.
        reasons: String,
    },
    /// The block decrypted badly: altered, or not our key.
    #[error("block {block} does not decrypt: {source}")]
    Decrypt {
        /// The block number.
        block: u64,
        /// What age said.
        source: OpenError,
    },
    /// The blocks do not form one whole version.
    #[error("block {block} {reason}: the backup was cut short or mixed with another version")]
    Sequence {
        /// The block number.
        block: u64,
        /// What is wrong.
        reason: String,
    },
    /// The decrypted length disagrees with the signed header.
    #[error("block {block} decrypted to {got} bytes but its header says {expected}")]
    LengthMismatch {
        /// The block number.
        block: u64,
        /// Bytes decrypted.
        got: usize,
        /// Bytes in the header.
        expected: u64,
    },
}

/// Encrypts, encodes and signs the blocks of one backup version.
pub struct BlockSealer {
    identity: Arc<Identity>,
    backup_id: BackupId,
    version: u64,
    code: Code,
    recipient: age::x25519::Recipient,
}

/// A sealed block: its signed header and all fragment payloads. Reused from
/// block to block so a backup allocates its buffers once.
#[derive(Default)]
pub struct SealedBlock {
    header: Option<SignedHeader>,
    /// Cache-line aligned, so the encoder's loads and stores are too.
    fragments: AlignedBuf,
    fragment_len: usize,
}

impl SealedBlock {
    /// The signed header (after a successful [`BlockSealer::seal`]).
    pub fn header(&self) -> Option<&SignedHeader> {
        self.header.as_ref()
    }

    /// Payload of fragment `f`.
    pub fn fragment(&self, f: usize) -> &[u8] {
        &self.fragments[f * self.fragment_len..(f + 1) * self.fragment_len]
    }

    /// The length of every fragment's payload.
    pub fn fragment_len(&self) -> usize {
        self.fragment_len
    }

    /// Takes the fragment payloads (fragment `f` at `f * fragment_len`),
    /// leaving `spare`, emptied, for the next block to be sealed in: a
    /// sink that sends them on after `put_block` returns keeps them without
    /// a copy. The header stays.
    pub fn take_fragments(&mut self, mut spare: AlignedBuf) -> AlignedBuf {
        spare.clear();
        std::mem::replace(&mut self.fragments, spare)
    }
}

impl BlockSealer {
    /// A sealer for one version of a backup, encrypting to `recipient`.
    pub fn new(
        identity: Arc<Identity>,
        backup_id: BackupId,
        version: u64,
        code: Code,
        recipient: age::x25519::Recipient,
    ) -> Self {
        BlockSealer {
            identity,
            backup_id,
            version,
            code,
            recipient,
        }
    }

    /// The ECC code used.
    pub fn code(&self) -> &Code {
        &self.code
    }

    /// Seals block number `block` holding `plain` into `out`.
    pub fn seal(
        &self,
        block: u64,
        last: bool,
        plain: &[u8],
        out: &mut SealedBlock,
    ) -> Result<(), BlockError> {
        // age writes the ciphertext straight into the fragment buffer, where
        // the data fragments are laid out back to back.
        out.fragments.clear();
        seal_into(&self.recipient, plain, &mut out.fragments)?;
        self.finish(block, last, plain.len() as u64, out)
    }

    /// Seals pack number `pack` (a sealer made for version 0) into `out`:
    /// its body (see [`crate::pack`]) is what the fragments carry, and the
    /// header's `plain_len` is its chunk data's plain length.
    pub fn seal_pack(
        &self,
        pack: u64,
        writer: &crate::pack::PackWriter,
        keys: &bitdust_crypto::DedupKeys,
        out: &mut SealedBlock,
    ) -> Result<(), crate::pack::PackError> {
        debug_assert_eq!(self.version, 0, "packs are sealed as version 0");
        out.fragments.clear();
        // Room for every fragment at once: growing the buffer as the body
        // is written and then to the parity would hold two copies for a
        // moment (issue 19: the first backup's peak memory).
        let bound = self.code.fragment_len(writer.body_len_bound());
        out.fragments
            .make_room(bound.saturating_mul(self.code.fragment_count()));
        let aad = crate::pack::list_aad(&self.identity.node_id(), self.backup_id, pack);
        writer.write_body(keys, &aad, &self.recipient, &mut out.fragments)?;
        self.finish(pack, false, writer.data_len() as u64, out)
            .map_err(|e| crate::pack::PackError::Format(e.to_string()))
    }

    /// Encodes the ciphertext in `out` and signs the header.
    fn finish(
        &self,
        block: u64,
        last: bool,
        plain_len: u64,
        out: &mut SealedBlock,
    ) -> Result<(), BlockError> {
        let cipher_len = out.fragments.len();
        let fl = self.code.fragment_len(cipher_len);
        let count = self.code.fragment_count();
        out.fragments.resize(count * fl, 0);
        out.fragment_len = fl;
        self.code
            .encode(&mut out.fragments, fl)
            .map_err(|source| BlockError::Unrecoverable { block, source })?;
        let fragment_hashes = out
            .fragments
            .chunks_exact(fl)
            .map(|f| *blake3::hash(f).as_bytes())
            .collect();
        let header = BlockHeader {
            customer: self.identity.node_id(),
            backup_id: self.backup_id,
            version: self.version,
            block,
            scheme: self.code.scheme(),
            suppliers: self.code.suppliers(),
            plain_len,
            cipher_len: cipher_len as u64,
            fragment_len: fl as u64,
            fragment_hashes,
            last,
        };
        out.header = Some(header.sign(&self.identity));
        Ok(())
    }
}

/// Why one fragment was not used.
#[derive(Debug, thiserror::Error)]
pub enum FragmentRejection {
    /// The file could not be parsed.
    #[error(transparent)]
    Format(#[from] FragmentError),
    /// Its header did not verify.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// It belongs to another backup, version or block.
    #[error("it belongs to {0}")]
    Elsewhere(String),
    /// Its header differs from the block's other fragments.
    #[error("its signed header differs from the other fragments of the block")]
    HeaderConflict,
    /// Its header is not the one the version's manifest commits to: a
    /// fragment of a failed earlier attempt, or of another version that
    /// reused the name.
    #[error("its header is not the one the manifest commits to (a stale fragment)")]
    Stale,
    /// Its payload does not match the signed hash.
    #[error("its payload does not match the signed hash (corrupted)")]
    HashMismatch,
    /// Its number does not match where it was found.
    #[error("it is fragment {found}, expected {expected}")]
    Misplaced {
        /// Number in the file.
        found: usize,
        /// Number expected.
        expected: usize,
    },
}

/// The most ciphertext age makes of `plain` bytes: a header and 16 bytes
/// per 64 KiB chunk, with room to spare.
pub fn max_cipher_len(plain: u64) -> u64 {
    plain + plain / 4096 + 4096
}

/// Collects the fragments of one block, verifying each, and opens the block.
pub struct BlockOpener {
    expect_code: Option<(bitdust_ecc::Scheme, usize)>,
    expect_header: Option<[u8; 32]>,
    stale: u64,
    max_plain_len: u64,
    customer: NodeId,
    backup_id: BackupId,
    version: u64,
    block: u64,
    header: Option<SignedHeader>,
    code: Option<Code>,
    fragments: AlignedBuf,
    present: Vec<bool>,
    rejections: Vec<String>,
}

impl BlockOpener {
    /// Starts collecting block `block` of `backup_id`@`version` signed by `customer`.
    pub fn new(customer: NodeId, backup_id: BackupId, version: u64, block: u64) -> Self {
        BlockOpener {
            expect_code: None,
            expect_header: None,
            stale: 0,
            max_plain_len: MAX_BLOCK_LEN,
            customer,
            backup_id,
            version,
            block,
            header: None,
            code: None,
            fragments: AlignedBuf::new(),
            present: Vec::new(),
            rejections: Vec::new(),
        }
    }

    /// Accept only headers of this scheme and supplier count (the manifest's).
    pub fn expect_code(mut self, scheme: bitdust_ecc::Scheme, suppliers: usize) -> Self {
        self.expect_code = Some((scheme, suppliers));
        self
    }

    /// Accept only the header whose commitment
    /// ([`SignedHeader::commitment`]) is `commitment`, the one the version's
    /// manifest names for this block. Fragments carrying any other header,
    /// however validly signed, are erasures ([`FragmentRejection::Stale`]),
    /// so the first fragment seen never decides.
    pub fn expect_header(mut self, commitment: [u8; 32]) -> Self {
        self.expect_header = Some(commitment);
        self
    }

    /// Fragments rejected because their header is not the committed one.
    pub fn stale(&self) -> u64 {
        self.stale
    }

    /// Refuse headers claiming a block larger than `max` bytes, before any
    /// buffer is allocated for it.
    pub fn max_block_len(mut self, max: u64) -> Self {
        self.max_plain_len = max.min(MAX_BLOCK_LEN);
        self
    }

    /// The verified header, once a fragment has been accepted.
    pub fn header(&self) -> Option<&BlockHeader> {
        self.header.as_ref().map(|h| &h.header)
    }

    /// The commitment to the accepted signed header
    /// ([`SignedHeader::commitment`]), once a fragment was accepted.
    pub fn commitment(&self) -> Option<[u8; 32]> {
        self.header.as_ref().map(SignedHeader::commitment)
    }

    /// Which fragments are held and verified.
    pub fn present(&self) -> &[bool] {
        &self.present
    }

    /// Reasons fragments were rejected so far, one line each.
    pub fn rejections(&self) -> &[String] {
        &self.rejections
    }

    /// Reads one fragment file that should be fragment `expected`. A fragment
    /// that fails any check is recorded as rejected and treated as missing.
    pub fn add(
        &mut self,
        expected: usize,
        r: &mut impl Read,
        source: &str,
    ) -> Result<(), FragmentRejection> {
        let res = self.add_inner(expected, r);
        if let Err(e) = &res {
            if matches!(e, FragmentRejection::Stale) {
                self.stale += 1;
            }
            self.rejections.push(format!("{source}: {e}"));
        }
        res
    }

    fn add_inner(&mut self, expected: usize, r: &mut impl Read) -> Result<(), FragmentRejection> {
        let prefix = read_fragment(r)?;
        if prefix.index != expected {
            return Err(FragmentRejection::Misplaced {
                found: prefix.index,
                expected,
            });
        }
        if let Some(want) = &self.expect_header
            && crate::header::commitment(&prefix.header_bytes) != *want
        {
            // Say precisely what it is: a forgery, another block's
            // fragment, or a stale one of this very block.
            let other =
                SignedHeader::verify(prefix.header_bytes, prefix.signature, &self.customer)?;
            self.check_identity(&other.header)?;
            return Err(FragmentRejection::Stale);
        }
        match &self.header {
            Some(h) => {
                if h.bytes != prefix.header_bytes || h.signature != prefix.signature {
                    // Say precisely what it is: another block's fragment, a
                    // forgery, or a second signed header for this block.
                    let other = SignedHeader::verify(
                        prefix.header_bytes,
                        prefix.signature,
                        &self.customer,
                    )?;
                    self.check_identity(&other.header)?;
                    return Err(FragmentRejection::HeaderConflict);
                }
            }
            None => {
                let signed =
                    SignedHeader::verify(prefix.header_bytes, prefix.signature, &self.customer)?;
                let h = &signed.header;
                self.check_identity(h)?;
                let code = h.code().map_err(|e| HeaderError::Invalid(e.to_string()))?;
                let fl = h.fragment_len as usize;
                self.fragments = AlignedBuf::zeroed(code.fragment_count() * fl);
                self.present = vec![false; code.fragment_count()];
                self.code = Some(code);
                self.header = Some(signed);
            }
        }
        let (Some(h), Some(code)) = (&self.header, &self.code) else {
            unreachable!("set above");
        };
        let fl = h.header.fragment_len as usize;
        if expected >= code.fragment_count() {
            return Err(FragmentRejection::Misplaced {
                found: expected,
                expected: code.fragment_count(),
            });
        }
        if prefix.payload_len != fl as u64 {
            return Err(FragmentError::Malformed(format!(
                "payload of {} bytes where the header says {fl}",
                prefix.payload_len
            ))
            .into());
        }
        let slot = &mut self.fragments[expected * fl..(expected + 1) * fl];
        r.read_exact(slot).map_err(FragmentError::from)?;
        if blake3::hash(slot).as_bytes() != &h.header.fragment_hashes[expected] {
            return Err(FragmentRejection::HashMismatch);
        }
        self.present[expected] = true;
        Ok(())
    }

    /// Checks the start of a fragment file that should be fragment
    /// `expected` of this block, read without the rest (a ranged read): its
    /// signed header is verified and must name this block as the
    /// expectations do. Returns the header and where the payload starts in
    /// `head`. The payload bytes are not checked against the header's hash
    /// (they are not all there): the caller authenticates what it uses.
    pub fn check_head(
        &self,
        expected: usize,
        head: &[u8],
    ) -> Result<(SignedHeader, usize), FragmentRejection> {
        let mut r = head;
        let prefix = read_fragment(&mut r)?;
        let at = head.len() - r.len();
        if prefix.index != expected {
            return Err(FragmentRejection::Misplaced {
                found: prefix.index,
                expected,
            });
        }
        if let Some(want) = &self.expect_header
            && crate::header::commitment(&prefix.header_bytes) != *want
        {
            return Err(FragmentRejection::Stale);
        }
        let signed = SignedHeader::verify(prefix.header_bytes, prefix.signature, &self.customer)?;
        self.check_identity(&signed.header)?;
        if prefix.payload_len != signed.header.fragment_len {
            return Err(FragmentError::Malformed(format!(
                "payload of {} bytes where the header says {}",
                prefix.payload_len, signed.header.fragment_len
            ))
            .into());
        }
        Ok((signed, at))
    }

    fn check_identity(&self, h: &BlockHeader) -> Result<(), FragmentRejection> {
        if h.backup_id != self.backup_id || h.version != self.version || h.block != self.block {
            return Err(FragmentRejection::Elsewhere(format!(
                "backup {} version {} block {}",
                h.backup_id, h.version, h.block
            )));
        }
        if let Some((scheme, suppliers)) = self.expect_code
            && (h.scheme != scheme || h.suppliers != suppliers)
        {
            return Err(FragmentRejection::Elsewhere(format!(
                "a {} code over {} suppliers, not the manifest's {scheme} over {suppliers}",
                h.scheme, h.suppliers
            )));
        }
        let max_cipher = max_cipher_len(self.max_plain_len);
        if h.plain_len > self.max_plain_len || h.cipher_len > max_cipher {
            return Err(FragmentRejection::Header(HeaderError::Invalid(format!(
                "block of {} bytes is over the {} allowed (raise the maximum block size to restore it)",
                h.plain_len, self.max_plain_len
            ))));
        }
        Ok(())
    }

    /// Whether the data fragments are all held (no decode needed).
    pub fn has_all_data(&self) -> bool {
        match &self.code {
            Some(code) => self.present[..code.data_fragments()].iter().all(|p| *p),
            None => false,
        }
    }

    /// Decodes, decrypts with `key`, and returns the block's plaintext.
    pub fn open(mut self, key: &BackupKey) -> Result<Vec<u8>, BlockError> {
        let block = self.block;
        let (cipher, plain_len) = self.decode()?;
        let plain = open(key.age_identity(), cipher, MAX_BLOCK_LEN as usize)
            .map_err(|source| BlockError::Decrypt { block, source })?;
        if plain.len() as u64 != plain_len {
            return Err(BlockError::LengthMismatch {
                block,
                got: plain.len(),
                expected: plain_len,
            });
        }
        Ok(plain)
    }

    /// Decodes and returns the bytes the block carries without decrypting
    /// them: a pack's body (see [`crate::pack`]), whose chunk list opens
    /// with the dedup secrets alone.
    pub fn open_body(mut self) -> Result<Vec<u8>, BlockError> {
        Ok(self.body()?.to_vec())
    }

    /// [`Self::open_body`] without copying: the body where the decoder
    /// left it, in the opener's own buffer.
    pub fn body(&mut self) -> Result<&[u8], BlockError> {
        Ok(self.decode()?.0)
    }

    /// Reconstructs the data fragments: the ciphertext, and the header's
    /// plain length.
    fn decode(&mut self) -> Result<(&[u8], u64), BlockError> {
        let (Some(h), Some(code)) = (&self.header, &self.code) else {
            return Err(BlockError::NoValidHeader {
                block: self.block,
                customer: self.customer,
                reasons: if self.rejections.is_empty() {
                    "no fragment found".into()
                } else {
                    self.rejections.join("; ")
                },
            });
        };
        let h = &h.header;
        let fl = h.fragment_len as usize;
        code.reconstruct_data(&mut self.fragments, fl, &mut self.present)
            .map_err(|source| BlockError::Unrecoverable {
                block: self.block,
                source,
            })?;
        Ok((&self.fragments[..h.cipher_len as usize], h.plain_len))
    }
}
