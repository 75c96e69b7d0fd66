//! The fragment file: how one fragment is laid out on disk and on the wire.
//!
//! ```text
//! offset   size  field
//! 0        4     magic "BDFR"
//! 4        1     format version (1)
//! 5        1     kind: 0 data, 1 parity
//! 6        2     fragment number, u16 little-endian
//! 8        4     header length H, u32 little-endian, at most MAX_HEADER_LEN
//! 12       H     BlockHeader (protobuf, bitdust.format.v1)
//! 12+H     64    ed25519 signature over "bitdust block header v1" 0x00 header
//! 76+H     8     payload length P, u64 little-endian (= header.fragment_len)
//! 84+H     P     payload
//! ```

use std::io::{self, Read, Write};

use bitdust_crypto::{SIGNATURE_LEN, Signature};
use bitdust_ecc::FragmentKind;

use crate::SignedHeader;

/// First bytes of every fragment file.
pub const FRAGMENT_MAGIC: [u8; 4] = *b"BDFR";
/// The fragment format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// The largest header accepted (a 64-supplier header is about 4.4 KiB).
pub const MAX_HEADER_LEN: usize = 16 * 1024;
/// Bytes before the header.
pub const FRAGMENT_PREFIX_LEN: usize = 12;

/// A fragment file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FragmentError {
    /// Not a fragment file.
    #[error("not a BitDust fragment (bad magic bytes)")]
    BadMagic,
    /// Written by another format version.
    #[error(
        "fragment format version {0} is not supported by this version of BitDust (it reads version 1); upgrade BitDust"
    )]
    UnsupportedVersion(u8),
    /// A field is out of range.
    #[error("the fragment is malformed: {0}")]
    Malformed(String),
    /// The file ended early.
    #[error("the fragment is truncated")]
    Truncated,
    /// Any other I/O error.
    #[error("reading the fragment failed: {0}")]
    Io(io::Error),
}

impl From<io::Error> for FragmentError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FragmentError::Truncated
        } else {
            FragmentError::Io(e)
        }
    }
}

/// Everything of a fragment file before its payload.
#[derive(Clone, Debug)]
pub struct FragmentPrefix {
    /// Data or parity.
    pub kind: FragmentKind,
    /// The fragment number within the block.
    pub index: usize,
    /// The signed header bytes (not yet verified).
    pub header_bytes: Vec<u8>,
    /// The signature over them.
    pub signature: Signature,
    /// Length of the payload that follows.
    pub payload_len: u64,
}

/// Writes fragment `index` of a signed block with its payload.
pub fn write_fragment(
    w: &mut impl Write,
    header: &SignedHeader,
    index: usize,
    kind: FragmentKind,
    payload: &[u8],
) -> io::Result<()> {
    w.write_all(&fragment_head(header, index, kind, payload.len())?)?;
    w.write_all(payload)
}

/// Everything of a fragment file before its payload of `payload_len`
/// bytes: [`write_fragment`] is this, then the payload. A sender that
/// holds the payload elsewhere sends the two without joining them.
pub fn fragment_head(
    header: &SignedHeader,
    index: usize,
    kind: FragmentKind,
    payload_len: usize,
) -> io::Result<Vec<u8>> {
    let index = u16::try_from(index).map_err(|_| io::Error::other("fragment number over 65535"))?;
    let mut head =
        Vec::with_capacity(FRAGMENT_PREFIX_LEN + header.bytes.len() + header.signature.len() + 8);
    head.extend_from_slice(&FRAGMENT_MAGIC);
    head.push(FORMAT_VERSION);
    head.push(match kind {
        FragmentKind::Data => 0,
        FragmentKind::Parity => 1,
    });
    head.extend_from_slice(&index.to_le_bytes());
    head.extend_from_slice(&(header.bytes.len() as u32).to_le_bytes());
    head.extend_from_slice(&header.bytes);
    head.extend_from_slice(&header.signature);
    head.extend_from_slice(&(payload_len as u64).to_le_bytes());
    Ok(head)
}

/// Reads a fragment file up to its payload; the caller reads `payload_len`
/// bytes next. Nothing is trusted yet: see [`SignedHeader::verify`].
pub fn read_fragment(r: &mut impl Read) -> Result<FragmentPrefix, FragmentError> {
    let mut prefix = [0u8; FRAGMENT_PREFIX_LEN];
    r.read_exact(&mut prefix)?;
    if prefix[..4] != FRAGMENT_MAGIC {
        return Err(FragmentError::BadMagic);
    }
    if prefix[4] != FORMAT_VERSION {
        return Err(FragmentError::UnsupportedVersion(prefix[4]));
    }
    let kind = match prefix[5] {
        0 => FragmentKind::Data,
        1 => FragmentKind::Parity,
        k => {
            return Err(FragmentError::Malformed(format!(
                "unknown fragment kind {k}"
            )));
        }
    };
    let index = u16::from_le_bytes([prefix[6], prefix[7]]) as usize;
    let header_len = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize;
    if header_len > MAX_HEADER_LEN {
        return Err(FragmentError::Malformed(format!(
            "header of {header_len} bytes is over the {MAX_HEADER_LEN} allowed"
        )));
    }
    let mut header_bytes = vec![0u8; header_len];
    r.read_exact(&mut header_bytes)?;
    let mut signature = [0u8; SIGNATURE_LEN];
    r.read_exact(&mut signature)?;
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    Ok(FragmentPrefix {
        kind,
        index,
        header_bytes,
        signature,
        payload_len: u64::from_le_bytes(len),
    })
}

/// A whole fragment object checked against its signed header: the header
/// is signed by `customer`, names this backup, version, block and fragment,
/// and the payload's BLAKE3 is the one the header lists. With `committed`
/// (the manifest's commitment for the block), the header must be that one:
/// a stale fragment under the same name is rejected. Returns the header and
/// the payload.
pub fn check_fragment<'a>(
    bytes: &'a [u8],
    customer: &bitdust_crypto::NodeId,
    backup_id: crate::BackupId,
    version: u64,
    block: u64,
    index: usize,
    committed: Option<&[u8; 32]>,
) -> Result<(SignedHeader, &'a [u8]), String> {
    let mut r = bytes;
    let prefix = read_fragment(&mut r).map_err(|e| e.to_string())?;
    if prefix.index != index {
        return Err(format!("it is fragment {}, not {index}", prefix.index));
    }
    if let Some(want) = committed
        && crate::header::commitment(&prefix.header_bytes) != *want
    {
        return Err("its header is not the one the manifest commits to (a stale fragment)".into());
    }
    let signed = SignedHeader::verify(prefix.header_bytes, prefix.signature, customer)
        .map_err(|e| e.to_string())?;
    let h = &signed.header;
    if h.backup_id != backup_id || h.version != version || h.block != block {
        return Err(format!(
            "its header is for backup {} version {} block {}, not this one",
            h.backup_id, h.version, h.block
        ));
    }
    if r.len() as u64 != prefix.payload_len || prefix.payload_len != h.fragment_len {
        return Err("its payload length does not match its header".into());
    }
    let want = h
        .fragment_hashes
        .get(index)
        .ok_or_else(|| format!("its header lists no fragment {index}"))?;
    if blake3::hash(r).as_bytes() != want {
        return Err("its payload does not match the hash in its signed header".into());
    }
    Ok((signed, r))
}
