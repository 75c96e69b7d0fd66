//! Node identities: ed25519 key pairs whose public key is the node id.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// Length in bytes of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// An ed25519 signature.
pub type Signature = [u8; SIGNATURE_LEN];

/// The id of a node: its ed25519 public key.
///
/// Text form: the 32 bytes in lowercase RFC 4648 base32 without padding
/// (52 characters). That form is used in logs, the CLI and config files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

/// A signature did not verify.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The bytes are not an ed25519 public key.
    #[error("{0} is not a valid ed25519 public key")]
    BadKey(String),
    /// The signature does not match the message and key.
    #[error("the signature by {0} does not verify: the data was altered or signed by another key")]
    Mismatch(NodeId),
}

impl NodeId {
    /// The node id of the given public key bytes (not checked to be a curve point).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        NodeId(bytes)
    }

    /// The raw public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verifies `signature` over `context` and `message` (see [`Identity::sign`]).
    pub fn verify(
        &self,
        context: &[u8],
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0)
            .map_err(|_| SignatureError::BadKey(self.to_string()))?;
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(&signed_bytes(context, message), &sig)
            .map_err(|_| SignatureError::Mismatch(*self))
    }
}

impl TryFrom<&[u8]> for NodeId {
    type Error = NodeIdParseError;

    fn try_from(value: &[u8]) -> Result<Self, Self::Error> {
        let bytes: [u8; 32] = value
            .try_into()
            .map_err(|_| NodeIdParseError(format!("{} bytes", value.len())))?;
        Ok(NodeId(bytes))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32_NOPAD.encode(&self.0).to_ascii_lowercase())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// A string that is not a node id.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a node id (52 base32 characters)")]
pub struct NodeIdParseError(String);

impl FromStr for NodeId {
    type Err = NodeIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = BASE32_NOPAD
            .decode(s.to_ascii_uppercase().as_bytes())
            .map_err(|_| NodeIdParseError(s.to_owned()))?;
        NodeId::try_from(bytes.as_slice()).map_err(|_| NodeIdParseError(s.to_owned()))
    }
}

/// A node's secret ed25519 key.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// A new random identity.
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        // The OS random source failing leaves no safe way to make keys.
        getrandom::fill(secret.as_mut()).expect("the operating system's random source failed");
        Self::from_secret(&secret)
    }

    /// The identity with the given 32 secret bytes.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Identity {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The 32 secret bytes.
    pub fn secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The key as PKCS#8 v1 DER (for the TLS certificate of the node).
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        // Encoding a valid in-memory key cannot fail.
        Zeroizing::new(
            self.key
                .to_pkcs8_der()
                .expect("an ed25519 key always encodes as PKCS#8")
                .as_bytes()
                .to_vec(),
        )
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    /// Signs `message` under a `context` string that says what is being signed,
    /// so a signature made for one purpose never verifies for another.
    pub fn sign(&self, context: &[u8], message: &[u8]) -> Signature {
        self.key.sign(&signed_bytes(context, message)).to_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.node_id())
    }
}

/// `context || 0x00 || message`: contexts never contain NUL, so no two
/// (context, message) pairs give the same bytes.
fn signed_bytes(context: &[u8], message: &[u8]) -> Vec<u8> {
    debug_assert!(!context.contains(&0));
    let mut v = Vec::with_capacity(context.len() + 1 + message.len());
    v.extend_from_slice(context);
    v.push(0);
    v.extend_from_slice(message);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_text_round_trips() {
        let id = Identity::from_secret(&[7; 32]).node_id();
        let text = id.to_string();
        assert_eq!(text.len(), 52);
        assert_eq!(text, text.to_ascii_lowercase());
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert!("not-a-node-id".parse::<NodeId>().is_err());
    }

    #[test]
    fn signatures_are_bound_to_context_and_message() {
        let me = Identity::from_secret(&[1; 32]);
        let sig = me.sign(b"ctx a", b"hello");
        me.node_id().verify(b"ctx a", b"hello", &sig).unwrap();
        assert!(me.node_id().verify(b"ctx b", b"hello", &sig).is_err());
        assert!(me.node_id().verify(b"ctx a", b"hellp", &sig).is_err());
        let other = Identity::from_secret(&[2; 32]);
        assert!(other.node_id().verify(b"ctx a", b"hello", &sig).is_err());
    }
}
