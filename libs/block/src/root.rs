//! Snapshot roots (docs/snapshots.md, "The snapshot format"): manifest
//! format version 3, `"BDMF"`, the version byte `3`, then protobuf
//! `Signed { body = SnapshotRoot, signature }`, the signature over
//! `"bitdust snapshot root v1" 0x00 body`.

use bitdust_crypto::{Identity, NodeId};
use bitdust_ecc::Scheme;
use bitdust_proto::format::v1 as pb;
use prost::Message;

pub use pb::SnapshotRoot;

use crate::header::{scheme_from_proto, scheme_to_proto};
use crate::{BackupId, ManifestError};

const ROOT_MAGIC: [u8; 4] = *b"BDMF";
/// The manifest format version of snapshot roots.
pub const ROOT_VERSION: u8 = 3;
const ROOT_CONTEXT: &[u8] = b"bitdust snapshot root v1";

/// Signs `root` with `identity` into the bytes stored at every position.
pub fn sign_root(identity: &Identity, root: &SnapshotRoot) -> Vec<u8> {
    let body = root.encode_to_vec();
    let signature = identity.sign(ROOT_CONTEXT, &body).to_vec();
    let mut out = Vec::with_capacity(body.len() + 80);
    out.extend_from_slice(&ROOT_MAGIC);
    out.push(ROOT_VERSION);
    out.extend_from_slice(&pb::Signed { body, signature }.encode_to_vec());
    out
}

/// A verified snapshot root with its fields checked.
#[derive(Clone, Debug)]
pub struct Root {
    /// The decoded root.
    pub root: SnapshotRoot,
    /// Its backup.
    pub backup_id: BackupId,
    /// Its code.
    pub scheme: Scheme,
}

impl Root {
    /// Decrypts the snapshot's [`crate::BackupInfo`] (its source paths)
    /// with the backup key.
    pub fn open_info(
        &self,
        key: &bitdust_crypto::BackupKey,
    ) -> Result<crate::BackupInfo, ManifestError> {
        crate::manifest::open_info(&self.root.sealed_info, key)
    }
}

/// Parses root bytes and verifies they were signed by `expected`, for the
/// backup `backup` and snapshot `snapshot`.
pub fn verify_root(
    bytes: &[u8],
    expected: &NodeId,
    backup: BackupId,
    snapshot: u64,
) -> Result<Root, ManifestError> {
    let malformed = |s: String| ManifestError::Malformed(s);
    let root: SnapshotRoot = crate::manifest::verify_signed(
        bytes,
        ROOT_VERSION,
        ROOT_CONTEXT,
        expected,
        |r: &SnapshotRoot| &r.customer,
    )?;
    let backup_id =
        BackupId::try_from(root.backup_id.as_slice()).map_err(|e| malformed(e.to_string()))?;
    if backup_id != backup || root.snapshot != snapshot {
        return Err(malformed(format!(
            "it is the root of {backup_id}@{}, not of {backup}@{snapshot}",
            root.snapshot
        )));
    }
    let scheme = scheme_from_proto(root.scheme)
        .ok_or_else(|| malformed(format!("unknown scheme {}", root.scheme)))?;
    bitdust_ecc::Code::new(scheme, root.suppliers as usize)
        .map_err(|e| malformed(e.to_string()))?;
    if !root.pack_ranges.len().is_multiple_of(2) {
        return Err(malformed("an odd number of pack range bounds".into()));
    }
    Ok(Root {
        root,
        backup_id,
        scheme,
    })
}

/// The protobuf value of `scheme`.
pub fn scheme_value(scheme: Scheme) -> i32 {
    scheme_to_proto(scheme) as i32
}

/// What a snapshot's sealed metadata list is bound to.
pub fn meta_aad(customer: &NodeId, backup: BackupId, snapshot: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(19 + 32 + 16 + 8);
    aad.extend_from_slice(b"bitdust snapshot v1");
    aad.extend_from_slice(customer.as_bytes());
    aad.extend_from_slice(&backup.0);
    aad.extend_from_slice(&snapshot.to_le_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_verifies_only_as_itself() {
        let id = Identity::from_secret(&[1; 32]);
        let backup = BackupId([2; 16]);
        let root = SnapshotRoot {
            customer: id.node_id().as_bytes().to_vec(),
            backup_id: backup.0.to_vec(),
            snapshot: 4,
            scheme: scheme_value(Scheme::Xor),
            suppliers: 7,
            pack_ranges: vec![0, 3, 9, 1],
            ..Default::default()
        };
        let bytes = sign_root(&id, &root);
        let r = verify_root(&bytes, &id.node_id(), backup, 4).unwrap();
        assert_eq!(r.root, root);
        assert!(verify_root(&bytes, &id.node_id(), backup, 5).is_err());
        assert!(verify_root(&bytes, &id.node_id(), BackupId([3; 16]), 4).is_err());
        let other = Identity::from_secret(&[9; 32]);
        assert!(verify_root(&bytes, &other.node_id(), backup, 4).is_err());
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(verify_root(&bad, &id.node_id(), backup, 4).is_err());
        let mut v2 = bytes;
        v2[4] = 2;
        assert!(matches!(
            verify_root(&v2, &id.node_id(), backup, 4),
            Err(ManifestError::BadMagic)
        ));
    }
}
