//! Packs: blocks that hold whole chunks of one backup (docs/snapshots.md,
//! "Packs"). A pack is sealed into fragments like any block, with
//! `version = 0` and `block = pack number` in its signed header; what the
//! block carries (its "ciphertext" bytes) is the pack body:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "BDPK"
//! 4       1     pack format, 1
//! 5       1     kind: 0 data, 1 metadata
//! 6       4     L, the sealed list's length (u32, little-endian)
//! 10      L     the chunk list, sealed with the backup's index key
//!               (XChaCha20-Poly1305; AAD: "bitdust pack v1", customer,
//!               backup id, pack number): 44 bytes per chunk, in order:
//!               chunk id (32), offset (u32), stored length (u32), plain
//!               length (u32), offsets contiguous from 0
//! 10+L    ..    the chunk data: age (X25519, to the backup's key) of the
//!               stored chunks (zstd frames) back to back
//! ```
//!
//! The list opens with the dedup secrets (no `master.key`), the data only
//! with the backup's age key.

use std::io::Write;

use bitdust_crypto::{BackupKey, ChunkId, DedupKeys, NodeId, OpenError, SealError};

use crate::BackupId;

/// The first bytes of a pack body.
pub const PACK_MAGIC: [u8; 4] = *b"BDPK";
/// The pack format this code writes and reads.
pub const PACK_FORMAT: u8 = 1;
/// Bytes before the sealed list.
pub const PACK_PREFIX_LEN: usize = 10;
/// Bytes per chunk in the list.
pub const ENTRY_LEN: usize = 44;
/// The most chunks one pack holds (so its list is at most 704 KiB).
pub const MAX_PACK_CHUNKS: usize = 16 * 1024;

/// What a pack holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackKind {
    /// File contents.
    Data,
    /// Snapshot metadata streams.
    Meta,
}

impl PackKind {
    fn byte(self) -> u8 {
        match self {
            PackKind::Data => 0,
            PackKind::Meta => 1,
        }
    }
}

/// One chunk of a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// Its id.
    pub id: ChunkId,
    /// Where its stored bytes begin in the pack's chunk data.
    pub offset: u32,
    /// Its stored (compressed) length.
    pub stored_len: u32,
    /// Its plain length.
    pub plain_len: u32,
}

/// A pack body is malformed, does not open, or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The bytes are not a pack body this version reads.
    #[error("not a pack this version reads: {0}")]
    Format(String),
    /// The chunk list does not open.
    #[error(transparent)]
    List(#[from] bitdust_crypto::ListOpenError),
    /// The chunk data does not decrypt.
    #[error("the pack's chunk data does not decrypt: {0}")]
    Decrypt(#[from] OpenError),
    /// Encryption failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Writing the body failed.
    #[error("cannot write the pack: {0}")]
    Io(#[from] std::io::Error),
}

/// What the chunk list of pack `pack` of `backup` is bound to.
pub fn list_aad(customer: &NodeId, backup: BackupId, pack: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(15 + 32 + 16 + 8);
    aad.extend_from_slice(b"bitdust pack v1");
    aad.extend_from_slice(customer.as_bytes());
    aad.extend_from_slice(&backup.0);
    aad.extend_from_slice(&pack.to_le_bytes());
    aad
}

/// Collects the chunks of one pack, then writes its body.
#[derive(Debug)]
pub struct PackWriter {
    kind: PackKind,
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackWriter {
    /// An empty pack of `kind`.
    pub fn new(kind: PackKind) -> PackWriter {
        PackWriter {
            kind,
            data: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// What it holds.
    pub fn kind(&self) -> PackKind {
        self.kind
    }

    /// Adds a chunk: its id, its stored bytes and its plain length. The
    /// caller closes the pack before [`MAX_PACK_CHUNKS`] and before the
    /// data passes 4 GiB (packs are a few MiB).
    pub fn push(&mut self, id: ChunkId, stored: &[u8], plain_len: u32) {
        debug_assert!(self.entries.len() < MAX_PACK_CHUNKS);
        self.entries.push(PackEntry {
            id,
            offset: self.data.len() as u32,
            stored_len: stored.len() as u32,
            plain_len,
        });
        self.data.extend_from_slice(stored);
    }

    /// At least the length of the body [`PackWriter::write_body`] writes:
    /// the prefix, the sealed list, and age's header and one 16-byte tag
    /// per 64 KiB of chunk data (with room to spare). Its sealer makes room
    /// for this once, so the fragment buffer never grows by copying.
    pub fn body_len_bound(&self) -> usize {
        PACK_PREFIX_LEN
            + self.entries.len() * ENTRY_LEN
            + bitdust_crypto::SEAL_OVERHEAD
            + self.data.len()
            + self.data.len() / 4096
            + 4096
    }

    /// Makes room for `additional` more bytes of chunk data, exactly: a
    /// pack filled up to a known size is then allocated once, at that size
    /// (grown by doubling from its first chunk's, it could take twice).
    pub fn reserve_exact(&mut self, additional: usize) {
        self.data.reserve_exact(additional);
    }

    /// Bytes of chunk data so far.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// The chunks so far, in order.
    pub fn entries(&self) -> &[PackEntry] {
        &self.entries
    }

    /// Whether it holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether it can take no more chunks.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= MAX_PACK_CHUNKS
    }

    /// Empties it for the next pack (keeping its buffers).
    pub fn clear(&mut self) {
        self.data.clear();
        self.entries.clear();
    }

    /// The chunk list in its plain form.
    pub fn list_bytes(&self) -> Vec<u8> {
        let mut list = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            list.extend_from_slice(&e.id.0);
            list.extend_from_slice(&e.offset.to_le_bytes());
            list.extend_from_slice(&e.stored_len.to_le_bytes());
            list.extend_from_slice(&e.plain_len.to_le_bytes());
        }
        list
    }

    /// Writes the body of pack `aad` names: the prefix, the list sealed
    /// with `keys`, and the chunk data encrypted to `recipient`.
    pub fn write_body(
        &self,
        keys: &DedupKeys,
        aad: &[u8],
        recipient: &age::x25519::Recipient,
        out: &mut impl Write,
    ) -> Result<(), PackError> {
        let sealed = keys.seal_list(aad, &self.list_bytes());
        self.write_prefix_and_list(&sealed, out)?;
        bitdust_crypto::seal_into(recipient, &self.data, out)?;
        Ok(())
    }

    /// The prefix and the sealed list (what golden vectors pin: the data
    /// part is age's, randomized).
    pub fn write_prefix_and_list(
        &self,
        sealed: &[u8],
        out: &mut impl Write,
    ) -> Result<(), PackError> {
        out.write_all(&PACK_MAGIC)?;
        out.write_all(&[PACK_FORMAT, self.kind.byte()])?;
        out.write_all(&(sealed.len() as u32).to_le_bytes())?;
        out.write_all(sealed)?;
        Ok(())
    }
}

/// A pack's opened chunk list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackList {
    /// What the pack holds.
    pub kind: PackKind,
    /// Its chunks, in order.
    pub entries: Vec<PackEntry>,
    /// Where the encrypted chunk data begins in the body.
    pub data_offset: usize,
}

impl PackList {
    /// Bytes of chunk data the list accounts for.
    pub fn data_len(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.stored_len)).sum()
    }
}

/// How many bytes from the start of a body hold the prefix and the sealed
/// list, read from at least the first [`PACK_PREFIX_LEN`] bytes: what a
/// ranged read of the first fragment fetches to rebuild an index.
pub fn list_end(prefix: &[u8]) -> Result<usize, PackError> {
    if prefix.len() < PACK_PREFIX_LEN {
        return Err(PackError::Format("shorter than a pack prefix".into()));
    }
    if prefix[..4] != PACK_MAGIC {
        return Err(PackError::Format("no pack magic".into()));
    }
    if prefix[4] != PACK_FORMAT {
        return Err(PackError::Format(format!("pack format {}", prefix[4])));
    }
    let l = u32::from_le_bytes([prefix[6], prefix[7], prefix[8], prefix[9]]) as usize;
    let max = MAX_PACK_CHUNKS * ENTRY_LEN + bitdust_crypto::SEAL_OVERHEAD;
    if l > max {
        return Err(PackError::Format(format!(
            "a chunk list of {l} bytes (at most {max})"
        )));
    }
    Ok(PACK_PREFIX_LEN + l)
}

/// Opens the chunk list of a pack from its body (or the body's first
/// [`list_end`] bytes) with the backup's dedup secrets; `aad` names the
/// pack it must be. Chunks longer than `max_chunk` are refused.
pub fn read_list(
    body: &[u8],
    keys: &DedupKeys,
    aad: &[u8],
    max_chunk: u32,
) -> Result<PackList, PackError> {
    let end = list_end(body)?;
    if body.len() < end {
        return Err(PackError::Format(format!(
            "cut short: {} of the {end} bytes of its prefix and list",
            body.len()
        )));
    }
    let kind = match body[5] {
        0 => PackKind::Data,
        1 => PackKind::Meta,
        k => return Err(PackError::Format(format!("pack kind {k}"))),
    };
    let list = keys.open_list(aad, &body[PACK_PREFIX_LEN..end])?;
    // Sealed by a holder of the key: still checked, never trusted to be sane.
    if list.len() % ENTRY_LEN != 0 || list.len() / ENTRY_LEN > MAX_PACK_CHUNKS {
        return Err(PackError::Format(format!(
            "a chunk list of {} bytes",
            list.len()
        )));
    }
    let mut entries = Vec::with_capacity(list.len() / ENTRY_LEN);
    let mut next = 0u64;
    for e in list.chunks_exact(ENTRY_LEN) {
        let u = |at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
        let mut id = [0u8; 32];
        id.copy_from_slice(&e[..32]);
        let entry = PackEntry {
            id: ChunkId(id),
            offset: u(32),
            stored_len: u(36),
            plain_len: u(40),
        };
        if u64::from(entry.offset) != next || entry.plain_len > max_chunk {
            return Err(PackError::Format(format!(
                "chunk {} at offset {} (expected {next}), {} bytes plain",
                entries.len(),
                entry.offset,
                entry.plain_len
            )));
        }
        next += u64::from(entry.stored_len);
        entries.push(entry);
    }
    Ok(PackList {
        kind,
        entries,
        data_offset: end,
    })
}

/// Decrypts a pack's chunk data (with the backup's age key, unwrapped with
/// `master.key`): exactly as many bytes as `list` accounts for.
pub fn open_data(body: &[u8], list: &PackList, key: &BackupKey) -> Result<Vec<u8>, PackError> {
    let want = list.data_len();
    let ct = body
        .get(list.data_offset..)
        .ok_or_else(|| PackError::Format("cut before its chunk data".into()))?;
    let data = bitdust_crypto::open(key.age_identity(), ct, want as usize)?;
    if data.len() as u64 != want {
        return Err(PackError::Format(format!(
            "{} bytes of chunk data where its list accounts for {want}",
            data.len()
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitdust_crypto::Identity;

    fn keys() -> (Identity, DedupKeys, BackupKey) {
        let id = Identity::from_secret(&[3; 32]);
        let k = DedupKeys::derive(&id, &[5; 16]);
        (id, k, BackupKey::generate())
    }

    #[test]
    fn a_pack_round_trips_and_its_list_opens_without_the_data_key() {
        let (id, k, bk) = keys();
        let mut w = PackWriter::new(PackKind::Data);
        let chunks: Vec<Vec<u8>> = vec![b"first".to_vec(), vec![7; 3000], b"x".to_vec()];
        for c in &chunks {
            w.push(k.chunk_id(c), c, c.len() as u32);
        }
        let aad = list_aad(&id.node_id(), BackupId([5; 16]), 9);
        let mut body = Vec::new();
        w.write_body(&k, &aad, &bk.recipient(), &mut body).unwrap();
        // The list, from the body's first bytes only.
        let end = list_end(&body[..PACK_PREFIX_LEN]).unwrap();
        let list = read_list(&body[..end], &k, &aad, 1 << 20).unwrap();
        assert_eq!(list.kind, PackKind::Data);
        assert_eq!(list.entries, w.entries());
        assert_eq!(list.data_len(), 3006);
        let data = open_data(&body, &list, &bk).unwrap();
        for (e, c) in list.entries.iter().zip(&chunks) {
            let at = e.offset as usize;
            assert_eq!(&data[at..at + e.stored_len as usize], &c[..]);
        }
        // Another pack's name, or another backup's keys: refused.
        let other = list_aad(&id.node_id(), BackupId([5; 16]), 10);
        assert!(matches!(
            read_list(&body, &k, &other, 1 << 20),
            Err(PackError::List(_))
        ));
        assert!(matches!(
            open_data(&body, &list, &BackupKey::generate()),
            Err(PackError::Decrypt(_))
        ));
        // A chunk above the bound the reader sets.
        assert!(matches!(
            read_list(&body, &k, &aad, 2999),
            Err(PackError::Format(_))
        ));
    }

    #[test]
    fn damaged_bodies_are_refused_with_a_reason() {
        let (id, k, bk) = keys();
        let mut w = PackWriter::new(PackKind::Meta);
        w.push(k.chunk_id(b"m"), b"m", 1);
        let aad = list_aad(&id.node_id(), BackupId([5; 16]), 0);
        let mut body = Vec::new();
        w.write_body(&k, &aad, &bk.recipient(), &mut body).unwrap();
        let list = read_list(&body, &k, &aad, 16).unwrap();
        assert_eq!(list.kind, PackKind::Meta);
        let mut bad = body.clone();
        bad[0] = b'X';
        assert!(read_list(&bad, &k, &aad, 16).is_err());
        let mut bad = body.clone();
        bad[4] = 2;
        assert!(read_list(&bad, &k, &aad, 16).is_err());
        let mut bad = body.clone();
        bad[5] = 9;
        assert!(read_list(&bad, &k, &aad, 16).is_err());
        let mut bad = body.clone();
        bad[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_list(&bad, &k, &aad, 16).is_err());
        assert!(read_list(&body[..12], &k, &aad, 16).is_err());
        let mut bad = body.clone();
        bad[20] ^= 1;
        assert!(read_list(&bad, &k, &aad, 16).is_err());
        let last = body.len() - 1;
        let mut bad = body.clone();
        bad[last] ^= 1;
        assert!(open_data(&bad, &list, &bk).is_err());
        assert!(open_data(&body[..list.data_offset], &list, &bk).is_err());
    }
}
