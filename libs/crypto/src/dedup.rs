//! The dedup secrets of one backup (docs/snapshots.md, "Keys").
//!
//! They are derived from the customer's identity secret and the backup id,
//! so every machine that may back up (it holds `identity.key`) and a
//! machine recovered from the exported key find the same ones, with no key
//! file of their own; and each backup has its own, so one backup can be
//! shared without exposing the others'.
//!
//! - the **chunk-id key** keys BLAKE3 over a chunk's plaintext: chunk ids
//!   are never plain content hashes;
//! - the **gear seed** seeds the content-defined chunker, so chunk
//!   boundaries do not fingerprint known files;
//! - the **index key** seals (XChaCha20-Poly1305) the list of chunks each
//!   pack carries, so an index can be rebuilt without `master.key`.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::Identity;

/// The length of a sealed list's nonce.
const NONCE_LEN: usize = 24;
/// What sealing adds to a list: the nonce and the Poly1305 tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 16;

/// A chunk's id: BLAKE3 keyed with the backup's chunk-id key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId(pub [u8; 32]);

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

/// A sealed list did not open: altered, truncated, or sealed under another
/// key or for another pack.
#[derive(Debug, thiserror::Error)]
#[error(
    "the pack's chunk list does not open with this backup's index key (damaged, or another backup's or pack's)"
)]
pub struct ListOpenError;

/// The dedup secrets of one backup.
pub struct DedupKeys {
    chunk_id: Zeroizing<[u8; 32]>,
    gear_seed: u64,
    index: Zeroizing<[u8; 32]>,
}

impl DedupKeys {
    /// The secrets of backup `backup_id` of the customer whose identity is
    /// `identity`.
    pub fn derive(identity: &Identity, backup_id: &[u8; 16]) -> DedupKeys {
        let mut h = blake3::Hasher::new_derive_key("bitdust dedup v1");
        h.update(identity.secret().as_ref());
        h.update(backup_id);
        DedupKeys::from_backup_secret(&Zeroizing::new(*h.finalize().as_bytes()))
    }

    /// The secrets from a backup's own secret (`K_backup`), as handed over
    /// when one backup is shared.
    pub fn from_backup_secret(secret: &[u8; 32]) -> DedupKeys {
        let chunk_id = Zeroizing::new(blake3::derive_key("bitdust chunk id v1", secret));
        let seed = Zeroizing::new(blake3::derive_key("bitdust gear seed v1", secret));
        let index = Zeroizing::new(blake3::derive_key("bitdust pack index v1", secret));
        let mut first = [0u8; 8];
        first.copy_from_slice(&seed[..8]);
        DedupKeys {
            chunk_id,
            gear_seed: u64::from_le_bytes(first),
            index,
        }
    }

    /// The id of a chunk whose plaintext is `plain`.
    pub fn chunk_id(&self, plain: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.chunk_id, plain).as_bytes())
    }

    /// The seed of the chunker's gear table.
    pub fn gear_seed(&self) -> u64 {
        self.gear_seed
    }

    /// Seals `list` (a pack's chunk list) bound to `aad` (what names the
    /// pack): a random nonce, then the ciphertext and its tag.
    pub fn seal_list(&self, aad: &[u8], list: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        self.seal_list_with_nonce(aad, list, nonce)
    }

    /// [`DedupKeys::seal_list`] with a given nonce (golden vectors only: a
    /// nonce must never be used twice under one key).
    pub fn seal_list_with_nonce(&self, aad: &[u8], list: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let cipher = self.cipher();
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: list, aad })
            .expect("XChaCha20-Poly1305 seals any length a pack can hold");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.index[..]))
    }

    /// Opens a list sealed by [`DedupKeys::seal_list`] for the same `aad`.
    pub fn open_list(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, ListOpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(ListOpenError);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| ListOpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backup_and_each_customer_has_its_own_secrets() {
        let alice = Identity::from_secret(&[1; 32]);
        let bob = Identity::from_secret(&[2; 32]);
        let a1 = DedupKeys::derive(&alice, &[1; 16]);
        let a1_again = DedupKeys::derive(&alice, &[1; 16]);
        let a2 = DedupKeys::derive(&alice, &[2; 16]);
        let b1 = DedupKeys::derive(&bob, &[1; 16]);
        let data = b"the same file content";
        assert_eq!(a1.chunk_id(data), a1_again.chunk_id(data));
        assert_eq!(a1.gear_seed(), a1_again.gear_seed());
        assert_ne!(a1.chunk_id(data), a2.chunk_id(data));
        assert_ne!(a1.chunk_id(data), b1.chunk_id(data));
        assert_ne!(a1.gear_seed(), a2.gear_seed());
        // Never the plain content hash.
        assert_ne!(a1.chunk_id(data).0, *blake3::hash(data).as_bytes());
        assert_ne!(a1.chunk_id(data), a1.chunk_id(b"another content"));
    }

    #[test]
    fn a_sealed_list_opens_only_with_its_key_and_for_its_pack() {
        let alice = Identity::from_secret(&[1; 32]);
        let k = DedupKeys::derive(&alice, &[1; 16]);
        let sealed = k.seal_list(b"pack 7", b"chunk list");
        assert_eq!(sealed.len(), b"chunk list".len() + SEAL_OVERHEAD);
        assert_eq!(k.open_list(b"pack 7", &sealed).unwrap(), b"chunk list");
        // Another pack's name, another backup's key, a flipped bit, a cut.
        assert!(k.open_list(b"pack 8", &sealed).is_err());
        let other = DedupKeys::derive(&alice, &[2; 16]);
        assert!(other.open_list(b"pack 7", &sealed).is_err());
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(k.open_list(b"pack 7", &bad).is_err());
        assert!(
            k.open_list(b"pack 7", &sealed[..SEAL_OVERHEAD - 1])
                .is_err()
        );
        // Two seals of one list differ (random nonces).
        assert_ne!(sealed, k.seal_list(b"pack 7", b"chunk list"));
    }

    #[test]
    fn the_derivation_is_pinned() {
        // A change here changes every chunk id and cut point of every
        // customer: it must be deliberate (all backups would start afresh).
        // The values were computed independently, with Python's `blake3`
        // package, from the derivation in docs/snapshots.md.
        let k = DedupKeys::derive(&Identity::from_secret(&[7; 32]), &[9; 16]);
        assert_eq!(
            k.chunk_id(b"bitdust").to_string(),
            "08f721bd138e8c3ec42b803223b2d3201f637fb140bb4a8966b2cee32c93ccc4"
        );
        assert_eq!(k.gear_seed(), 2_341_951_217_026_870_918);
    }
}
