//! The 256-bit key space.

use std::fmt;

use bitdust_crypto::NodeId;

/// A point in the key space: a node's place (BLAKE3 of its node id) or a
/// record's.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// The place of node `id`.
    pub fn of_node(id: &NodeId) -> Key {
        let mut h = blake3::Hasher::new_derive_key("bitdust dht node key v1");
        h.update(id.as_bytes());
        Key(*h.finalize().as_bytes())
    }

    /// A uniformly random key.
    pub fn random() -> Key {
        Key(rand::random())
    }

    /// XOR distance to `other`.
    pub fn distance(&self, other: &Key) -> Key {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Key(d)
    }

    /// Number of leading zero bits (256 for the zero key).
    pub fn leading_zeros(&self) -> usize {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros() as usize;
            }
        }
        n
    }

    /// The bucket `other` falls in from `self`: 255 - (leading zeros of the
    /// distance), so bucket 255 holds the farthest half of the space; `None`
    /// for `self` itself.
    pub fn bucket_of(&self, other: &Key) -> Option<usize> {
        let lz = self.distance(other).leading_zeros();
        (lz < 256).then(|| 255 - lz)
    }

    /// A random key that falls in bucket `b` as seen from `self`.
    pub fn random_in_bucket(&self, b: usize) -> Key {
        let mut k = Key::random();
        let lz = 255 - b; // leading bits equal to self, then one differing bit
        for bit in 0..=lz {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            let want = if bit < lz {
                self.0[byte] & mask
            } else {
                !self.0[byte] & mask
            };
            k.0[byte] = (k.0[byte] & !mask) | want;
        }
        k
    }

    /// Parses 32 raw bytes.
    pub fn from_slice(b: &[u8]) -> Option<Key> {
        b.try_into().ok().map(Key)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buckets_and_random_keys_in_them_agree() {
        let me = Key::random();
        assert_eq!(me.bucket_of(&me), None);
        for b in [0, 1, 7, 8, 100, 254, 255] {
            for _ in 0..20 {
                let k = me.random_in_bucket(b);
                assert_eq!(me.bucket_of(&k), Some(b));
            }
        }
        let mut far = me;
        far.0[0] ^= 0x80;
        assert_eq!(me.bucket_of(&far), Some(255));
        assert_eq!(Key([0; 32]).leading_zeros(), 256);
    }
}
