//! Signed records: what the DHT stores.

use bitdust_crypto::{Identity, NodeId, Signature};
use bitdust_proto::dht::v1 as pb;

use crate::key::Key;

/// Largest payload a node accepts.
pub const MAX_PAYLOAD: usize = 8 * 1024;
/// Longest kind name.
pub const MAX_KIND: usize = 32;
/// Farthest expiry a node accepts, from now.
pub const MAX_LIFETIME_SECS: u64 = 90 * 24 * 3600;

const CONTEXT: &[u8] = b"bitdust dht record v1";

/// A record signed by its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Who signed it.
    pub owner: NodeId,
    /// What the payload is (`supplier`, `suppliers`, ...).
    pub kind: String,
    /// Newer records have higher numbers.
    pub sequence: u64,
    /// Unix seconds after which it is dropped.
    pub expires: u64,
    /// The owner's data.
    pub payload: Vec<u8>,
    /// ed25519 by `owner` over the fields above.
    pub signature: Signature,
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A field is missing, too long or malformed.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// The signature does not verify for the owner.
    #[error("the record's signature does not verify for owner {0}")]
    BadSignature(NodeId),
    /// Already expired, or expiring too far ahead.
    #[error("the record's expiry is not acceptable: {0}")]
    Expiry(String),
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The key a record of `kind` by `owner` lives at.
pub fn record_key(owner: &NodeId, kind: &str) -> Key {
    let mut h = blake3::Hasher::new_derive_key("bitdust dht record key v1");
    h.update(kind.as_bytes());
    h.update(&[0]);
    h.update(owner.as_bytes());
    Key(*h.finalize().as_bytes())
}

impl Record {
    /// A record of `kind` signed by `identity`, valid for `lifetime_secs`.
    pub fn sign(
        identity: &Identity,
        kind: &str,
        sequence: u64,
        lifetime_secs: u64,
        payload: Vec<u8>,
    ) -> Record {
        let mut r = Record {
            owner: identity.node_id(),
            kind: kind.to_owned(),
            sequence,
            expires: now() + lifetime_secs,
            payload,
            signature: [0; 64],
        };
        r.signature = identity.sign(CONTEXT, &r.signed_bytes());
        r
    }

    /// Where this record lives.
    pub fn key(&self) -> Key {
        record_key(&self.owner, &self.kind)
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + self.kind.len() + self.payload.len());
        v.extend_from_slice(self.owner.as_bytes());
        v.extend_from_slice(&(self.kind.len() as u32).to_be_bytes());
        v.extend_from_slice(self.kind.as_bytes());
        v.extend_from_slice(&self.sequence.to_be_bytes());
        v.extend_from_slice(&self.expires.to_be_bytes());
        v.extend_from_slice(&self.payload);
        v
    }

    /// Checks sizes, expiry (at `now`) and the signature.
    pub fn verify(&self, now: u64) -> Result<(), RecordError> {
        if self.kind.is_empty() || self.kind.len() > MAX_KIND {
            return Err(RecordError::Malformed(format!(
                "kind must be 1 to {MAX_KIND} bytes"
            )));
        }
        if self.payload.len() > MAX_PAYLOAD {
            return Err(RecordError::Malformed(format!(
                "payload of {} bytes is over the {MAX_PAYLOAD}-byte limit",
                self.payload.len()
            )));
        }
        if self.expires <= now {
            return Err(RecordError::Expiry("it has expired".into()));
        }
        if self.expires > now + MAX_LIFETIME_SECS {
            return Err(RecordError::Expiry(format!(
                "it expires more than {MAX_LIFETIME_SECS} s from now"
            )));
        }
        self.owner
            .verify(CONTEXT, &self.signed_bytes(), &self.signature)
            .map_err(|_| RecordError::BadSignature(self.owner))
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::Record {
        pb::Record {
            owner: self.owner.as_bytes().to_vec(),
            kind: self.kind.clone(),
            sequence: self.sequence,
            expires: self.expires,
            payload: self.payload.clone(),
            signature: self.signature.to_vec(),
        }
    }

    /// From the wire form; the signature is not checked here.
    pub fn from_proto(p: pb::Record) -> Result<Record, RecordError> {
        let owner = NodeId::try_from(p.owner.as_slice())
            .map_err(|_| RecordError::Malformed("owner is not a 32-byte node id".into()))?;
        let signature: Signature = p
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| RecordError::Malformed("signature is not 64 bytes".into()))?;
        Ok(Record {
            owner,
            kind: p.kind,
            sequence: p.sequence,
            expires: p.expires,
            payload: p.payload,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_verify_and_any_change_breaks_them() {
        let id = Identity::generate();
        let r = Record::sign(&id, "supplier", 3, 3600, b"offer".to_vec());
        r.verify(now()).unwrap();
        let back = Record::from_proto(r.to_proto()).unwrap();
        assert_eq!(back, r);
        back.verify(now()).unwrap();
        let mut bad = r.clone();
        bad.sequence = 4;
        assert!(matches!(
            bad.verify(now()),
            Err(RecordError::BadSignature(_))
        ));
        let mut bad = r.clone();
        bad.payload.push(0);
        assert!(bad.verify(now()).is_err());
        let mut bad = r.clone();
        bad.owner = Identity::generate().node_id();
        assert!(bad.verify(now()).is_err());
        assert!(matches!(r.verify(r.expires), Err(RecordError::Expiry(_))));
        let long = Record::sign(&id, "x", 1, MAX_LIFETIME_SECS + 100, vec![]);
        assert!(matches!(long.verify(now()), Err(RecordError::Expiry(_))));
        let big = Record::sign(&id, "x", 1, 60, vec![0; MAX_PAYLOAD + 1]);
        assert!(matches!(big.verify(now()), Err(RecordError::Malformed(_))));
        assert_ne!(r.key(), record_key(&r.owner, "suppliers"));
    }
}
