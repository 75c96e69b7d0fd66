//! Identifiers of backups.

use std::fmt;
use std::str::FromStr;

/// A backup's id: 16 bytes, written as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupId(pub [u8; 16]);

impl BackupId {
    /// The id of the backup of `source_paths` by `customer`: the same paths
    /// give the same id, so each run adds a version to the same backup.
    /// Keyed by the customer so ids reveal nothing about the paths.
    pub fn for_sources(customer: &[u8; 32], source_paths: &[Vec<u8>]) -> Self {
        let mut h = blake3::Hasher::new_derive_key("bitdust backup id v1");
        h.update(customer);
        let mut sorted: Vec<&Vec<u8>> = source_paths.iter().collect();
        sorted.sort();
        for p in sorted {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        BackupId(id)
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupId({self})")
    }
}

/// A string that is not a backup id.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a backup id (32 hexadecimal characters)")]
pub struct BackupIdParseError(String);

impl FromStr for BackupId {
    type Err = BackupIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || BackupIdParseError(s.to_owned());
        if s.len() != 32 || !s.is_ascii() {
            return Err(err());
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(BackupId(id))
    }
}

impl TryFrom<&[u8]> for BackupId {
    type Error = BackupIdParseError;

    fn try_from(value: &[u8]) -> Result<Self, Self::Error> {
        value
            .try_into()
            .map(BackupId)
            .map_err(|_| BackupIdParseError(format!("{} bytes", value.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_order_free_and_round_trip() {
        let a = BackupId::for_sources(&[1; 32], &[b"/a".to_vec(), b"/b".to_vec()]);
        let b = BackupId::for_sources(&[1; 32], &[b"/b".to_vec(), b"/a".to_vec()]);
        let c = BackupId::for_sources(&[2; 32], &[b"/a".to_vec(), b"/b".to_vec()]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string().parse::<BackupId>().unwrap(), a);
        assert!("xyz".parse::<BackupId>().is_err());
    }
}
